"""Swarm targets, on a three-node swarm of engines in containers (tests/swarm/harness.py):

- `up --swarm --scale 12` on three nodes: all serving within 30 s;
- the node holding the floating address killed: the address serves again within 2 s, and no
  request fails once it has moved;
- a web-app node killed: no request reaches its tasks after 3 s; failures limited to those in
  flight on that node;
- drain of a node, and scale 6 -> 12 -> 3, under load: 0 failed requests.

Requests go only to the floating address, on the harness's own network, in bounded loops.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' harness and bounded request loop

from layerkit import __version__  # noqa: E402
from layerkit.cluster import swarm  # noqa: E402
from layerkit.engine.client import DockerClient, connect  # noqa: E402
from layerkit.engine.swarm import list_nodes, service_tasks, set_availability  # noqa: E402
from tests.swarm.harness import Harness, docker, swarm_harness  # noqa: E402
from tests.swarm.traffic import Load  # noqa: E402


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def _addresses_on(client: DockerClient, name: str, node_id: str) -> set[str]:
    web = swarm.find_services(client, name)["web"]
    return {a for t in service_tasks(client, web.id)
            if t.node_id == node_id and t.state == "running" for a in t.addresses}


def _lb_nodes(client: DockerClient, name: str) -> set[str]:
    lb = swarm.find_services(client, name)["lb"]
    return {t.node_id for t in service_tasks(client, lb.id) if t.state == "running"}


def _first_ok_after(load: Load, moment: float) -> float | None:
    seen = [t for t, _ in load.seen if t > moment]
    return min(seen) if seen else None


def _wait_nodes_ready(client: DockerClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(n.state == "ready"
                                                  for n in list_nodes(client)):
        time.sleep(1)


def _kill_holder(h: Harness, client: DockerClient, name: str, url: str
                 ) -> tuple[str, DockerClient]:
    """Kill the node whose keepalived holds the address; the row, and a surviving manager."""
    status = swarm.status(client, name)
    holder = h.node_of(status.vip_node or "")
    survivor = next(n for n in h.nodes if n != holder)
    other = connect({"DOCKER_HOST": survivor.docker_host})
    with Load(url, h.subnet, max_seconds=30) as load:
        time.sleep(2)
        killed = time.monotonic()
        docker("kill", holder.name)
        time.sleep(10)
    back = _first_ok_after(load, killed)
    gap = (back - killed) if back is not None else float("inf")
    after = [f for t, f in load.failures if back is not None and t > back]
    docker("start", holder.name)
    _wait_nodes_ready(other)
    row = (f"| node holding the floating address killed | serving again after {gap:.2f} s; "
           f"{len(after)} failed after that, {len(load.failures)} of "
           f"{load.ok + len(load.failures)} in all | ≤ 2 s, 0 failed after the move | "
           f"{_verdict(gap <= 2 and not after)} |")
    return row, other


def _kill_web_node(h: Harness, client: DockerClient, name: str, url: str) -> str:
    spare = next(n for n in list_nodes(client) if n.id not in _lb_nodes(client, name))
    gone = _addresses_on(client, name, spare.id)
    node = h.node_of(spare.hostname)
    with Load(url, h.subnet, max_seconds=30) as load:
        time.sleep(2)
        killed = time.monotonic()
        docker("kill", node.name)
        time.sleep(12)
    late = [t - killed for t, b in load.seen if b in gone and t > killed]
    last = max(late) if late else 0.0
    docker("start", node.name)
    _wait_nodes_ready(client)
    return (f"| web-app node killed ({len(gone)} web apps on it) | last request to them "
            f"{last:.2f} s after the kill; {len(load.failures)} of "
            f"{load.ok + len(load.failures)} requests failed | ≤ 3 s, only those in flight | "
            f"{_verdict(last <= 3 and len(load.failures) <= len(gone))} |")


def _drain_and_scale(h: Harness, client: DockerClient, name: str, url: str) -> str:
    spare = next(n for n in list_nodes(client) if n.id not in _lb_nodes(client, name))
    with Load(url, h.subnet, max_seconds=240) as load:
        set_availability(client, spare.id, "drain")
        swarm.wait_ready(client, name, 6, timeout=60)
        set_availability(client, spare.id, "active")
        up12 = swarm.scale(client, name, 12, wait=90)
        down3 = swarm.scale(client, name, 3, wait=90)
    total = load.ok + len(load.failures)
    return (f"| drain of a node, then scale 6 → 12 → 3, under load | {len(load.failures)} of "
            f"{total} requests failed; 12 ready in {up12.seconds:.1f} s, 3 in "
            f"{down3.seconds:.1f} s | 0 failed | {_verdict(not load.failures)} |")


def run(quick: bool) -> str:
    del quick  # one size: the targets name it

    images = [f"layerkit/{n}:{__version__}" for n in ("haproxy", "webapp", "keepalived")]
    rows: list[str] = []
    started = time.monotonic()
    with swarm_harness(images, base=f"layerkit/base:{__version__}") as h:
        harness_s = time.monotonic() - started
        client = connect({"DOCKER_HOST": h.manager.docker_host})
        name = "bench"
        vip = f"{h.free_address()}/{h.subnet.prefixlen}"
        up = swarm.up(client, swarm.SwarmOptions(name=name, port=8080, lb=2, vip=vip), 12,
                      wait=90)
        rows.append(f"| `up --swarm --scale 12 --lb 2 --vip` on three nodes | "
                    f"{up.seconds:.1f} s ({'all serving' if up.ready else 'NOT all serving'})"
                    f" | ≤ 30 s | {_verdict(up.ready and up.seconds <= 30)} |")
        url = up.urls[0]
        swarm.scale(client, name, 6, wait=90)
        rows.append(_drain_and_scale(h, client, name, url))
        swarm.scale(client, name, 6, wait=90)
        rows.append(_kill_web_node(h, client, name, url))
        swarm.wait_ready(client, name, 6, timeout=90)
        row, client = _kill_holder(h, client, name, url)
        rows.append(row)
    load = os.getloadavg()
    return ("| measure | value | target | |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nThe three-engine swarm itself (nodes started, images loaded, joined): "
            f"{harness_s:.0f} s. Load average at the end (1/5/15 min; 2 cores, six engines): "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.\n")
