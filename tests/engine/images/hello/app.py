"""A user's web app: 200 on / and /ping, its own address in X-Backend-IP, 404 elsewhere."""

import http.server
import socket


def own_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 9))  # picks the route only; nothing is sent
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path not in ("/", "/ping"):
            self.send_error(404)
            return
        body = b"hello from a user's own app\n"
        self.send_response(200)
        self.send_header("X-Backend-IP", own_address())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
