"""The merged, time-ordered logs of every member of a cluster, on one engine or on Swarm.

On one engine each labelled container's log is read; on Swarm each service's log, which the
manager gathers from every node (lines name their task and node). Lines are ordered by the
engine's timestamps; with `follow`, they are shown as they arrive from all members at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from layerkit.cluster.cluster import PROJECT_LABEL, ROLE_LABEL, validate_name
from layerkit.cluster.swarm import find_services
from layerkit.cluster.swarmview import node_names
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import labelled_containers
from layerkit.engine.logs import container_logs, service_logs
from layerkit.engine.swarm import SwarmService, service_tasks
from layerkit.errors import LayerkitError, NotFound, UsageError

logger = logging.getLogger(__name__)

ROLES = ("lb", "web", "vip")
_DURATION_RE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TASK_RE = re.compile(r"com\.docker\.swarm\.task\.id=([a-z0-9]+)")
_NODE_RE = re.compile(r"com\.docker\.swarm\.node\.id=([a-z0-9]+)")


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    source: str    # container name, or <service>.<slot>@<node> on Swarm
    role: str
    text: str


@dataclass(frozen=True)
class _Source:
    name: str
    role: str
    open: Callable[[bool, int], Iterable[bytes]]   # (follow, since) -> chunks
    swarm: bool


def parse_since(text: str, now: dt.datetime) -> int:
    """`90s`, `10m`, `2h`, `1d` ago, or an ISO 8601 time: a Unix time for the engine."""
    found = _DURATION_RE.fullmatch(text.strip())
    if found:
        return int(now.timestamp()) - int(found.group(1)) * _UNITS[found.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a duration (10m) nor an ISO time"
                         ) from None
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp())


def order_key(timestamp: str) -> tuple[str, str]:
    """RFC 3339 with its fraction padded: the engine trims trailing zeros in some logs."""
    whole, _, rest = timestamp.partition(".")
    return whole, rest.rstrip("Z").ljust(9, "0")


def _sources(client: DockerClient, name: str, role: str | None) -> list[_Source]:
    services = find_services(client, name)
    if services:
        return [_Source(s.name, r, _service_opener(client, s), swarm=True)
                for r, s in services.items() if role in (None, r)]
    wanted = {PROJECT_LABEL: name, **({ROLE_LABEL: role} if role else {})}
    return [_Source(c.name, c.labels.get(ROLE_LABEL, "?"), _container_opener(client, c.id),
                    swarm=False) for c in labelled_containers(client, wanted)]


def _service_opener(client: DockerClient, service: SwarmService
                    ) -> Callable[[bool, int], Iterable[bytes]]:
    return lambda follow, since: service_logs(client, service.id, follow=follow, since=since)


def _container_opener(client: DockerClient, ref: str
                      ) -> Callable[[bool, int], Iterable[bytes]]:
    return lambda follow, since: container_logs(client, ref, follow=follow, since=since)


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines out of chunks that may split them."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line.decode(errors="replace")
    if rest:
        yield rest.decode(errors="replace")


def _parse(source: _Source, raw: str, tasks: dict[str, str], nodes: dict[str, str]) -> LogLine:
    timestamp, _, rest = raw.partition(" ")
    name = source.name
    if source.swarm:
        details, _, text = rest.partition(" ")
        task, node = _TASK_RE.search(details), _NODE_RE.search(details)
        if task is None:
            text = rest
        else:
            name = tasks.get(task.group(1), f"{source.name}.{task.group(1)[:8]}")
            name += f"@{nodes.get(node.group(1), '?')}" if node else ""
    else:
        text = rest
    return LogLine(timestamp, name, source.role, text)


def _task_names(client: DockerClient, name: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for service in find_services(client, name).values():
        for task in service_tasks(client, service.id):
            names[task.id] = f"{service.name}.{task.slot or task.node_id[:8]}"
    return names


def collect(client: DockerClient, name: str, *, role: str | None = None, since: int = 0
            ) -> tuple[LogLine, ...]:
    """Every member's log lines so far, in time order."""
    sources = _start(client, name, role)
    tasks, nodes = _names(client, name, sources)
    lines = [_parse(s, raw, tasks, nodes) for s in sources
             for raw in _lines(s.open(False, since)) if raw.strip()]
    return tuple(sorted(lines, key=lambda line: order_key(line.timestamp)))


def follow(client: DockerClient, name: str, *, role: str | None = None, since: int = 0,
           stop: threading.Event | None = None) -> Iterator[LogLine]:
    """Lines from every member as they arrive, until `stop` is set (or forever)."""
    sources = _start(client, name, role)
    tasks, nodes = _names(client, name, sources)
    arrived: queue.Queue[LogLine] = queue.Queue()
    stop = stop or threading.Event()

    def pump(source: _Source) -> None:
        try:
            for raw in _lines(source.open(True, since)):
                if raw.strip():
                    arrived.put(_parse(source, raw, tasks, nodes))
        except LayerkitError as exc:
            logger.debug("log stream of %s ended: %s", source.name, exc.message)

    for source in sources:
        threading.Thread(target=pump, args=(source,), daemon=True).start()
    while not stop.is_set():
        try:
            yield arrived.get(timeout=0.2)
        except queue.Empty:
            continue


def _start(client: DockerClient, name: str, role: str | None) -> list[_Source]:
    validate_name(name)
    if role is not None and role not in ROLES:
        raise UsageError(f"--role {role!r} is not one of {', '.join(ROLES)}")
    sources = _sources(client, name, role)
    if not sources:
        raise NotFound(f"no cluster named {name!r}" + (f" with role {role}" if role else ""))
    return sources


def _names(client: DockerClient, name: str, sources: list[_Source]
           ) -> tuple[dict[str, str], dict[str, str]]:
    if not any(s.swarm for s in sources):
        return {}, {}
    return _task_names(client, name), node_names(client)
