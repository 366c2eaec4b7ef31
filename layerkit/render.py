"""Renderers: results (frozen dataclasses) into tables and JSON. No numbers are computed here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerkit.build.build import BuiltImage
    from layerkit.cluster.cluster import DownResult, ScaleResult, UpResult
    from layerkit.cluster.view import ClusterStatus
    from layerkit.doctor import DoctorReport

SCHEMA_PREFIX = "layerkit"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - loop always returns


def tabulate(rows: Any, **options: Any) -> str:
    """`tabulate.tabulate`, imported on first use: it loads importlib.metadata, about 50 ms
    that JSON output does not need."""
    from tabulate import tabulate as render

    return render(rows, **options)


def dump_json(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"schema": f"{SCHEMA_PREFIX}/{kind}/v1", **body}, indent=2, sort_keys=False)


def build_table(built: Sequence[BuiltImage]) -> str:
    rows = [(b.ref, human_bytes(b.size), b.layers, human_bytes(b.shared_bytes),
             f"{b.cached_steps}/{b.steps}", f"{b.seconds:.1f} s") for b in built]
    return tabulate(rows, headers=("image", "size", "layers", "shared with base", "cached steps",
                                   "build time"), colalign=("left", "right", "right", "right",
                                                            "right", "right"))


def build_json(built: Sequence[BuiltImage]) -> str:
    return dump_json("build", {"images": [
        {"name": b.name, "ref": b.ref, "id": b.image_id, "size_bytes": b.size,
         "layers": b.layers, "shared_bytes": b.shared_bytes, "seconds": round(b.seconds, 3),
         "steps": b.steps, "cached_steps": b.cached_steps} for b in built]})


def doctor_table(report: DoctorReport) -> str:
    marks = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
    rows = [(c.name, marks[c.status], c.detail) for c in report.checks]
    return tabulate(rows, headers=("check", "status", "detail"))


def doctor_json(report: DoctorReport) -> str:
    return dump_json("doctor", {"ok": report.ok, "fixed": list(report.fixed), "checks": [
        {"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]})


def cluster_status_table(status: ClusterStatus) -> str:
    ep = status.endpoints
    head = [f"cluster {status.name}: {ep.url or 'no published URL'}"
            + (f"  (stats {ep.stats_url}, user admin)" if ep.stats_url else "")]
    containers = tabulate([(c.name, c.role, c.state, c.address, c.restarts)
                           for c in status.containers],
                          headers=("container", "role", "state", "address", "restarts"))
    members = tabulate([(m.name, m.address, m.status, m.role) for m in status.members],
                       headers=("serf member", "address", "status", "role"))
    servers = tabulate([(s.name, s.address, s.status, s.check, s.sessions)
                        for s in status.servers],
                       headers=("haproxy backend", "address", "status", "check", "sessions"))
    if not status.haproxy:
        servers += "\n(HAProxy did not answer: is the load balancer running?)"
    return "\n\n".join([*head, containers, members, servers])


def cluster_status_json(status: ClusterStatus) -> str:
    return dump_json("status", {
        "cluster": status.name, "url": status.endpoints.url,
        "stats_url": status.endpoints.stats_url, "haproxy": status.haproxy,
        "containers": [{"name": c.name, "role": c.role, "state": c.state,
                        "address": c.address, "restarts": c.restarts}
                       for c in status.containers],
        "members": [{"name": m.name, "address": m.address, "status": m.status,
                     "role": m.role} for m in status.members],
        "backends": [{"name": s.name, "address": s.address, "status": s.status,
                      "check": s.check, "sessions": s.sessions} for s in status.servers]})


def up_text(result: UpResult) -> str:
    ready = f"ready in {result.seconds:.1f} s" if result.ready else "not ready yet"
    lines = [f"cluster {result.name}: {result.web} web apps behind {result.endpoints.url} "
             f"({ready})"]
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
    return (f"cluster {result.name}: removed {len(result.containers)} containers, "
            f"{len(result.networks)} networks, {len(result.volumes)} volumes")


def down_json(result: DownResult) -> str:
    return dump_json("down", {"cluster": result.name, "containers": list(result.containers),
                              "networks": list(result.networks),
                              "volumes": list(result.volumes)})
