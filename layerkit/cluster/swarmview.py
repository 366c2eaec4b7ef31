"""What a Swarm cluster looks like from its manager: tasks with their nodes, the load balancers'
endpoints, which node holds the floating address (from keepalived's own log), whether a load
balancer serves the web apps it should (the X-Layerkit-Server header HAProxy puts on each answer:
the address of the web app that gave it, whatever the app), and the Serf and HAProxy views of
the load balancers whose containers run on the engine asked (an exec reaches only the containers
of the engine it is sent to)."""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from layerkit.cluster.view import LbView, lb_view
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import inspect_container
from layerkit.engine.logs import service_logs
from layerkit.engine.swarm import SwarmService, SwarmTask, list_nodes, service_tasks, swarm_state
from layerkit.errors import NotFound

logger = logging.getLogger(__name__)

_DETAIL_RE = re.compile(r"com\.docker\.swarm\.node\.id=([a-z0-9]+)")
_VRRP_RE = re.compile(r"Entering (MASTER|BACKUP|FAULT) STATE")
ROLE_ORDER = {"vip": 0, "lb": 1, "web": 2}


@dataclass(frozen=True)
class TaskRow:
    name: str      # <service>.<slot>, or <service>.<node> for a global service
    role: str
    node: str
    state: str
    desired: str
    address: str
    message: str


@dataclass(frozen=True)
class BalancerView:
    task: str
    node: str
    here: bool             # its container runs on the engine the status was read from
    view: LbView | None    # Serf's and HAProxy's views; None elsewhere or without an answer


@dataclass(frozen=True)
class SwarmStatus:
    name: str
    urls: tuple[str, ...]
    tasks: tuple[TaskRow, ...]
    replicas: Mapping[str, int | None]   # role -> replicas asked for (None: global)
    vip: str | None
    vip_node: str | None                 # the node whose keepalived last became MASTER
    balancers: tuple[BalancerView, ...] = ()


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    source: str    # task or node the line came from
    text: str


def node_names(client: DockerClient) -> dict[str, str]:
    return {n.id: n.hostname for n in list_nodes(client)}


def lb_endpoints(client: DockerClient, lb_id: str) -> tuple[str, ...]:
    """The addresses of the nodes running a load balancer task, where it publishes its port."""
    addresses = {n.id: n.address for n in list_nodes(client)}
    return tuple(sorted({addresses[t.node_id] for t in service_tasks(client, lb_id)
                         if t.state == "running" and t.node_id in addresses}))


def serving(url: str, requests: int) -> set[str]:
    """The backends that answered `requests` requests through a load balancer (empty on a
    refusal or an error page): with round robin, every UP server answers at least once."""
    parts = urlsplit(url)
    seen: set[str] = set()
    for _ in range(requests):
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=2)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                return set()
            seen.add(response.getheader("x-layerkit-server") or "?")
        except (OSError, http.client.HTTPException):
            return set()
        finally:
            conn.close()
    return seen


def read_status(client: DockerClient, name: str, services: Mapping[str, SwarmService],
                urls: tuple[str, ...]) -> SwarmStatus:
    nodes = node_names(client)
    here = swarm_state(client).node_id
    rows: list[TaskRow] = []
    balancers: list[BalancerView] = []
    for role, service in services.items():
        for task in service_tasks(client, service.id):
            if task.desired_state != "running" and task.state != "running":
                continue  # history Swarm keeps of replaced tasks
            label = task.slot if service.replicas is not None else nodes.get(task.node_id, "?")
            rows.append(TaskRow(f"{service.name}.{label}", role, nodes.get(task.node_id, "?"),
                                task.state, task.desired_state, ",".join(task.addresses),
                                task.message))
            if role == "lb":
                balancers.append(balancer_view(client, rows[-1], task, here))
    rows.sort(key=lambda r: (ROLE_ORDER.get(r.role, 9), r.name))
    vip_service = services.get("vip")
    lb = services.get("lb")
    return SwarmStatus(name, urls, tuple(rows),
                       {role: s.replicas for role, s in services.items()},
                       lb.labels.get("org.layerkit.vip") if lb else None,
                       vip_holder(client, vip_service, nodes) if vip_service else None,
                       tuple(sorted(balancers, key=lambda b: b.task)))


def balancer_view(client: DockerClient, row: TaskRow, task: SwarmTask, here: str
                  ) -> BalancerView:
    """A load balancer task's Serf and HAProxy views, read as on one engine (`view.lb_view`)
    when its container is on the engine asked (node `here`)."""
    if task.node_id != here:
        return BalancerView(row.name, row.node, False, None)
    if task.state != "running" or not task.container_id:
        return BalancerView(row.name, row.node, True, None)
    try:
        view = lb_view(client, inspect_container(client, task.container_id))
    except NotFound:  # the container is gone since the tasks were listed
        view = None
    return BalancerView(row.name, row.node, True, view)


def vip_holder(client: DockerClient, service: SwarmService, nodes: Mapping[str, str]
               ) -> str | None:
    """The node whose keepalived entered MASTER last and has not left it since, by its log."""
    state: dict[str, tuple[str, str]] = {}
    for line in parse_logs(service_logs(client, service.id, tail="200"), nodes):
        found = _VRRP_RE.search(line.text)
        if found:
            state[line.source] = (line.timestamp, found.group(1))
    live = {n.hostname for n in list_nodes(client) if n.state == "ready"}
    masters = sorted((ts, node) for node, (ts, what) in state.items()
                     if what == "MASTER" and node in live)
    return masters[-1][1] if masters else None


def parse_logs(chunks: Iterable[bytes], nodes: Mapping[str, str]) -> list[LogLine]:
    """Service log lines (`<timestamp> <details> <text>`) with the node named by its host."""
    lines: list[LogLine] = []
    for raw in b"".join(chunks).decode(errors="replace").splitlines():
        timestamp, _, rest = raw.partition(" ")
        details, _, text = rest.partition(" ")
        found = _DETAIL_RE.search(details)
        if found is None:
            details, text = "", rest
        node = nodes.get(found.group(1), found.group(1)[:12]) if found else "?"
        lines.append(LogLine(timestamp, node, text))
    return lines
