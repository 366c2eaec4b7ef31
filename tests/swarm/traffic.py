"""HTTP for the swarm tests: only to 127.0.0.1 or an address of the harness's own network (a
node's published port, or the floating address the cluster holds there); loops bounded."""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.engine.cluster_helpers import get_backend_at


def target(url: str, subnet: ipaddress.IPv4Network) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = ipaddress.ip_address(host)
    assert address == ipaddress.ip_address("127.0.0.1") or address in subnet, \
        f"swarm tests only talk to 127.0.0.1 and the harness network, not {url}"
    return host, parts.port or 80


def get_backend(url: str, subnet: ipaddress.IPv4Network, timeout: float = 3.0) -> str:
    return get_backend_at(*target(url, subnet), timeout=timeout)


def backends(url: str, subnet: ipaddress.IPv4Network, requests: int = 30) -> set[str]:
    return {get_backend(url, subnet) for _ in range(requests)}


@dataclass
class Load:
    """A request every `interval` seconds on a new connection, in a thread, bounded in count
    and time; records each failure with its time."""

    url: str
    subnet: ipaddress.IPv4Network
    interval: float = 0.02
    max_requests: int = 6000
    max_seconds: float = 120.0
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    seen: list[tuple[float, str]] = field(default_factory=list)
    # (start, end, ok) of every request: what was sent when, for measures around an event
    spans: list[tuple[float, float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        target(self.url, self.subnet)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.max_seconds + 10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and self.ok + len(self.failures) < self.max_requests \
                and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                self.seen.append((time.monotonic(), get_backend(self.url, self.subnet, 2.0)))
                self.ok += 1
                self.spans.append((start, time.monotonic(), True))
            except (OSError, AssertionError, http.client.HTTPException) as exc:
                self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                self.spans.append((start, time.monotonic(), False))
            time.sleep(self.interval)

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time in [start, end] without a successful answer arriving."""
        times = sorted(e for _, e, ok in self.spans if ok and start < e < end)
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))

    def failed_sent_after(self, moment: float) -> int:
        return sum(1 for s, _, ok in self.spans if not ok and s >= moment)

    def ok_after(self, moment: float) -> int:
        return sum(1 for t, _ in self.seen if t > moment)

    def failed_after(self, moment: float) -> list[str]:
        return [f for t, f in self.failures if t > moment]
