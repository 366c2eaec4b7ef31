"""The host ports a cluster publishes: a given one is checked free before anything is made; one
left to layerkit (0) is chosen free below the kernel's ephemeral range.

The engine's own choice for port 0 lies inside that range, where every local client takes its
source ports from: while a crashed load balancer restarts, a client connection may hold the very
port number, the engine cannot bind it again, and the restart policy gives up for good.
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

from layerkit.errors import ClusterError, UsageError

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
CHOICE_SPAN = 8000  # ports below the ephemeral range that a choice is drawn from
TRIES = 64


def ephemeral_start(path: Path = EPHEMERAL_RANGE) -> int:
    """The first port the kernel hands out as a source port (Linux's default: 32768)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def require_free(bind: str, port: int, flag: str = "--port") -> None:
    """Fail early with the real reason instead of a half-created cluster and an engine
    message: an address this host does not have is not a port in use."""
    problem = _bind_problem(bind, port)
    if problem == errno.EADDRNOTAVAIL:
        raise UsageError(f"--bind {bind} is not an address of this host",
                         hint="give one of its addresses (127.0.0.1: this host only)")
    if problem == errno.EADDRINUSE:
        raise UsageError(f"{bind}:{port} is already in use",
                         hint=f"choose another with {flag} (0 = any free port)")
    if problem is not None:
        raise UsageError(f"cannot listen on {bind}:{port}: {errno.errorcode.get(problem, '?')}")


def choose_free(bind: str, *, start: int | None = None) -> int:
    """A free port on `bind` below the ephemeral range (at random, so that clusters started
    side by side rarely try the same one)."""
    top = ephemeral_start() if start is None else start
    low = max(1024, top - CHOICE_SPAN)
    for port in random.sample(range(low, top), min(TRIES, top - low)):
        if _bind_problem(bind, port) is None:
            return port
    raise ClusterError(f"no free port on {bind} between {low} and {top - 1}",
                       hint="give one with --port / --stats-port")


def _bind_problem(bind: str, port: int) -> int | None:
    """None when a listener could bind `bind:port` now, else the errno."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError as exc:
            return exc.errno or errno.EINVAL
    return None
