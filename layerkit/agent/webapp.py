"""The lab's web app, on the Python standard library.

GET /        JSON {hello, ip, host, tag, sessionViews, id}; views counted per NODESESSID cookie;
             header x-backend-ip carries the address that served the request.
POST /delay  {"delay": ms} delays every later request by that much (0 to turn it off).
GET /healthz 200 while the app serves (never delayed, so health checks see the process).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

COOKIE = "NODESESSID"
MAX_SESSIONS = 10_000   # oldest sessions are forgotten first: memory stays bounded
MAX_DELAY_MS = 25_000   # under HAProxy's `timeout server` (30 s): delayed requests get answers
MAX_BODY = 4096
WORKERS = 32            # threads serving requests; HAProxy sends each server at most as many
IDLE_TIMEOUT = 30       # seconds an idle keep-alive connection may hold a worker
_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")


class AppState:
    """Sessions and the configured delay, shared by the request threads."""

    def __init__(self, tag: str, host: str) -> None:
        self.tag = tag
        self.host = host
        self.delay_ms = 0
        self._views: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def view(self, session: str | None) -> tuple[str, int]:
        """Count one view for `session` (a new id when absent or unknown-format)."""
        if session is None or not _SESSION_RE.match(session):
            session = secrets.token_hex(16)
        with self._lock:
            views = self._views.pop(session, 0) + 1
            self._views[session] = views
            while len(self._views) > MAX_SESSIONS:
                self._views.popitem(last=False)
        return session, views


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as HAProxy expects
    server_version = "layerkit-webapp/1"
    timeout = IDLE_TIMEOUT
    state: AppState  # set on the class by make_server

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
            return
        if self.path.split("?", 1)[0] != "/":
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        self._delay()
        session, views = self.state.view(self._cookie())
        ip = self.connection.getsockname()[0]
        body = {"hello": "world!", "ip": ip, "host": self.state.host, "tag": self.state.tag,
                "sessionViews": views, "id": session}
        self._send(HTTPStatus.OK, body, {
            "x-backend-ip": ip,
            "Set-Cookie": f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"})

    def do_POST(self) -> None:
        if self.path != "/delay":
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        delay = self._read_delay()
        if delay is None:
            self._send(HTTPStatus.BAD_REQUEST,
                       {"error": f'expected JSON {{"delay": 0..{MAX_DELAY_MS}}} (milliseconds)'})
            return
        self.state.delay_ms = delay
        self._send(HTTPStatus.OK, {"message": f"New timeout of {delay}ms configured.",
                                   "delay": delay})

    def _read_delay(self) -> int | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        if not 0 < length <= MAX_BODY:
            return None
        try:
            data = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            return None
        delay = data.get("delay") if isinstance(data, dict) else None
        if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY_MS:
            return None
        return delay

    def _cookie(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            morsel = SimpleCookie(raw).get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel else None

    def _delay(self) -> None:
        if self.state.delay_ms:
            time.sleep(self.state.delay_ms / 1000)

    def _send(self, status: HTTPStatus, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("WEBAPP_ACCESS_LOG") == "1":
            super().log_message(format, *args)


class PooledHTTPServer(HTTPServer):
    """Connections served by at most `workers` threads: beyond that they wait in the listen
    backlog, instead of a thread (and its memory) each as ThreadingHTTPServer would make."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 workers: int) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="webapp-worker")
        self.slots = threading.BoundedSemaphore(workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client went first (HAProxy's checks do): nothing to answer, no traceback
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_server(host: str, port: int, state: AppState, workers: int = WORKERS
                ) -> PooledHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": state})
    return PooledHTTPServer((host, port), handler, workers)


def main() -> None:
    port = int(os.environ.get("WEBAPP_PORT", "3000"))
    state = AppState(tag=os.environ.get("TAG", ""), host=socket.gethostname())
    workers = os.environ.get("WEBAPP_WORKERS", "")
    server = make_server(os.environ.get("WEBAPP_BIND", "0.0.0.0"), port, state,
                         int(workers) if workers.isdigit() and int(workers) > 0 else WORKERS)

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"webapp listening on :{port}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
