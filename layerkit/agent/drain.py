"""`python3 -m layerkit.agent.drain CMD...`: run CMD, and pass a stop on only after a drain delay.

On `docker stop` s6 signals every service at once: Serf starts its graceful leave while the web
app would close its socket at the same moment, before the load balancer has heard of the leave
(about a second) and reloaded. Requests in between would be refused. Holding the stop back for
LAYERKIT_DRAIN_SECONDS (default 2) keeps the app serving until HAProxy has dropped it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

DEFAULT_DRAIN = 2.0
MAX_DRAIN = 8.0  # docker stop waits 10 s before it kills


def drain_seconds(raw: str | None) -> float:
    try:
        value = float(raw) if raw else DEFAULT_DRAIN
    except ValueError:
        return DEFAULT_DRAIN
    return min(max(value, 0.0), MAX_DRAIN)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 -m layerkit.agent.drain CMD [ARGS...]", file=sys.stderr)
        return 2
    drain = drain_seconds(os.environ.get("LAYERKIT_DRAIN_SECONDS"))
    stop_at: list[float] = []

    def on_stop(signum: int, _frame: object) -> None:
        if not stop_at:
            stop_at.append(time.monotonic() + drain)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    child = subprocess.Popen(argv)
    signalled = False
    while child.poll() is None:
        if stop_at and not signalled and time.monotonic() >= stop_at[0]:
            child.terminate()
            signalled = True
        time.sleep(0.05)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
