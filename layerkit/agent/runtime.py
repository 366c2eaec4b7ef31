"""HAProxy's runtime API: the backend's servers as HAProxy has them, changed live.

A member that joins is added with `add server` (a dynamic server takes nothing from
`default-server`, so its options are spelled out: SERVER_OPTIONS, which the template uses too),
then its health checks and the server are enabled. A member that leaves is put in maintenance,
its connections are given DRAIN_SECONDS to finish, then it is deleted (HAProxy deletes only a
server in maintenance with no connection). Answers are text meant for people; success is judged
by reading the servers back, never by the wording of an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .members import Backend

BACKEND = "webapps"
# maxconn: no more at once than the web app has workers (webapp.WORKERS); the rest queue here
SERVER_OPTIONS = "check inter 500ms fall 2 rise 2 maxconn 32"
DRAIN_SECONDS = 3.0
FORCED_MAINT = 0x01  # srv_admin_state bit: put in maintenance through the API


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    admin: int = 0
    sessions: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.address, self.port


def parse_servers_state(text: str, backend: str = BACKEND) -> dict[str, Server]:
    """`show servers state` (format 1: a version line, a `# header`, one line per server)."""
    header: list[str] = []
    servers: dict[str, Server] = {}
    for line in text.splitlines():
        words = line.split()
        if line.startswith("#"):
            header = words[1:]
            continue
        if not header or len(words) != len(header):
            continue
        row = dict(zip(header, words, strict=True))
        if row.get("be_name") != backend:
            continue
        port = row.get("srv_port", "0")
        admin = row.get("srv_admin_state", "0")
        servers[row["srv_name"]] = Server(row["srv_name"], row.get("srv_addr", ""),
                                          int(port) if port.isdigit() else 0,
                                          int(admin) if admin.isdigit() else 0)
    return servers


def add_commands(backend: Backend, name: str = BACKEND) -> list[str]:
    target = f"{name}/{backend.name}"
    return [f"add server {target} {backend.endpoint} {SERVER_OPTIONS}",
            f"enable health {target}", f"enable server {target}"]


def differs(servers: Mapping[str, Server], wanted: tuple[Backend, ...]) -> str | None:
    """Why HAProxy's servers are not the wanted set (None when they are)."""
    want = {b.name: (b.address, b.port) for b in wanted}
    have = {n: s.key for n, s in servers.items()}
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    moved = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    held = sorted(n for n in set(want) & set(have) if servers[n].admin & FORCED_MAINT)
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("extra", extra), ("missing", missing), ("moved", moved), ("in maintenance", held))
             if names]
    return "; ".join(parts) or None


@dataclass(frozen=True)
class RuntimeApi:
    """The admin socket as a function (command -> answer; OSError when HAProxy does not
    answer) and a sleep, both from the handler's System."""

    command: Callable[[str], str]
    sleep: Callable[[float], None]
    backend: str = BACKEND

    def servers(self) -> dict[str, Server]:
        return parse_servers_state(self.command(f"show servers state {self.backend}"),
                                   self.backend)

    def apply(self, wanted: tuple[Backend, ...]) -> tuple[list[str], list[str]]:
        """Add and remove servers until HAProxy's set is `wanted`: (added, removed) names."""
        have = self.servers()
        want = {b.name: b for b in wanted}
        gone = [n for n, s in have.items() if n not in want or s.key != want[n].address_port]
        new = [b for b in wanted if b.name not in have or b.name in gone]
        for name in gone:
            self.remove(name)
        for backend in new:
            for command in add_commands(backend, self.backend):
                self.command(command)
        if new:  # a server added at run time gets its session cookie only from this
            self.command(f"enable dynamic-cookie backend {self.backend}")
        maint = [n for n, s in have.items() if n in want and n not in gone
                 and s.admin & FORCED_MAINT]
        for name in maint:  # left in maintenance by an interrupted removal: serve it again
            self.command(f"enable server {self.backend}/{name}")
        return [b.name for b in new], gone

    def remove(self, name: str) -> None:
        target = f"{self.backend}/{name}"
        self.command(f"set server {target} state maint")
        waited = 0.0
        while waited < DRAIN_SECONDS and self.sessions(name) > 0:
            self.sleep(0.1)
            waited += 0.1
        if waited >= DRAIN_SECONDS:
            self.command(f"shutdown sessions server {target}")
        self.command(f"del server {target}")

    def sessions(self, name: str) -> int:
        """Current sessions on one server (the `scur` column of `show stat`)."""
        lines = self.command("show stat").lstrip("# ").splitlines()
        if not lines:
            return 0
        header = lines[0].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == self.backend and row.get("svname") == name:
                value = row.get("scur", "0")
                return int(value) if value.isdigit() else 0
        return 0
