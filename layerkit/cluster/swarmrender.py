"""Swarm cluster results (up, scale, down, status) as text, tables and JSON."""

from __future__ import annotations

from layerkit.cluster.logs import LogLine
from layerkit.cluster.registry import Pushed
from layerkit.cluster.render import lb_view_json, lb_view_table
from layerkit.cluster.swarm import SwarmDownResult, SwarmScaleResult, SwarmUpResult
from layerkit.cluster.swarmview import BalancerView, SwarmStatus
from layerkit.render import dump_json, plural, tabulate


def _ready(ready: bool, seconds: float) -> str:
    return f"ready in {seconds:.1f} s" if ready else "not ready yet"


def up_text(result: SwarmUpResult) -> str:
    where = ", ".join(result.urls) or "no load balancer serves yet"
    return (f"cluster {result.name} (swarm): {plural(result.web, 'web app')}, "
            f"{plural(result.lb, 'load balancer')} "
            f"behind {where} ({_ready(result.ready, result.seconds)})")


def up_json(result: SwarmUpResult) -> str:
    return dump_json("up", {"cluster": result.name, "mode": "swarm", "urls": list(result.urls),
                            "web": result.web, "lb": result.lb, "vip": result.vip,
                            "ready": result.ready, "seconds": round(result.seconds, 3)})


def scale_text(result: SwarmScaleResult) -> str:
    return (f"cluster {result.name} (swarm): {result.before} -> {result.after} web apps "
            f"({_ready(result.ready, result.seconds)})")


def scale_json(result: SwarmScaleResult) -> str:
    return dump_json("scale", {"cluster": result.name, "mode": "swarm", "before": result.before,
                               "after": result.after, "ready": result.ready,
                               "seconds": round(result.seconds, 3)})


def down_text(result: SwarmDownResult) -> str:
    if not (result.services or result.secrets or result.networks):
        return f"cluster {result.name}: nothing to remove in the swarm"
    return (f"cluster {result.name} (swarm): removed {len(result.services)} services, "
            f"{len(result.secrets)} secrets, {len(result.networks)} networks")


def down_json(result: SwarmDownResult) -> str:
    return dump_json("down", {"cluster": result.name, "mode": "swarm",
                              "services": list(result.services), "secrets": list(result.secrets),
                              "networks": list(result.networks)})


def status_table(status: SwarmStatus) -> str:
    head = f"cluster {status.name} (swarm): {', '.join(status.urls) or 'no URL yet'}"
    if status.vip:
        head += f"\nfloating address {status.vip}: held by {status.vip_node or 'no node'}"
    tasks = tabulate([(t.name, t.role, t.node, t.state, t.address, t.message)
                      for t in status.tasks],
                     headers=("task", "role", "node", "state", "address", "message"))
    return "\n\n".join([head, tasks, *(_balancer_text(b) for b in status.balancers)])


def _balancer_text(balancer: BalancerView) -> str:
    where = f"load balancer {balancer.task} on {balancer.node}"
    if not balancer.here:
        return (f"{where}: runs on another node; Serf members and HAProxy backends are shown "
                "only for the load balancers on this engine's node")
    if balancer.view is None:
        return f"{where}: no view (not running, or it did not answer)"
    return f"{where}:\n\n{lb_view_table(balancer.view)}"


def status_json(status: SwarmStatus) -> str:
    return dump_json("status", {
        "cluster": status.name, "mode": "swarm", "urls": list(status.urls), "vip": status.vip,
        "vip_node": status.vip_node, "replicas": dict(status.replicas),
        "tasks": [{"name": t.name, "role": t.role, "node": t.node, "state": t.state,
                   "desired": t.desired, "address": t.address, "message": t.message}
                  for t in status.tasks],
        "load_balancers": [{"task": b.task, "node": b.node, "here": b.here,
                            **(lb_view_json(b.view) if b.view else {})}
                           for b in status.balancers]})


def log_line(line: LogLine) -> str:
    return f"{line.timestamp} {line.source} | {line.text}"


def logs_json(lines: tuple[LogLine, ...]) -> str:
    return dump_json("logs", {"lines": [{"timestamp": x.timestamp, "source": x.source,
                                         "role": x.role, "text": x.text} for x in lines]})


def push_text(pushed: tuple[Pushed, ...]) -> str:
    return tabulate([(p.local, p.pinned) for p in pushed], headers=("image", "pushed as"))


def push_json(pushed: tuple[Pushed, ...]) -> str:
    return dump_json("push", {"images": [{"image": p.local, "remote": p.remote,
                                          "digest": p.digest} for p in pushed]})
