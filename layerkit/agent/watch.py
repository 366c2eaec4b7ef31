"""`python3 -m layerkit.agent.watch`: the load balancer's fast path for membership changes.

Serf's agent holds member events back until the cluster has been quiet for a second before it
runs the event handler. Its log, though, reports each change the moment memberlist learns it
("serf: EventMemberJoin: ..."). This s6 service follows that log through `serf monitor` and
runs the same reconcile as the handler at once; the handler still runs on every event (then
usually finding nothing to change). The log line only triggers: the config is always built from
a fresh, validated `serf members`. With no trigger for PERIOD seconds it reconciles anyway, so a
change that did not take (HAProxy restarting, a refused command) is corrected without an event;
such a run is logged only when it changed something.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

from .handler import Paths, Settings, handle, held_for, settings_from
from .lbsystem import LbSystem
from .serfagent import rpc_env

TRIGGERS = ("serf: EventMemberJoin", "serf: EventMemberLeave", "serf: EventMemberFailed",
            "serf: EventMemberUpdate", "serf: EventMemberReap")
GATHER = 0.1  # seconds to wait for the rest of a burst before reconciling
PERIOD = 5.0  # seconds without a trigger before a check that HAProxy still serves the members


def is_trigger(line: str) -> bool:
    return any(t in line for t in TRIGGERS)


class Coalescer:
    """Runs `action` in one worker thread after a trigger, one run covering every trigger
    that arrived before it started."""

    def __init__(self, action: Callable[[str], None], gather: float = GATHER,
                 idle: Callable[[], None] = lambda: None, period: float | None = None) -> None:
        self.action = action
        self.gather = gather
        self.idle = idle
        self.period = period
        self.wake = threading.Event()
        self.last = ""
        self.runs = 0

    def trigger(self, line: str) -> None:
        self.last = line
        self.wake.set()

    def run_once(self, timeout: float | None = None) -> bool:
        if not self.wake.wait(timeout):
            return False
        time.sleep(self.gather)
        self.wake.clear()
        self.runs += 1
        self.action(self.last)
        return True

    def serve_forever(self) -> None:
        while True:
            try:
                if not self.run_once(self.period):
                    self.idle()
            except Exception as exc:  # a failed run must not stop the watcher
                print(f"layerkit watch: {type(exc).__name__}: {exc}", file=sys.stderr,
                      flush=True)


def follow(lines: Iterable[str], coalescer: Coalescer) -> None:
    for line in lines:
        if is_trigger(line):
            coalescer.trigger(line.strip()[:300])


def main() -> int:
    paths = Paths()
    system = LbSystem(paths.password_file)
    try:
        settings = settings_from(os.environ)
    except ValueError as exc:
        print(f"layerkit watch: invalid: {exc}", file=sys.stderr, flush=True)
        return 1
    coalescer = Coalescer(lambda line: _reconcile(line, paths, system, settings),
                          idle=lambda: _periodic(paths, system, settings), period=PERIOD)
    threading.Thread(target=coalescer.serve_forever, daemon=True).start()
    while True:
        # the agent may not be up yet, or restarted: reconnect every second
        with subprocess.Popen(("serf", "monitor", "-log-level=info"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, errors="replace",
                              env=rpc_env(os.environ)) as proc:
            assert proc.stdout is not None
            follow(proc.stdout, coalescer)
        time.sleep(1)


def _periodic(paths: Paths, system: LbSystem, settings: Settings) -> None:
    outcome = handle("periodic", "", paths, system, settings,
                     quiet=("unchanged", "held", "kept"))
    if outcome.action in ("invalid", "error"):
        print(f"layerkit watch: {outcome.action}: {outcome.reason}", file=sys.stderr, flush=True)


def _reconcile(line: str, paths: Paths, system: LbSystem, settings: Settings) -> None:
    outcome = handle("watch", line, paths, system, settings)
    if outcome.action == "held":
        # `layerkit up/scale` releases the hold and reconciles itself; should it never come
        # back, the hold runs out (MAX_HOLD) and the change still lands here
        while held_for(paths, system) > 0:
            time.sleep(0.5)
        outcome = handle("watch", "after hold", paths, system, settings)
    if outcome.action in ("invalid", "error"):
        print(f"layerkit watch: {outcome.action}: {outcome.reason}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
