"""The dynamic cluster: one HAProxy and N web apps that find each other through Serf.

Everything goes through engine.py. Every container and network carries the labels
`org.layerkit.project=<name>` and `org.layerkit.role=<lb|web|network>`; `down` removes by label.
Each cluster gets its own gossip key and stats password at `up`; both are copied into the
containers before they start (never in an image, an environment variable or the output).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from layerkit import __version__
from layerkit.agent.serfagent import FORGET_SECONDS, MAX_FORGET_SECONDS
from layerkit.cluster.view import (
    HTTP_PORT,
    STATS_PORT,
    ClusterStatus,
    Endpoints,
    container_row,
    endpoints_of,
    lb_view,
    serving_addresses,
    wait_members,
)
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    ContainerSpec,
    create_container,
    create_network,
    exec_in,
    get_file,
    labelled_containers,
    labelled_networks,
    labelled_volumes,
    put_files,
    remove_container,
    remove_network,
    remove_volume,
    start_container,
    stop_container,
)
from layerkit.engine.images import find_image
from layerkit.errors import ClusterError, EngineError, NotFound, UsageError

PROJECT_LABEL = "org.layerkit.project"
ROLE_LABEL = "org.layerkit.role"
# on the network, for `scale` and restores: what `up` was told
BIND_LABEL, PORT_LABEL = "org.layerkit.bind", "org.layerkit.port"
FORGET_LABEL = "org.layerkit.serf-forget"
LB_IMAGE_LABEL, WEB_IMAGE_LABEL = "org.layerkit.lb-image", "org.layerkit.web-image"
KEYRING_PATH = "/etc/layerkit/serf-keyring.json"
PASSWORD_PATH = "/etc/layerkit/stats-password"  # noqa: S105 - a path, not a password
MAX_SCALE = 64
PARALLEL = 4  # engine calls at once: enough to overlap, few enough for two cores
HANDLER = ["python3", "-m", "layerkit.agent.handler"]
HOLD_SECONDS = 20
_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,23}")


@dataclass(frozen=True)
class ClusterOptions:
    name: str = "demo"
    bind: str = "127.0.0.1"
    port: int = 8080  # 0: the engine picks a free one
    stats_port: int = 0
    lb_image: str = f"layerkit/haproxy:{__version__}"
    web_image: str = f"layerkit/webapp:{__version__}"
    forget_after: int = FORGET_SECONDS  # until Serf forgets a failed or left member (+ <= 15 s)


@dataclass(frozen=True)
class UpResult:
    name: str
    endpoints: Endpoints
    web: int
    ready: bool
    seconds: float


@dataclass(frozen=True)
class ScaleResult:
    name: str
    before: int
    after: int
    started: tuple[str, ...]
    removed: tuple[str, ...]
    ready: bool
    seconds: float


@dataclass(frozen=True)
class DownResult:
    name: str
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    volumes: tuple[str, ...]


@dataclass(frozen=True)
class Secrets:
    keyring: bytes
    password: str | None


def validate_options(opts: ClusterOptions) -> None:
    validate_name(opts.name)
    try:
        ipaddress.ip_address(opts.bind)
    except ValueError:
        raise UsageError(f"--bind {opts.bind!r} is not an IP address") from None
    for flag, port in (("--port", opts.port), ("--stats-port", opts.stats_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} {port} is not a port number (0 = any free port)")
    if not 0 < opts.forget_after <= MAX_FORGET_SECONDS:
        raise UsageError(f"--forget-after {opts.forget_after} must be 1 to "
                         f"{MAX_FORGET_SECONDS} seconds")


def validate_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"cluster name {name!r} must be 1-24 of a-z, 0-9, '-', "
                         "starting with a letter")


def validate_scale(n: int) -> None:
    if not 0 <= n <= MAX_SCALE:
        raise UsageError(f"scale {n} is out of range 0..{MAX_SCALE}")


def labels(name: str, role: str) -> dict[str, str]:
    return {PROJECT_LABEL: name, ROLE_LABEL: role}


def network_name(name: str) -> str:
    return f"layerkit-{name}"


def new_secrets() -> Secrets:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return Secrets(json.dumps([key]).encode(), secrets.token_urlsafe(18))


# --- containers ------------------------------------------------------------------------------

def _web_spec(opts: ClusterOptions) -> ContainerSpec:
    suffix = secrets.token_hex(3)
    return ContainerSpec(
        image=opts.web_image, name=f"layerkit-{opts.name}-web-{suffix}",
        hostname=f"{opts.name}-web-{suffix}", network=network_name(opts.name),
        aliases=("web",), labels=labels(opts.name, "web"), ports={},
        env={"LAYERKIT_JOIN": "lb", "LAYERKIT_CLUSTER": opts.name,
             "LAYERKIT_SERF_KEYRING": KEYRING_PATH,
             "LAYERKIT_SERF_FORGET": str(opts.forget_after)})


def _lb_spec(opts: ClusterOptions) -> ContainerSpec:
    return ContainerSpec(
        image=opts.lb_image, name=f"layerkit-{opts.name}-lb", hostname=f"{opts.name}-lb",
        network=network_name(opts.name), aliases=("lb",), labels=labels(opts.name, "lb"),
        env={"LAYERKIT_JOIN": "web", "LAYERKIT_CLUSTER": opts.name,
             "LAYERKIT_SERF_KEYRING": KEYRING_PATH,
             "LAYERKIT_SERF_FORGET": str(opts.forget_after)},
        # the stats page is for this host only, whatever --bind says
        ports={HTTP_PORT: (opts.bind, opts.port or None),
               STATS_PORT: ("127.0.0.1", opts.stats_port or None)})


def _prepare(client: DockerClient, spec: ContainerSpec, files: dict[str, tuple[bytes, int]]
             ) -> ContainerInfo:
    """Create and hand in the secrets: the key is in place before Serf first runs."""
    container = create_container(client, spec)
    put_files(client, container.id, files)
    return container


def _launch(client: DockerClient, spec: ContainerSpec, files: dict[str, tuple[bytes, int]]
            ) -> ContainerInfo:
    container = _prepare(client, spec, files)
    start_container(client, container.id)
    return container


def _launch_webs(client: DockerClient, opts: ClusterOptions, keyring: bytes, count: int, *,
                 lb: ContainerInfo | None = None, expected: int = 0) -> list[str]:
    """All created first, then all started, with the load balancer's reloads held until
    `expected` web members are alive: a batch costs one reload, not one per join."""
    files = {KEYRING_PATH: (keyring, 0o600)}
    batch = lb is not None and count > 1
    if batch:
        _tell_handler(client, lb, "--hold", str(HOLD_SECONDS))
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            created = list(pool.map(lambda _: _prepare(client, _web_spec(opts), files),
                                    range(count)))
            list(pool.map(lambda c: start_container(client, c.id), created))
        if batch:
            wait_members(client, lb, expected, timeout=HOLD_SECONDS)
    finally:
        if batch:
            _tell_handler(client, lb, "--release")
    return [c.name for c in created]


def _tell_handler(client: DockerClient, lb: ContainerInfo | None, *args: str) -> None:
    """Best effort: a load balancer that is restarting just reloads once per change."""
    if lb is None:
        return
    with contextlib.suppress(EngineError):
        exec_in(client, lb.id, [*HANDLER, *args])


def _containers(client: DockerClient, name: str, role: str | None = None
                ) -> list[ContainerInfo]:
    wanted = labels(name, role) if role else {PROJECT_LABEL: name}
    return labelled_containers(client, wanted)


def _require_images(client: DockerClient, opts: ClusterOptions) -> None:
    for ref in (opts.lb_image, opts.web_image):
        if find_image(client, ref) is None:
            raise NotFound(f"image {ref} is not in the engine", hint="run `layerkit build`")


def _require_free_port(bind: str, port: int) -> None:
    """Fail early with a hint instead of a half-created cluster and an engine message."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError:
            raise UsageError(f"{bind}:{port} is already in use",
                             hint="choose another with --port (0 = any free port)") from None


# --- up / scale / down -------------------------------------------------------------------------

def up(client: DockerClient, opts: ClusterOptions, scale: int, *, wait: float = 60.0,
       on_progress: Callable[[str], None] = lambda _: None) -> UpResult:
    """A network, the load balancer and `scale` web apps; waits until they all serve."""
    validate_options(opts)
    validate_scale(scale)
    started = time.monotonic()
    if _containers(client, opts.name) or labelled_networks(client, {PROJECT_LABEL: opts.name}):
        raise UsageError(f"cluster {opts.name!r} already exists",
                         hint=f"`layerkit scale N --name {opts.name}` or "
                              f"`layerkit down --name {opts.name}`")
    _require_images(client, opts)
    _require_free_port(opts.bind, opts.port)
    made = new_secrets()
    try:
        create_network(client, network_name(opts.name), {
            **labels(opts.name, "network"), BIND_LABEL: opts.bind, PORT_LABEL: str(opts.port),
            FORGET_LABEL: str(opts.forget_after), LB_IMAGE_LABEL: opts.lb_image,
            WEB_IMAGE_LABEL: opts.web_image})
        on_progress("load balancer")
        lb = _launch(client, _lb_spec(opts), _lb_files(made))
        on_progress(f"{scale} web apps")
        _launch_webs(client, opts, made.keyring, scale, lb=lb, expected=scale)
    except BaseException:
        down(client, opts.name)  # no half cluster left behind
        raise
    ready = wait_ready(client, opts.name, scale, timeout=wait) if wait > 0 else False
    return UpResult(opts.name, endpoints(client, opts.name), scale, ready,
                    time.monotonic() - started)


def _lb_files(made: Secrets) -> dict[str, tuple[bytes, int]]:
    files = {KEYRING_PATH: (made.keyring, 0o600)}
    if made.password:
        files[PASSWORD_PATH] = (made.password.encode() + b"\n", 0o600)
    return files


def scale(client: DockerClient, name: str, n: int, *, wait: float = 60.0,
          opts: ClusterOptions | None = None) -> ScaleResult:
    """Exactly `n` running web apps: idempotent; replaces what was removed or stopped."""
    validate_name(name)
    validate_scale(n)
    opts = opts or _saved_options(client, name)
    started = time.monotonic()
    every = _containers(client, name)
    if not every:
        raise NotFound(f"no cluster named {name!r}", hint=f"`layerkit up --name {name}`")
    keyring = _keyring(client, every)
    _restore_lb(client, name, every, keyring)
    webs = [c for c in every if c.labels.get(ROLE_LABEL) == "web"]
    dead = [c for c in webs if not c.running]
    alive = sorted((c for c in webs if c.running), key=lambda c: c.created)
    extra = alive[n:] if len(alive) > n else []
    with ThreadPoolExecutor(PARALLEL) as pool:
        # a stop is a graceful Serf leave: HAProxy drops the backend before it goes away
        list(pool.map(lambda c: stop_container(client, c.id), extra))
        list(pool.map(lambda c: remove_container(client, c.id), dead + extra))
    started_names = _launch_webs(client, opts, keyring, max(0, n - len(alive)),
                                 lb=_lb(client, name), expected=n)
    ready = wait_ready(client, name, n, timeout=wait) if wait > 0 else False
    return ScaleResult(name, len(alive), n, tuple(started_names),
                       tuple(c.name for c in dead + extra), ready,
                       time.monotonic() - started)


def _keyring(client: DockerClient, containers: list[ContainerInfo]) -> bytes:
    """The cluster's key, read back from a member (the load balancer first)."""
    ordered = sorted(containers, key=lambda c: c.labels.get(ROLE_LABEL) != "lb")
    for container in ordered:
        try:
            return get_file(client, container.id, KEYRING_PATH)
        except NotFound:
            continue
    raise ClusterError("no container of the cluster holds its gossip key",
                       hint="`layerkit down` and `layerkit up` again")


def _restore_lb(client: DockerClient, name: str, every: list[ContainerInfo], keyring: bytes
                ) -> None:
    """Start a stopped load balancer; recreate one removed behind our back, published where
    `up` published it (kept in the network's labels)."""
    lbs = [c for c in every if c.labels.get(ROLE_LABEL) == "lb"]
    if lbs:
        if not lbs[0].running:
            start_container(client, lbs[0].id)
        return
    opts = _saved_options(client, name)
    _launch(client, _lb_spec(opts), _lb_files(Secrets(keyring, secrets.token_urlsafe(18))))


def _saved_options(client: DockerClient, name: str) -> ClusterOptions:
    """The options `up` kept in the network's labels; defaults for any it did not keep."""
    nets = labelled_networks(client, labels(name, "network"))
    where = nets[0].labels if nets else {}
    port = str(where.get(PORT_LABEL, ""))
    forget = str(where.get(FORGET_LABEL, ""))
    seconds = int(forget) if forget.isascii() and forget.isdigit() else 0
    return ClusterOptions(name=name, bind=str(where.get(BIND_LABEL) or "127.0.0.1"),
                          port=int(port) if port.isdigit() else 0,
                          lb_image=where.get(LB_IMAGE_LABEL) or ClusterOptions.lb_image,
                          web_image=where.get(WEB_IMAGE_LABEL) or ClusterOptions.web_image,
                          forget_after=seconds if 0 < seconds <= MAX_FORGET_SECONDS
                          else ClusterOptions.forget_after)


def down(client: DockerClient, name: str) -> DownResult:
    """Remove every container, network and volume labelled with the cluster's name."""
    validate_name(name)
    project = {PROJECT_LABEL: name}
    containers = labelled_containers(client, project)
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(lambda c: remove_container(client, c.id), containers))
    networks = labelled_networks(client, project)
    for network in networks:
        remove_network(client, network.id)
    volumes = labelled_volumes(client, project)
    for volume in volumes:
        remove_volume(client, volume.name)
    return DownResult(name, tuple(c.name for c in containers),
                      tuple(n.name for n in networks), tuple(v.name for v in volumes))






# --- readiness, endpoints, status -------------------------------------------------------------

def _lb(client: DockerClient, name: str) -> ContainerInfo | None:
    lbs = _containers(client, name, "lb")
    return lbs[0] if lbs else None


def endpoints(client: DockerClient, name: str) -> Endpoints:
    return endpoints_of(_lb(client, name))


def wait_ready(client: DockerClient, name: str, n: int, *, timeout: float) -> bool:
    """Poll until HAProxy serves exactly the `n` running web apps (their addresses UP, no
    other), or `timeout` seconds pass.

    A backend that vanished without a leave (removed, killed) may linger DOWN until Serf
    declares it failed; it takes no traffic, so it does not count against readiness. Until
    its health checks fail it may still show UP: so servers are matched by address, not
    counted, or a replaced app would make the cluster look ready before the new one serves.
    """
    deadline = time.monotonic() + timeout
    while True:
        live = _web_addresses(client, name)
        view = lb_view(client, _lb(client, name)) if len(live) == n else None
        if view is not None and serving_addresses(view) == live:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def _web_addresses(client: DockerClient, name: str) -> set[str]:
    network = network_name(name)
    rows = (container_row(c, network, ROLE_LABEL) for c in _containers(client, name, "web"))
    return {row.address for row in rows if row.state == "running" and row.address}


def status(client: DockerClient, name: str) -> ClusterStatus:
    validate_name(name)
    containers = _containers(client, name)
    if not containers:
        raise NotFound(f"no cluster named {name!r}", hint=f"`layerkit up --name {name}`")
    rows = tuple(sorted((container_row(c, network_name(name), ROLE_LABEL) for c in containers),
                        key=lambda r: (r.role != "lb", r.name)))
    lb = next((c for c in containers if c.labels.get(ROLE_LABEL) == "lb"), None)
    view = lb_view(client, lb)
    return ClusterStatus(name, endpoints_of(lb), rows, view.members if view else (),
                         view.servers if view else (), bool(view and view.haproxy))


def stats_password(client: DockerClient, name: str) -> str:
    """The stats page's password, read back from the load balancer (printed only on request)."""
    validate_name(name)
    lb = _lb(client, name)
    if lb is None:
        raise NotFound(f"cluster {name!r} has no load balancer",
                       hint=f"`layerkit scale N --name {name}`")
    return get_file(client, lb.id, PASSWORD_PATH).decode().strip()
