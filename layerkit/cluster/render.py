"""Cluster results (up, scale, down, status) as text, tables and JSON."""

from __future__ import annotations

from layerkit.cluster.cluster import DownResult, ScaleResult, UpResult
from layerkit.cluster.view import ClusterStatus, LbView
from layerkit.render import dump_json, plural, tabulate


def cluster_status_table(status: ClusterStatus) -> str:
    ep = status.endpoints
    head = [f"cluster {status.name}: {ep.url or 'no published URL'}"
            + (f"  (stats {ep.stats_url}, user admin)" if ep.stats_url else "")
            + (f"\nweb apps: {status.web_image}, port {status.web_port}, health check GET "
               f"{status.health}" if status.web_image else "")]
    containers = tabulate([(c.name, c.role, c.state, c.address, c.restarts)
                           for c in status.containers],
                          headers=("container", "role", "state", "address", "restarts"))
    return "\n\n".join([*head, containers, lb_view_table(_view(status))])


def _view(status: ClusterStatus) -> LbView:
    return LbView(status.members, status.servers, status.haproxy)


def lb_view_table(view: LbView) -> str:
    """A load balancer's Serf members and HAProxy servers (on one engine and on Swarm)."""
    serf = tabulate([(m.name, m.address, m.status, m.role) for m in view.members],
                    headers=("serf member", "address", "status", "role"))
    backends = tabulate([(s.name, s.address, s.status, s.check, s.sessions)
                         for s in view.servers],
                        # HAProxy's stot: connections the server took in total (one per request
                        # here), not the clients' sessions that the session cookie keeps
                        headers=("haproxy backend", "address", "status", "check", "connections"))
    if not view.haproxy:
        backends += "\n(HAProxy did not answer: is the load balancer running?)"
    return f"{serf}\n\n{backends}"


def cluster_status_json(status: ClusterStatus) -> str:
    return dump_json("status", {
        "cluster": status.name, "url": status.endpoints.url,
        "stats_url": status.endpoints.stats_url, "haproxy": status.haproxy,
        "web": {"image": status.web_image, "port": status.web_port, "health": status.health},
        "containers": [{"name": c.name, "role": c.role, "state": c.state,
                        "address": c.address, "restarts": c.restarts}
                       for c in status.containers],
        **lb_view_json(_view(status))})


def lb_view_json(view: LbView) -> dict[str, object]:
    return {"haproxy": view.haproxy,
            "members": [{"name": m.name, "address": m.address, "status": m.status,
                         "role": m.role} for m in view.members],
            "backends": [{"name": s.name, "address": s.address, "status": s.status,
                          "check": s.check, "sessions": s.sessions} for s in view.servers]}


def up_text(result: UpResult) -> str:
    ready = f"ready in {result.seconds:.1f} s" if result.ready else "not ready yet"
    lines = [f"cluster {result.name}: {plural(result.web, 'web app')} behind "
             f"{result.endpoints.url} ({ready})"]
    if result.endpoints.stats_url:
        lines.append(f"stats: {result.endpoints.stats_url} (user admin; password: "
                     f"`layerkit status --name {result.name} --stats-password`)")
    return "\n".join(lines)


def up_json(result: UpResult) -> str:
    return dump_json("up", {"cluster": result.name, "url": result.endpoints.url,
                            "stats_url": result.endpoints.stats_url, "web": result.web,
                            "ready": result.ready, "seconds": round(result.seconds, 3)})


def scale_text(result: ScaleResult) -> str:
    ready = f"ready in {result.seconds:.1f} s" if result.ready else "not ready yet"
    return (f"cluster {result.name}: {result.before} -> {result.after} web apps "
            f"(started {len(result.started)}, removed {len(result.removed)}; {ready})")


def scale_json(result: ScaleResult) -> str:
    return dump_json("scale", {"cluster": result.name, "before": result.before,
                               "after": result.after, "started": list(result.started),
                               "removed": list(result.removed), "ready": result.ready,
                               "seconds": round(result.seconds, 3)})


def down_text(result: DownResult) -> str:
    if not (result.containers or result.networks or result.volumes):
        return f"cluster {result.name}: nothing to remove"
    return (f"cluster {result.name}: removed {plural(len(result.containers), 'container')}, "
            f"{plural(len(result.networks), 'network')}, {plural(len(result.volumes), 'volume')}")


def down_json(result: DownResult) -> str:
    return dump_json("down", {"cluster": result.name, "containers": list(result.containers),
                              "networks": list(result.networks),
                              "volumes": list(result.volumes)})
