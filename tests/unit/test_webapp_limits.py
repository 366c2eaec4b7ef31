"""The web app's longest /delay must stay under HAProxy's `timeout server`, or the slowest
requests it accepts would reach clients as 504s."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from pathlib import Path

from layerkit.agent.runtime import SERVER_OPTIONS
from layerkit.agent.webapp import MAX_DELAY_MS, WORKERS, AppState, make_server

HAPROXY = Path(__file__).resolve().parents[2] / "images" / "haproxy"


def test_the_longest_delay_is_served_before_haproxy_gives_up() -> None:
    for name in ("haproxy.cfg.j2", "haproxy.cfg"):
        found = re.search(r"^\s*timeout server (\d+)s$", (HAPROXY / name).read_text(), re.M)
        assert found, name
        assert int(found.group(1)) > MAX_DELAY_MS / 1000 + 1, name


def test_requests_are_served_by_a_bounded_pool() -> None:
    """Twelve slow requests at once on a server of three workers: never more than three
    threads serve, and every request is answered."""
    state = AppState("t", "h")
    state.delay_ms = 200
    server = make_server("127.0.0.1", 0, state, workers=3)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    port = server.server_address[1]
    baseline = threading.active_count()
    peak: list[int] = []
    answers: list[int] = []

    def get() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        answers.append(conn.getresponse().status)
        conn.close()

    try:
        clients = [threading.Thread(target=get) for _ in range(12)]
        for client in clients:
            client.start()
        while any(c.is_alive() for c in clients):
            # threads beyond the clients' own: those serving them
            peak.append(threading.active_count() - baseline - sum(c.is_alive() for c in clients))
            time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [200] * 12
    assert max(peak) <= 3


def test_haproxy_sends_a_server_no_more_than_its_workers() -> None:
    found = re.search(r"maxconn (\d+)", SERVER_OPTIONS)
    assert found
    assert int(found.group(1)) <= WORKERS


def test_a_client_that_resets_its_connection_leaves_no_traceback(
        capsys) -> None:  # type: ignore[no-untyped-def]
    server = make_server("127.0.0.1", 0, AppState("t", "h"), workers=2)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        for _ in range(3):  # connect, send half a request, reset (SO_LINGER 0)
            with socket.create_connection(server.server_address, timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200  # served after the resets
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capsys.readouterr().err
