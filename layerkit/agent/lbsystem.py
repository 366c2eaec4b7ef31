"""The handler's view of the load balancer container: serf, haproxy, s6 and its network; and
the haproxy service itself (`python3 -m layerkit.agent.lbsystem`, see serve_haproxy)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .members import IPNetwork, Scope
from .serfagent import rpc_env

# every member, whatever its state: the handler filters, and tells "none yet" from "all gone"
SERF_MEMBERS = ("serf", "members", "-format", "json")
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
        try:
            done = subprocess.run(SERF_MEMBERS, capture_output=True, text=True, timeout=TIMEOUT,
                                  check=False, env=rpc_env(os.environ))
        except subprocess.TimeoutExpired:
            raise OSError(f"serf members gave no answer in {TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise OSError(f"serf members exited {done.returncode}: {_first(done.stderr)}")
        return done.stdout

    def check(self, path: Path) -> str | None:
        # the config reads settings from the environment, as the running master does
        env = haproxy_env(self.password_file, os.environ)
        # the config binds inherited sockets; `haproxy -c` wants sockets there, bound or not
        with socket.socket() as http, socket.socket() as stats:
            fds = (http.fileno(), stats.fileno())
            env |= {"LAYERKIT_HTTP_FD": str(fds[0]), "LAYERKIT_STATS_FD": str(fds[1])}
            try:
                done = subprocess.run(("haproxy", "-c", "-f", str(path)), capture_output=True,
                                      text=True, timeout=TIMEOUT, check=False, env=env,
                                      pass_fds=fds)
            except subprocess.TimeoutExpired:
                return f"haproxy -c gave no answer in {TIMEOUT:.0f} s"
        if done.returncode == 0:
            return None
        return _first(done.stdout + done.stderr) or f"exit {done.returncode}"

    def reload(self) -> str | None:
        save_server_state(ADMIN_SOCKET, SERVER_STATE)
        try:
            done = subprocess.run(("s6-svc", "-2", HAPROXY_SERVICE), capture_output=True,
                                  text=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"s6-svc gave no answer in {TIMEOUT:.0f} s"
        if done.returncode != 0:
            return _first(done.stderr) or f"s6-svc exited {done.returncode}"
        return None

    def runtime(self, command: str) -> str:
        return admin_command(ADMIN_SOCKET, command)

    def scope(self) -> Scope:
        return local_scope()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B
CONFIG = Path("/etc/haproxy/haproxy.cfg")
HTTP_PORT, STATS_PORT = 80, 8404
FORWARDED = (signal.SIGUSR2, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPPING = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def serve_haproxy(config: Path = CONFIG, password_file: Path = Path("/etc/layerkit/stats-password")
                  ) -> int:
    """The haproxy service: listen on the ports here, once, and run HAProxy's master-worker on
    these sockets (`bind fd@...`), again at once whenever it dies.

    A killed worker takes its master down, and s6 waits a second before a restart; these
    sockets stay open meanwhile, so connections wait in the kernel's backlog for the next
    HAProxy instead of being refused. Signals are passed on: SIGUSR2 reloads (s6-svc -2), the
    others stop it (SIGUSR1, `docker stop`: a soft stop)."""
    listeners = [_listener(port) for port in (HTTP_PORT, STATS_PORT)]
    fds = tuple(sock.fileno() for sock in listeners)
    env = haproxy_env(password_file, os.environ) | {
        "LAYERKIT_HTTP_FD": str(fds[0]), "LAYERKIT_STATS_FD": str(fds[1])}
    running: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if signum in STOPPING:
            stopping.append(signum)
        for child in running:
            child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        started = time.monotonic()
        running[:] = [subprocess.Popen(("haproxy", "-W", "-db", "-f", str(config)), env=env,
                                       pass_fds=fds)]
        code = running[0].wait()
        if stopping:
            return code
        print(f"lbsystem: haproxy exited ({code}); starting it again", file=sys.stderr,
              flush=True)
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)  # one that cannot start (a bad config) is not restarted in a loop


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def haproxy_env(password_file: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment haproxy.cfg reads: the stats password, the one address the stats page
    answers (the gateway, through which the host's published port arrives; set
    LAYERKIT_STATS_FROM to override) and the key of the session cookies."""
    env = dict(environ)
    env["LAYERKIT_STATS_PASSWORD"] = stats_password(password_file) or "x" * 16
    env["LAYERKIT_STATS_FROM"] = (environ.get("LAYERKIT_STATS_FROM") or default_gateway()
                                  or "127.0.0.1")
    env["LAYERKIT_COOKIE_KEY"] = environ.get("LAYERKIT_CLUSTER") or "layerkit"
    return env


def default_gateway(route_file: Path = Path("/proc/net/route")) -> str | None:
    with contextlib.suppress(OSError):
        for line in route_file.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return None


def local_scope() -> Scope:
    """The networks of this container's interfaces (IPv4), its own addresses on them and the
    gateways of its routes: backends must be inside the first and none of the others."""
    networks: list[IPNetwork] = []
    own: set[str] = set()
    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        found = _interface_v4(name)
        if found is not None:
            own.add(found[0])
            networks.append(ipaddress.ip_network(f"{found[0]}/{found[1]}", strict=False))
    return Scope(tuple(networks), frozenset(_gateways()), frozenset(own))


def _interface_v4(name: str) -> tuple[str, str] | None:
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24]
            mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, request)[20:24]
        except OSError:
            return None  # no IPv4 address on it
    return socket.inet_ntoa(address), socket.inet_ntoa(mask)


def _gateways(route_file: Path = Path("/proc/net/route")) -> set[str]:
    """Gateways of the IPv4 routing table (little-endian hex in the kernel's table)."""
    found = set()
    with contextlib.suppress(OSError):
        for line in route_file.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[2] != "00000000":
                with contextlib.suppress(ValueError):
                    found.add(socket.inet_ntoa(struct.pack("<I", int(fields[2], 16))))
    return found


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


if __name__ == "__main__":
    sys.exit(serve_haproxy())
