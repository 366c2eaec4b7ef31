"""What a running cluster looks like: containers, Serf members, HAProxy's servers, its URLs.

Serf's and HAProxy's views are read from inside the load balancer (`agent/lbstatus.py`, run
through the engine), so no password or route to the container is needed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from http import HTTPStatus

from layerkit.engine.client import DockerClient
from layerkit.engine.containers import ContainerInfo, PortBinding, exec_in, inspect_container
from layerkit.errors import EngineError, NotFound

HTTP_PORT, STATS_PORT = "80/tcp", "8404/tcp"
_SHOWN_RE = re.compile(r"[A-Za-z0-9._:/\[\] -]{0,80}")


@dataclass(frozen=True)
class Endpoints:
    url: str | None
    stats_url: str | None


@dataclass(frozen=True)
class ContainerRow:
    name: str
    role: str
    state: str
    address: str
    restarts: int


@dataclass(frozen=True)
class MemberRow:
    name: str
    address: str
    status: str
    role: str


@dataclass(frozen=True)
class ServerRow:
    name: str
    address: str
    status: str
    check: str
    sessions: int


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    endpoints: Endpoints
    containers: tuple[ContainerRow, ...]
    members: tuple[MemberRow, ...]   # empty when the load balancer does not run
    servers: tuple[ServerRow, ...]   # HAProxy's view of each backend
    haproxy: bool                    # HAProxy answered on its admin socket
    web_image: str = ""              # what new web apps are made of, as `up` kept it
    web_port: int = 0
    health: str = ""


@dataclass(frozen=True)
class LbView:
    members: tuple[MemberRow, ...]
    servers: tuple[ServerRow, ...]
    haproxy: bool


_CHECK_PASSED = re.compile(r"L[4-7]OK")


def serves(server: ServerRow) -> bool:
    """UP with a health check passed: a server just added is UP with its check still `INI`,
    and an app that never answers goes DOWN only after its first checks fail."""
    return server.status.startswith("UP") and bool(_CHECK_PASSED.search(server.check))


def _ip(server: ServerRow) -> str:
    """The IP address of HAProxy's `addr` (`ip:port`, `[v6]:port`)."""
    return (server.address.rpartition(":")[0] or server.address).strip("[]")


def serving_addresses(view: LbView) -> set[str]:
    """The IP addresses of the servers that serve."""
    return {_ip(s) for s in view.servers if serves(s)}


def serving_members(view: LbView) -> set[tuple[str, str]]:
    """(hostname, IP) of the servers that serve: a member's name is its hostname and a
    `-<hex>` suffix (serfagent.node_name)."""
    return {(s.name.rpartition("-")[0], _ip(s)) for s in view.servers if serves(s)}


def lb_view(client: DockerClient, lb: ContainerInfo | None) -> LbView | None:
    """Serf's and HAProxy's views from inside a running load balancer, or None."""
    if lb is None or lb.status != "running":
        return None
    try:
        code, output = exec_in(client, lb.id, ["python3", "-m", "layerkit.agent.lbstatus"])
    except NotFound:
        return None  # the exec went with a restart that began under it, or the container went
    except EngineError as exc:
        if exc.status != HTTPStatus.CONFLICT:
            raise
        return None  # it stopped or began restarting since it was inspected: no view yet
    if code != 0:
        return None
    try:
        raw = json.loads(output)
    except ValueError:
        return None
    return parse_view(raw) if isinstance(raw, dict) else None


def wait_members(client: DockerClient, lb: ContainerInfo | None, expected: int, *,
                 timeout: float) -> bool:
    """Poll until the load balancer's Serf sees `expected` alive web members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = lb_view(client, inspect_container(client, lb.id) if lb is not None else None)
        if view is not None and sum(1 for m in view.members
                                    if m.role == "web" and m.status == "alive") >= expected:
            return True
        time.sleep(0.2)
    return False


def parse_view(raw: dict[str, object]) -> LbView:
    members = tuple(MemberRow(shown(m.get("name")), shown(m.get("address")),
                              shown(m.get("status")), shown(m.get("role")))
                    for m in _dicts(raw.get("members")))
    servers = tuple(ServerRow(shown(s.get("name")), shown(s.get("address")),
                              shown(s.get("status")), shown(s.get("check")),
                              _int(s.get("sessions")))
                    for s in _dicts(raw.get("servers")))
    return LbView(members, servers, raw.get("haproxy") is True)


def container_row(container: ContainerInfo, network: str, role_label: str) -> ContainerRow:
    return ContainerRow(container.name, container.labels.get(role_label, "?"),
                        container.status, container.addresses.get(network, ""),
                        container.restarts)


def endpoints_of(lb: ContainerInfo | None) -> Endpoints:
    if lb is None:
        return Endpoints(None, None)
    return Endpoints(_url(lb.ports.get(HTTP_PORT, ()), "/"),
                     _url(lb.ports.get(STATS_PORT, ()), "/stats"))


def _url(bindings: tuple[PortBinding, ...], path: str) -> str | None:
    if not bindings:
        return None
    host = bindings[0].host_ip or "127.0.0.1"
    host = "127.0.0.1" if host == "0.0.0.0" else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{bindings[0].host_port}{path}"


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: object) -> int:
    text = str(value)
    return int(text) if text.isdigit() else 0


def shown(value: object) -> str:
    """Member data comes from the network: anything unusual is shown escaped, on one line."""
    text = "" if value is None else str(value)
    return text if _SHOWN_RE.fullmatch(text) else repr(text)[:80]
