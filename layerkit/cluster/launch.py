"""Making the cluster's containers: their specs, the secrets handed in before they start, and a
record of what one command made so that a failed or interrupted `up` removes exactly that."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from layerkit.cluster.options import (
    KEYRING_PATH,
    PASSWORD_PATH,
    ROLE_LABEL,
    ClusterOptions,
    Secrets,
    labels,
    network_name,
)
from layerkit.cluster.view import HTTP_PORT, STATS_PORT, wait_members
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    ContainerSpec,
    create_container,
    exec_in,
    get_file,
    put_files,
    remove_container,
    remove_network,
    start_container,
)
from layerkit.errors import EngineError, NotFound

logger = logging.getLogger(__name__)

PARALLEL = 4  # engine calls at once: enough to overlap, few enough for two cores
HANDLER = ["python3", "-m", "layerkit.agent.handler"]
HOLD_SECONDS = 20
Files = dict[str, tuple[bytes, int]]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Made:
    """Ids of what one command created, added the moment the engine returns them."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def container(self, ref: str) -> None:
        with self._lock:
            self.containers.append(ref)

    def undo(self, client: DockerClient) -> None:
        """Remove exactly what was made (a container first, its network after)."""
        for ref in self.containers:
            remove_container(client, ref)
        for ref in self.networks:
            remove_network(client, ref)
        logger.debug("removed what this command made: %d containers, %d networks",
                     len(self.containers), len(self.networks))


def web_env(opts: ClusterOptions) -> dict[str, str]:
    """What makes a container of any image on the shared base a web member: its role, and the
    port its Serf agent advertises (where the load balancer sends requests; when `up` has not
    settled one, web_port 0, the image's own WEBAPP_PORT stands)."""
    port = {"WEBAPP_PORT": str(opts.web_port)} if opts.web_port else {}
    return {"LAYERKIT_ROLE": "web", "LAYERKIT_CLUSTER": opts.name, **port}


def web_spec(opts: ClusterOptions) -> ContainerSpec:
    suffix = secrets.token_hex(3)
    return ContainerSpec(
        image=opts.web_image, name=f"layerkit-{opts.name}-web-{suffix}",
        hostname=f"{opts.name}-web-{suffix}", network=network_name(opts.name),
        aliases=("web",), labels=labels(opts.name, "web"), ports={},
        env={**web_env(opts), "LAYERKIT_JOIN": "lb", "LAYERKIT_SERF_KEYRING": KEYRING_PATH,
             "LAYERKIT_SERF_FORGET": str(opts.forget_after)},
        memory=opts.memory, pids=opts.pids, log_size=opts.log_size, log_files=opts.log_files)


def lb_spec(opts: ClusterOptions) -> ContainerSpec:
    return ContainerSpec(
        image=opts.lb_image, name=f"layerkit-{opts.name}-lb", hostname=f"{opts.name}-lb",
        network=network_name(opts.name), aliases=("lb",), labels=labels(opts.name, "lb"),
        env={"LAYERKIT_JOIN": "web", "LAYERKIT_CLUSTER": opts.name,
             "LAYERKIT_SERF_KEYRING": KEYRING_PATH, "LAYERKIT_HEALTH_PATH": opts.health,
             "LAYERKIT_SERF_FORGET": str(opts.forget_after)},
        # the stats page is for this host only, whatever --bind says
        ports={HTTP_PORT: (opts.bind, opts.port or None),
               STATS_PORT: ("127.0.0.1", opts.stats_port or None)},
        memory=opts.memory, pids=opts.pids, log_size=opts.log_size, log_files=opts.log_files)


def member_files(made: Secrets) -> Files:
    """The key, and the stats password (kept by every member, so that a recreated load
    balancer gets the same one back); both root-only."""
    files = {KEYRING_PATH: (made.keyring, 0o600)}
    if made.password:
        files[PASSWORD_PATH] = (made.password.encode() + b"\n", 0o600)
    return files


def prepare(client: DockerClient, spec: ContainerSpec, files: Files, made: Made | None = None
            ) -> ContainerInfo:
    """Create and hand in the secrets: the key is in place before Serf first runs."""
    container = create_container(client, spec)
    if made is not None:
        made.container(container.id)
    put_files(client, container.id, files)
    return container


def launch(client: DockerClient, spec: ContainerSpec, files: Files, made: Made | None = None
           ) -> ContainerInfo:
    container = prepare(client, spec, files, made)
    start_container(client, container.id)
    return container


def launch_webs(client: DockerClient, opts: ClusterOptions, files: Files, count: int, *,
                lb: ContainerInfo | None = None, expected: int = 0, made: Made | None = None
                ) -> list[str]:
    """All created first, then all started, with the load balancer's changes held until
    `expected` web members are alive: a batch lands in HAProxy at once."""
    batch = lb is not None and count > 1
    if batch:
        tell_handler(client, lb, "--hold", str(HOLD_SECONDS))
    try:
        created = _in_pool(lambda _: prepare(client, web_spec(opts), files, made), range(count))
        _in_pool(lambda c: start_container(client, c.id), created)
        if batch:
            wait_members(client, lb, expected, timeout=HOLD_SECONDS)
    finally:
        if batch:
            tell_handler(client, lb, "--release")
    return [c.name for c in created]


def _in_pool(action: Callable[[T], R], items: range | list[T]) -> list[R]:
    """`action` over `items`, PARALLEL at a time. On an error or Ctrl-C the queued ones are
    cancelled and only those already running are waited for."""
    pool = ThreadPoolExecutor(PARALLEL)
    try:
        return list(pool.map(action, items))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)


def tell_handler(client: DockerClient, lb: ContainerInfo | None, *args: str) -> None:
    """Best effort: a load balancer that is restarting applies each change on its own."""
    if lb is None:
        return
    with contextlib.suppress(EngineError, NotFound):  # NotFound: the exec went with a restart
        exec_in(client, lb.id, [*HANDLER, *args])


def read_secret(client: DockerClient, containers: list[ContainerInfo], path: str) -> bytes | None:
    """A secret file, read back from a member (the load balancer first); None if none has it."""
    ordered = sorted(containers, key=lambda c: c.labels.get(ROLE_LABEL) != "lb")
    for container in ordered:
        try:
            return get_file(client, container.id, path)
        except NotFound:
            continue
    return None
