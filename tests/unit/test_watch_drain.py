"""The load balancer's fast membership path and the web app's drain wrapper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from layerkit.agent.drain import DEFAULT_DRAIN, MAX_DRAIN, drain_seconds
from layerkit.agent.watch import Coalescer, follow, is_trigger

LOG = [
    "2026/11/25 10:45:22 [INFO] agent: Serf agent starting",
    "2026/11/25 10:45:23 [INFO] serf: EventMemberJoin: demo-web-1-aaaaaa 172.18.0.3",
    "2026/11/25 10:45:23 [INFO] serf: EventMemberJoin: demo-web-2-bbbbbb 172.18.0.4",
    "2026/11/25 10:45:23 [INFO] agent.ipc: Accepted client: 127.0.0.1:42134",
    "2026/11/25 10:45:24 [INFO] serf: EventMemberLeave: demo-web-1-aaaaaa 172.18.0.3",
]


def test_only_membership_lines_trigger() -> None:
    assert [is_trigger(line) for line in LOG] == [False, True, True, False, True]


def test_a_burst_of_triggers_costs_one_run() -> None:
    runs: list[str] = []
    coalescer = Coalescer(runs.append, gather=0.01)
    follow(LOG, coalescer)
    assert coalescer.run_once(timeout=1)
    assert not coalescer.run_once(timeout=0.05)
    assert runs == [LOG[-1]]


def test_a_trigger_during_a_run_causes_another_run() -> None:
    runs: list[str] = []
    coalescer = Coalescer(lambda line: (runs.append(line), coalescer.trigger("again")),
                          gather=0.01)
    coalescer.trigger("first")
    assert coalescer.run_once(timeout=1)
    assert coalescer.run_once(timeout=1)
    assert runs == ["first", "again"]


def test_drain_seconds_are_bounded() -> None:
    assert drain_seconds(None) == DEFAULT_DRAIN
    assert drain_seconds("junk") == DEFAULT_DRAIN
    assert drain_seconds("0.5") == 0.5
    assert drain_seconds("-3") == 0.0
    assert drain_seconds("999") == MAX_DRAIN


def test_drain_holds_a_stop_back_then_passes_it_on(tmp_path: Path) -> None:
    started_file = tmp_path / "child-started"
    # the child says it runs; drain installs its handlers before it starts the child, so from
    # then on a SIGTERM is drain's to hold (a fixed sleep here failed on a loaded machine)
    child = ("import pathlib, time, signal, sys; "
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
             f"pathlib.Path({str(started_file)!r}).touch(); time.sleep(30)")
    env = {"LAYERKIT_DRAIN_SECONDS": "0.5", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "layerkit.agent.drain", sys.executable, "-c",
                             child], env=env)
    deadline = time.monotonic() + 30
    while not started_file.exists():
        assert time.monotonic() < deadline, "the child never started"
        assert proc.poll() is None
        time.sleep(0.02)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started >= 0.45
