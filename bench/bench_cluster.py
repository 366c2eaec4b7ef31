"""Cluster targets of the dynamic-cluster issue, measured on real containers.

- `docker run` of a new web app to its first served request: median ≤ 1.5 s, p95 ≤ 2.5 s;
- graceful leave (`docker stop`) to removal from HAProxy: ≤ 1.5 s, zero failed requests;
- `docker kill` to HAProxy no longer sending it traffic: ≤ 3 s, zero failed requests;
- scale 2 → 10 → 2 under a steady request loop: zero failed requests, ≤ 3 reloads for 10 joins;
- `up --scale 10` until all ten serve: ≤ 20 s; `--scale 30` works.

Request loops go to 127.0.0.1 only and are bounded in count and time. Times of HAProxy changes
come from the load balancer's event log (same kernel clock as the host).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from layerkit.cluster import cluster, launch
from layerkit.cluster import view as clusterview
from layerkit.engine.client import DockerClient, connect
from layerkit.engine.containers import (
    ContainerInfo,
    get_file,
    inspect_container,
    kill_container,
    labelled_containers,
    remove_container,
    stop_container,
)

ROOT = Path(__file__).resolve().parent.parent
EVENT_LOG = "/var/log/layerkit/events.log"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


@contextmanager
def _cluster(client: DockerClient, name: str, n: int) -> Iterator[cluster.UpResult]:
    try:
        yield cluster.up(client, cluster.ClusterOptions(name=name, port=0), n)
    finally:
        cluster.down(client, name)


def _lb(client: DockerClient, name: str) -> ContainerInfo:
    return labelled_containers(client, cluster.labels(name, "lb"))[0]


def _outcomes(client: DockerClient, name: str) -> list[dict[str, object]]:
    text = get_file(client, _lb(client, name).id, EVENT_LOG).decode()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == "outcome"]


def _reloads_since(client: DockerClient, name: str, since: float) -> list[dict[str, object]]:
    return [r for r in _outcomes(client, name)
            if r.get("action") == "reload" and float(str(r["ts"])) >= since]


def _ip(client: DockerClient, container: ContainerInfo, name: str) -> str:
    return inspect_container(client, container.id).addresses[cluster.network_name(name)]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _join_and_leave(client: DockerClient, name: str, url: str, samples: int,
                    helpers: Any) -> tuple[list[float], list[float], list[float], int, int]:
    """Start one web app at a time: run → first served; then stop → out of HAProxy."""
    joins: list[float] = []
    after_start: list[float] = []  # the part after the engine's create + start returned
    leaves: list[float] = []
    opts = cluster.ClusterOptions(name=name)
    keyring = get_file(client, _lb(client, name).id, cluster.KEYRING_PATH)
    with helpers.LoadLoop(url, interval=0.005, max_seconds=samples * 15 + 30,
                          max_requests=200_000) as loop:
        for _ in range(samples):
            started = time.monotonic()
            container = launch.launch(client, launch.web_spec(opts),
                                        {cluster.KEYRING_PATH: (keyring, 0o600)})
            launched = time.monotonic()
            ip = _ip(client, container, name)
            # an address can come back from an earlier sample: count only answers after the run
            def served(ip: str = ip, since: float = started) -> list[float]:
                return [t for t, b in loop.seen if b == ip and t >= since]

            if helpers.wait_until(lambda: bool(served()), timeout=15, interval=0.02):
                joins.append(min(served()) - started)
                after_start.append(min(served()) - launched)
            else:
                joins.append(float("inf"))
            node = container.hostname
            stop_at = time.time()
            stop_container(client, container.id)
            leaves.append(_removed_after(client, name, node, stop_at))
            remove_container(client, container.id)
    return joins, leaves, after_start, loop.total, len(loop.failures)


def _changes_since(client: DockerClient, name: str, since: float) -> list[dict[str, object]]:
    """Outcomes that changed HAProxy's servers (live or by a reload) since `since`."""
    return [r for r in _outcomes(client, name)
            if r.get("action") in ("runtime", "reload") and float(str(r["ts"])) >= since]


def _removed_after(client: DockerClient, name: str, hostname: str, since: float) -> float:
    """Seconds from `since` to the first change whose backends no longer hold `hostname`."""
    for _ in range(40):
        for record in _changes_since(client, name, since):
            backends = record.get("backends")
            names = [str(b) for b in backends] if isinstance(backends, list) else []
            if not any(b.startswith(f"{hostname}-") for b in names):
                return float(str(record["ts"])) - since
        time.sleep(0.25)
    return float("inf")


def _kills(client: DockerClient, name: str, url: str, samples: int,
           helpers: Any) -> tuple[list[float], int, int]:
    times: list[float] = []
    with helpers.LoadLoop(url, interval=0.01, max_seconds=samples * 20 + 30) as loop:
        for _ in range(samples):
            cluster.scale(client, name, 3)
            victim = next(c for c in labelled_containers(client, cluster.labels(name, "web"))
                          if c.status == "running")
            ip = _ip(client, victim, name)
            kill_container(client, victim.id)
            killed = time.monotonic()
            helpers.wait_until(lambda ip=ip: not _in_rotation(client, name, ip), timeout=15,
                               interval=0.05)
            times.append(time.monotonic() - killed)
        cluster.scale(client, name, 3)
    if loop.failures:
        print(f"bench cluster: kill loop failures: {loop.failures[:3]}", file=sys.stderr)
    return times, loop.total, len(loop.failures)


def _in_rotation(client: DockerClient, name: str, ip: str) -> bool:
    view = clusterview.lb_view(client, _lb(client, name))
    return view is None or any(s.address.startswith(f"{ip}:") and s.status.startswith("UP")
                               for s in view.servers)


def _scale_cycle(client: DockerClient, name: str, url: str, helpers: Any
                 ) -> tuple[int, int, int, float, float]:
    with helpers.LoadLoop(url, interval=0.01, max_seconds=120) as loop:
        up_at = time.time()
        grow = cluster.scale(client, name, 10)
        burst = len(_reloads_since(client, name, up_at))
        shrink = cluster.scale(client, name, 2)
    return loop.total, len(loop.failures), burst, grow.seconds, shrink.seconds


def _up_time(client: DockerClient, n: int) -> tuple[float, bool, int]:
    """Seconds until all `n` serve, and the reloads that burst of `n` joins cost."""
    name = f"bench-up{n}-{time.monotonic_ns() % 100000}"
    with _cluster(client, name, n) as result:
        return result.seconds, result.ready, len(_reloads_since(client, name, 0))


def run(quick: bool) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.engine import cluster_helpers as helpers  # noqa: PLC0415 - shared request loop

    client = connect()
    name = f"bench-{time.monotonic_ns() % 100000}"
    rows: list[str] = []
    with _cluster(client, name, 2) as result:
        url = str(result.endpoints.url)
        joins, leaves, after, total, failed = _join_and_leave(client, name, url,
                                                              4 if quick else 12, helpers)
        med, p95 = statistics.median(joins), _pct(joins, 0.95)
        ok = med <= 1.5 and p95 <= 2.5
        rows.append(f"| run → first served request ({len(joins)} web apps) | median {med:.2f} s, "
                    f"p95 {p95:.2f} s (after the engine's start returned: median "
                    f"{statistics.median(after):.2f} s) | ≤ 1.5 s / ≤ 2.5 s | {_verdict(ok)} |")
        worst = max(leaves)
        ok = worst <= 1.5 and not failed
        rows.append(f"| graceful leave → out of HAProxy ({len(leaves)}) | median "
                    f"{statistics.median(leaves):.2f} s, max {worst:.2f} s; {failed} of {total} "
                    f"requests failed | ≤ 1.5 s, 0 failed | {_verdict(ok)} |")
        kills, total, failed = _kills(client, name, url, 2 if quick else 5, helpers)
        rows.append(f"| `docker kill` → no more traffic ({len(kills)}) | max {max(kills):.2f} s; "
                    f"{failed} of {total} requests failed | ≤ 3 s, 0 failed | "
                    f"{_verdict(max(kills) <= 3 and not failed)} |")
        total, failed, burst, grow, shrink = _scale_cycle(client, name, url, helpers)
        rows.append(f"| scale 2 → 10 → 2 under load | {failed} of {total} requests failed; "
                    f"{burst} reloads for 8 joins; 10 ready in {grow:.1f} s, 2 in {shrink:.1f} s "
                    f"| 0 failed, ≤ 3 reloads | {_verdict(not failed and burst <= 3)} |")
    for n, budget in ((10, 20.0), *(() if quick else ((30, 60.0),))):
        seconds, ready, reloads = _up_time(client, n)
        target = "≤ 20 s" if n == 10 else "works"
        rows.append(f"| `up --scale {n}` until all serve | {seconds:.1f} s "
                    f"({'all serving' if ready else 'not all serving'}) | {target} | "
                    f"{_verdict(ready and seconds <= budget)} |")
        if n == 10:
            rows.append(f"| reloads for the burst of 10 joins at `up --scale 10` | {reloads} "
                        f"| ≤ 3 | {_verdict(reloads <= 3)} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return ("| measure | value | target | |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nLoad average at the end (1/5/15 min; 2 cores shared with other work): "
              f"{load}.\n")
