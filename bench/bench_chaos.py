"""A chaos run against one cluster: random kills, stops, starts, HAProxy worker kills, Serf
restarts and scale changes, with a bounded request loop through the published port all along.

Targets: no failed request except around a killed process
(counted apart), no reload for a membership change, HAProxy's servers equal to the running web
apps within 3 s of the last event, the config valid at every sample. Requests go to 127.0.0.1
only; the loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerkit import __version__
from layerkit.build.build import build_all
from layerkit.build.specs import build_order, load_all
from layerkit.cluster import cluster
from layerkit.cluster.view import serving_addresses
from layerkit.engine.client import DockerClient, connect
from layerkit.engine.containers import (
    ContainerInfo,
    exec_in,
    get_file,
    kill_container,
    labelled_containers,
    start_container,
    stop_container,
)
from layerkit.engine.images import remove_image, tag_image

ROOT = Path(__file__).resolve().parent.parent
KILL_WORKER = ("import os, signal\nprocs = {}\nfor pid in filter(str.isdigit, os.listdir('/proc')):"
               "\n    try:\n        s = dict(l.split(':', 1) for l in open(f'/proc/{pid}/status')"
               " if ':' in l)\n    except OSError:\n        continue\n    if s['Name'].strip() =="
               " 'haproxy':\n        procs[int(pid)] = int(s['PPid'])\nfor p, parent in "
               "procs.items():\n    if parent in procs:\n        os.kill(p, signal.SIGKILL)\n")
CHECK = ("from pathlib import Path\nfrom layerkit.agent.lbsystem import LbSystem\n"
         "print(LbSystem(Path('/etc/layerkit/stats-password')).check("
         "Path('/etc/haproxy/haproxy.cfg')) or 'valid')")
AROUND = 2.0  # seconds after a kill within which a failed request is put down to it
MIN_WEB, MAX_WEB = 2, 8


def _images(client: DockerClient) -> tuple[str, str]:
    """This run's own tags of the images built from this checkout."""
    specs = load_all(ROOT / "images", ROOT / "layerkit")
    built = {b.name: b.image_id for b in build_all(client, build_order(specs), specs,
                                                   version=__version__, write_dockerfiles=False)}
    tag = f"chaos-{secrets.token_hex(3)}"
    refs = (f"layerkit/haproxy:{tag}", f"layerkit/webapp:{tag}")
    tag_image(client, built["haproxy"], refs[0])
    tag_image(client, built["webapp"], refs[1])
    return refs


class Chaos:
    def __init__(self, client: DockerClient, name: str, rng: random.Random) -> None:
        self.client, self.name, self.rng = client, name, rng
        self.kills: list[tuple[float, str]] = []  # (monotonic time, what was killed)
        self.done: Counter[str] = Counter()

    def webs(self, running: bool | None = None) -> list[ContainerInfo]:
        found = labelled_containers(self.client, cluster.labels(self.name, "web"))
        return [c for c in found if running is None or c.running == running]

    def lb(self) -> ContainerInfo:
        return labelled_containers(self.client, cluster.labels(self.name, "lb"))[0]

    def event(self) -> None:
        alive = self.webs(True)
        choices: list[tuple[str, Callable[[], None]]] = [
            ("kill HAProxy worker", self.kill_worker), ("restart Serf", self.restart_serf)]
        if len(alive) > MIN_WEB:
            choices += [("kill web app", lambda: self.kill(alive)),
                        ("stop web app", lambda: self.stop(alive)),
                        ("scale down", lambda: self.scale(len(alive) - 1))]
        if self.webs(False):
            choices.append(("start web app", self.start))
        if len(alive) < MAX_WEB:
            choices.append(("scale up", lambda: self.scale(len(alive) + 1)))
        what, action = self.rng.choice(choices)
        action()
        self.done[what] += 1

    def kill(self, alive: list[ContainerInfo]) -> None:
        self.kills.append((time.monotonic(), "web"))
        kill_container(self.client, self.rng.choice(alive).id)

    def stop(self, alive: list[ContainerInfo]) -> None:
        stop_container(self.client, self.rng.choice(alive).id)

    def start(self) -> None:
        start_container(self.client, self.rng.choice(self.webs(False)).id)

    def kill_worker(self) -> None:
        self.kills.append((time.monotonic(), "haproxy"))
        exec_in(self.client, self.lb().id, ["python3", "-c", KILL_WORKER])

    def restart_serf(self) -> None:
        target = self.rng.choice([self.lb(), *self.webs(True)])
        exec_in(self.client, target.id, ["s6-svc", "-k", "/etc/services.d/serf"])

    def scale(self, n: int) -> None:
        cluster.scale(self.client, self.name, n, wait=0)


def _sample_configs(chaos: Chaos, stop: threading.Event, results: list[str]) -> None:
    while not stop.wait(5.0):
        try:
            results.append(exec_in(chaos.client, chaos.lb().id, ["python3", "-c", CHECK])[1]
                           .strip())
        except Exception as exc:  # the load balancer restarting: not a sample
            results.append(f"no sample: {type(exc).__name__}")


def _converged(chaos: Chaos, timeout: float) -> float | None:
    """Seconds until HAProxy's UP servers are exactly the running web apps' addresses."""
    net = cluster.network_name(chaos.name)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        live = {c.addresses.get(net, "") for c in chaos.webs(True)}
        view = cluster.lb_view(chaos.client, chaos.lb())
        if view is not None and serving_addresses(view) == live:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _classify(failed_at: list[float], kills: list[tuple[float, str]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for at in failed_at:
        near = [what for when, what in kills if 0 <= at - when <= AROUND]
        counts[f"after a {near[-1]} kill" if near else "other"] += 1
    return counts


def _reloads(chaos: Chaos, since: float) -> Counter[str]:
    text = get_file(chaos.client, chaos.lb().id, "/var/log/layerkit/events.log").decode()
    records = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    return Counter(str(r.get("action")) for r in records
                   if r.get("kind") == "outcome" and float(r.get("ts", 0)) >= since)


def run(quick: bool) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.engine import cluster_helpers as helpers  # noqa: PLC0415 - the shared loop

    events, seconds = (30, 90.0) if quick else (200, 600.0)
    client = connect()
    lb_image, web_image = _images(client)
    name = f"chaos-{secrets.token_hex(2)}"
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "13")))
    chaos = Chaos(client, name, rng)
    samples: list[str] = []
    stop = threading.Event()
    try:
        result = cluster.up(client, cluster.ClusterOptions(
            name=name, port=0, lb_image=lb_image, web_image=web_image), 4)
        since = time.time()
        sampler = threading.Thread(target=_sample_configs, args=(chaos, stop, samples),
                                   daemon=True)
        sampler.start()
        with helpers.LoadLoop(str(result.endpoints.url), interval=0.02, max_requests=200_000,
                              max_seconds=seconds + 120) as loop:
            started = time.monotonic()
            for i in range(events):
                chaos.event()
                pause = started + seconds * (i + 1) / events - time.monotonic()
                time.sleep(max(0.0, pause))
            converged = _converged(chaos, 30.0)
        stop.set()
        sampler.join(timeout=30)
        return _report(chaos, loop, converged, samples, _reloads(chaos, since), seconds,
                       time.monotonic() - started)
    finally:
        stop.set()
        cluster.down(client, name)
        for ref in (lb_image, web_image):
            remove_image(client, ref)


def _report(chaos: Chaos, loop: Any, converged: float | None, samples: list[str],
            actions: Counter[str], planned: float, took: float) -> str:
    kinds = _classify(loop.failed_at, chaos.kills)
    other = kinds.pop("other", 0)
    valid = sum(s == "valid" for s in samples)
    sampled = sum(not s.startswith("no sample") for s in samples)
    settle = f"{converged:.1f} s" if converged is not None else "not within 30 s"
    rows = [
        f"| failed requests, not near a kill | {other} of {loop.total} | 0 | "
        f"{'meets' if other == 0 else '**misses**'} |",
        f"| failed requests within {AROUND:.0f} s of a kill (reported apart) | "
        + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "0") + " | - | |",
        f"| reloads during the run | {actions.get('reload', 0)} (live changes: "
        f"{actions.get('runtime', 0)}) | 0 | "
        f"{'meets' if not actions.get('reload') else '**misses**'} |",
        f"| HAProxy's servers = running web apps after the last event | {settle} | ≤ 3 s | "
        f"{'meets' if converged is not None and converged <= 3 else '**misses**'} |",
        f"| config valid at each sample | {valid} of {sampled} (every 5 s) | all | "
        f"{'meets' if valid == sampled else '**misses**'} |",
    ]
    events = ", ".join(f"{n} {k}" for k, n in sorted(chaos.done.items()))
    return (f"{sum(chaos.done.values())} events over {took:.0f} s (planned {planned:.0f} s): "
            f"{events}. Seed {os.environ.get('CHAOS_SEED', '13')}; load average at the end "
            f"{os.getloadavg()[0]:.1f} (2 cores, shared).\n\n"
            "| measure | value | target | |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
