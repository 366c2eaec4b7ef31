"""The handler's view of the load balancer container: serf, haproxy and s6 there."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

SERF_MEMBERS = ("serf", "members", "-format", "json", "-status", "alive", "-tag", "role=web")
HAPROXY_SERVICE = "/etc/services.d/haproxy"
ADMIN_SOCKET = Path("/run/haproxy/admin.sock")
SERVER_STATE = Path("/run/haproxy/server-state")
TIMEOUT = 10.0
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_-]{12,128}")


def stats_password(path: Path) -> str | None:
    """The stats password handed in at `up` (or made by the haproxy service), if well-formed."""
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value if _PASSWORD_RE.fullmatch(value) else None


class LbSystem:
    """The handler's `System`: serf, haproxy and s6 in the load balancer container."""

    def __init__(self, password_file: Path) -> None:
        self.password_file = password_file

    def members(self) -> str:
        done = subprocess.run(SERF_MEMBERS, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
        if done.returncode != 0:
            raise OSError(f"serf members exited {done.returncode}: {_first(done.stderr)}")
        return done.stdout

    def check(self, path: Path) -> str | None:
        env = dict(os.environ)
        # the config reads its stats password from the environment, as the running master does
        env["LAYERKIT_STATS_PASSWORD"] = stats_password(self.password_file) or "x" * 16
        done = subprocess.run(("haproxy", "-c", "-f", str(path)), capture_output=True,
                              text=True, timeout=TIMEOUT, check=False, env=env)
        if done.returncode == 0:
            return None
        return _first(done.stdout + done.stderr) or f"exit {done.returncode}"

    def reload(self) -> str | None:
        save_server_state(ADMIN_SOCKET, SERVER_STATE)
        done = subprocess.run(("s6-svc", "-2", HAPROXY_SERVICE), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
        if done.returncode != 0:
            return _first(done.stderr) or f"s6-svc exited {done.returncode}"
        return None

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def admin_command(sock_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to HAProxy's admin socket and read its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def save_server_state(sock_path: Path, state_path: Path) -> None:
    """Dump health states for the next worker (load-server-state-from-file); best effort."""
    try:
        text = admin_command(sock_path, "show servers state")
    except OSError:
        return  # haproxy not up yet: the next worker starts from the checks
    tmp = state_path.with_name(f".{state_path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, state_path)


def _first(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    alerts = [ln for ln in lines if "ALERT" in ln]
    return (alerts or lines or [""])[0][:300]
