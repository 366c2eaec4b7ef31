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

import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' harness and bounded request loop

from layerkit import __version__  # noqa: E402
from layerkit.cluster import logs, swarm  # noqa: E402
from layerkit.engine.client import DockerClient, connect  # noqa: E402
from layerkit.engine.swarm import list_nodes, service_tasks, set_availability  # noqa: E402
from layerkit.errors import EngineError  # noqa: E402
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


def _wait_nodes_ready(client: DockerClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(n.state == "ready" for n in list_nodes(client)):
                return
        except EngineError:  # a new leader is being elected
            pass
        time.sleep(1)


def _taken_over(client: DockerClient, name: str, since: float) -> float | None:
    """When (wall clock) a keepalived entered MASTER after `since`, by the engines' log
    timestamps (the same kernel clock as this process)."""
    found = []
    deadline = time.monotonic() + 60
    while True:  # the swarm elects a new leader when the killed node led it
        try:
            lines = logs.collect(client, name, role="vip", since=int(since) - 1)
            break
        except EngineError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    for line in lines:
        if "Entering MASTER STATE" in line.text:
            whole, _, frac = line.timestamp.rstrip("Z").partition(".")
            when = dt.datetime.fromisoformat(f"{whole}.{frac[:6].ljust(6, '0')}+00:00")
            if when.timestamp() >= since:
                found.append(when.timestamp())
    return min(found, default=None)


def _kill_holder(h: Harness, client: DockerClient, name: str, url: str
                 ) -> tuple[str, DockerClient]:
    """Kill the node whose keepalived holds the address; the row, and a surviving manager."""
    status = swarm.status(client, name)
    holder = h.node_of(status.vip_node or "")
    survivor = next(n for n in h.nodes if n != holder)
    other = connect({"DOCKER_HOST": survivor.docker_host})
    with Load(url, h.subnet, max_seconds=30) as load:
        time.sleep(2)
        killed, killed_wall = time.monotonic(), time.time()
        docker("kill", holder.name)
        time.sleep(10)
    taken = _taken_over(other, name, killed_wall)
    moved = killed + (taken - killed_wall) if taken is not None else float("inf")
    silence = load.longest_silence(killed, killed + 10)
    after = load.failed_sent_after(moved)
    during = load.failed_sent_after(killed) - after
    for (start, end, _ok), (_, why) in zip([x for x in load.spans if not x[2]], load.failures,
                                           strict=True):
        print(f"bench swarm: failed, sent {start - killed:+.2f} s, ended {end - killed:+.2f} s "
              f"after the kill (moved at {moved - killed:+.2f} s): {why}", file=sys.stderr)
    docker("start", holder.name)
    _wait_nodes_ready(other)
    row = (f"| node holding the floating address killed | another node took the address "
           f"{moved - killed:.2f} s after the kill; longest time without an answer "
           f"{silence:.2f} s; failed: {during} sent before the move, {after} after "
           f"({load.ok + len(load.failures)} requests) | ≤ 2 s, 0 failed after the move | "
           f"{_verdict(silence <= 2 and not after)} |")
    return row, other


def _kill_web_node(h: Harness, client: DockerClient, name: str, url: str
                   ) -> tuple[str, DockerClient]:
    spare = next(n for n in list_nodes(client) if n.id not in _lb_nodes(client, name))
    gone = _addresses_on(client, name, spare.id)
    node = h.node_of(spare.hostname)
    other = connect({"DOCKER_HOST": next(n for n in h.nodes if n != node).docker_host})
    with Load(url, h.subnet, max_seconds=30) as load:
        time.sleep(2)
        killed = time.monotonic()
        docker("kill", node.name)
        time.sleep(12)
    late = [t - killed for t, b in load.seen if b in gone and t > killed]
    last = max(late) if late else 0.0
    docker("start", node.name)
    _wait_nodes_ready(other)
    return (f"| web-app node killed ({len(gone)} web apps on it) | last request to them "
            f"{last:.2f} s after the kill; {len(load.failures)} of "
            f"{load.ok + len(load.failures)} requests failed | ≤ 3 s, only those in flight | "
            f"{_verdict(last <= 3 and len(load.failures) <= len(gone))} |"), other


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
        row, client = _kill_web_node(h, client, name, url)
        rows.append(row)
        swarm.wait_ready(client, name, 6, timeout=90)
        row, client = _kill_holder(h, client, name, url)
        rows.append(row)
    load = os.getloadavg()
    return ("| measure | value | target | |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nThe three-engine swarm itself (nodes started, images loaded, joined): "
            f"{harness_s:.0f} s. Load average at the end (1/5/15 min; 2 cores, six engines): "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.\n")
