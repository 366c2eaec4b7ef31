"""The dynamic cluster: one HAProxy and N web apps that find each other through Serf.

Every container and network carries the labels `org.layerkit.project=<name>` and
`org.layerkit.role=<lb|web|network>`; `down` removes by label, a failed or interrupted `up`
removes exactly what it made. Each cluster gets its own gossip key and stats password at `up`;
both are copied into the containers before they start (never in an image, an environment
variable or the output). Options are checked in options.py, containers made in launch.py.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from layerkit.cluster import ports
from layerkit.cluster.launch import (
    PARALLEL,
    Made,
    launch,
    launch_webs,
    lb_spec,
    member_files,
    read_secret,
)
from layerkit.cluster.options import (
    KEYRING_PATH,
    MAX_SCALE,
    PASSWORD_PATH,
    PROJECT_LABEL,
    ROLE_LABEL,
    ClusterOptions,
    Secrets,
    labels,
    network_name,
    new_secrets,
    options_from_labels,
    options_labels,
    validate_name,
    validate_options,
    validate_scale,
    validate_wait,
)
from layerkit.cluster.view import (
    ClusterStatus,
    Endpoints,
    container_row,
    endpoints_of,
    lb_view,
    serving_members,
)
from layerkit.cluster.webcheck import (
    CHECK_SECONDS,
    check_web_image,
    find_web_image,
    web_port_of,
)
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    create_network,
    get_file,
    labelled_containers,
    labelled_networks,
    labelled_volumes,
    remove_container,
    remove_network,
    remove_volume,
    start_container,
    stop_container,
)
from layerkit.engine.images import ImageInfo, find_image
from layerkit.errors import ClusterError, NotFound, UsageError
from layerkit.render import plural

__all__ = [  # the cluster's interface; the option names come from options.py
    "KEYRING_PATH", "MAX_SCALE", "PASSWORD_PATH", "PROJECT_LABEL", "ROLE_LABEL", "ClusterOptions",
    "DownResult", "ScaleResult", "UpResult", "down", "endpoints", "labels", "lb_view",
    "network_name", "new_secrets", "saved_options", "scale", "stats_password", "status", "up",
    "validate_name", "validate_options", "validate_scale", "validate_wait", "wait_ready",
]

logger = logging.getLogger(__name__)


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




def _containers(client: DockerClient, name: str, role: str | None = None
                ) -> list[ContainerInfo]:
    wanted = labels(name, role) if role else {PROJECT_LABEL: name}
    return labelled_containers(client, wanted)


def _require_images(client: DockerClient, opts: ClusterOptions) -> ImageInfo:
    """Both images present (a user's web image pulled if need be); the web image's."""
    found = {}
    for ref in (opts.lb_image, opts.web_image):
        image = (find_web_image(client, ref, ClusterOptions.web_image)
                 if ref == opts.web_image else find_image(client, ref))
        if image is None:
            raise NotFound(f"image {ref} is not in the engine", hint="run `layerkit build`")
        found[ref] = image
    return found[opts.web_image]


def _refuse_existing(client: DockerClient, name: str) -> None:
    if _containers(client, name):
        raise UsageError(f"cluster {name!r} already exists",
                         hint=f"`layerkit scale N --name {name}` or `layerkit down --name {name}`")
    _refuse_leftover_network(client, name)


def _refuse_leftover_network(client: DockerClient, name: str) -> None:
    """Only the network left (a `down` or an `up` was cut short): `up` and `scale` say the
    same thing about it."""
    if labelled_networks(client, {PROJECT_LABEL: name}):
        raise UsageError(f"cluster {name!r} has only its network left",
                         hint=f"`layerkit down --name {name}` removes it; then `layerkit up`")


# --- up / scale / down -------------------------------------------------------------------------

def up(client: DockerClient, opts: ClusterOptions, scale: int, *, wait: float = 60.0,
       check_timeout: float = CHECK_SECONDS,
       on_progress: Callable[[str], None] = lambda _: None) -> UpResult:
    """A network, the load balancer and `scale` web apps; waits until they all serve.

    The web image is checked first (webcheck.py): one that could not serve is refused before
    anything is made."""
    validate_options(opts)
    validate_scale(scale)
    validate_wait(wait)
    started = time.monotonic()
    _refuse_existing(client, opts.name)
    web = _require_images(client, opts)
    ports.require_free(opts.bind, opts.port)
    if opts.stats_port:
        ports.require_free("127.0.0.1", opts.stats_port, "--stats-port")
    opts = replace(opts, port=opts.port or ports.choose_free(opts.bind),
                   stats_port=opts.stats_port or ports.choose_free("127.0.0.1"))
    on_progress(f"the check of {opts.web_image}")
    opts = replace(opts, web_port=check_web_image(client, opts, web, timeout=check_timeout))
    secret = new_secrets()
    made = Made()
    try:
        network = create_network(client, network_name(opts.name), {
            **labels(opts.name, "network"), **options_labels(opts)})
        made.networks.append(network.id)
        on_progress("load balancer")
        lb = launch(client, lb_spec(opts), member_files(secret), made)
        on_progress(plural(scale, "web app"))
        launch_webs(client, opts, member_files(secret), scale, lb=lb, expected=scale, made=made)
    except BaseException:
        made.undo(client)  # no half cluster left behind, and nothing that was not ours
        raise
    ready = wait_ready(client, opts.name, scale, timeout=wait) if wait > 0 else False
    return UpResult(opts.name, endpoints(client, opts.name), scale, ready,
                    time.monotonic() - started)


def scale(client: DockerClient, name: str, n: int, *, wait: float = 60.0,
          opts: ClusterOptions | None = None) -> ScaleResult:
    """Exactly `n` running web apps: idempotent; replaces what was removed or stopped."""
    validate_name(name)
    validate_scale(n)
    validate_wait(wait)
    opts = opts or saved_options(client, name)
    started = time.monotonic()
    every = _containers(client, name)
    if not every:
        _refuse_leftover_network(client, name)
        raise NotFound(f"no cluster named {name!r}", hint=f"`layerkit up --name {name}`")
    webs = [c for c in every if c.labels.get(ROLE_LABEL) == "web"]
    dead = [c for c in webs if not c.running]
    alive = sorted((c for c in webs if c.running), key=lambda c: c.created)
    extra = alive[n:] if len(alive) > n else []
    if n > len(alive):
        # new web apps come from the image as it is now: checked again unless a running web
        # app was made from it (rebuilt since `up`, it is checked again)
        web = _require_images(client, opts)
        port = (web_port_of(web, opts.web_image, opts.web_port)
                if any(c.image == web.id for c in alive) else check_web_image(client, opts, web))
        opts = replace(opts, web_port=port)
    secret = _secrets(client, every)
    _restore_lb(client, name, every, secret)
    with ThreadPoolExecutor(PARALLEL) as pool:
        # a stop is a graceful Serf leave: HAProxy drops the backend before it goes away
        list(pool.map(lambda c: stop_container(client, c.id), extra))
        list(pool.map(lambda c: remove_container(client, c.id), dead + extra))
    started_names = launch_webs(client, opts, member_files(secret), max(0, n - len(alive)),
                                lb=_lb(client, name), expected=n)
    ready = wait_ready(client, name, n, timeout=wait) if wait > 0 else False
    return ScaleResult(name, len(alive), n, tuple(started_names),
                       tuple(c.name for c in dead + extra), ready,
                       time.monotonic() - started)


def _secrets(client: DockerClient, containers: list[ContainerInfo]) -> Secrets:
    """The cluster's key and stats password, read back from its members."""
    keyring = read_secret(client, containers, KEYRING_PATH)
    if keyring is None:
        raise ClusterError("no container of the cluster holds its gossip key",
                           hint="`layerkit down` and `layerkit up` again")
    password = read_secret(client, containers, PASSWORD_PATH)
    return Secrets(keyring, password.decode().strip() if password else None)


def _restore_lb(client: DockerClient, name: str, every: list[ContainerInfo], secret: Secrets
                ) -> None:
    """Start a stopped load balancer; recreate one removed behind our back, published where
    `up` published it and with the same stats password (kept by every member)."""
    lbs = [c for c in every if c.labels.get(ROLE_LABEL) == "lb"]
    if lbs:
        if not lbs[0].running:
            start_container(client, lbs[0].id)
        return
    if secret.password is None:
        logger.warning("no member of cluster %s holds the stats password: the recreated load "
                       "balancer has a new one (`layerkit status --stats-password`)", name)
        secret = Secrets(secret.keyring, secrets.token_urlsafe(18))
    launch(client, lb_spec(saved_options(client, name)), member_files(secret))


def saved_options(client: DockerClient, name: str) -> ClusterOptions:
    """The options `up` kept in the network's labels; defaults for any it did not keep."""
    nets = labelled_networks(client, labels(name, "network"))
    return options_from_labels(name, nets[0].labels if nets else {})


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
    """Poll until HAProxy serves exactly the `n` running web apps, or `timeout` seconds pass.

    A backend that vanished without a leave (removed, killed) may linger DOWN until Serf
    declares it failed; it takes no traffic, so it does not count against readiness. Until
    its health checks fail it may still show UP, and its address may already be a new web
    app's (the engine hands freed addresses out again): so each UP server is matched to a
    running web app by address and by name (a member's name is its container's hostname and a
    suffix), not counted, or a replaced app would make the cluster look ready too early.
    """
    deadline = time.monotonic() + timeout
    while True:
        live = _web_members(client, name)
        view = lb_view(client, _lb(client, name)) if len(live) == n else None
        if view is not None and serving_members(view) == live:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def _web_members(client: DockerClient, name: str) -> set[tuple[str, str]]:
    """(hostname, address) of each running web app."""
    network = network_name(name)
    return {(c.hostname, c.addresses.get(network, "")) for c in _containers(client, name, "web")
            if c.status == "running" and c.addresses.get(network)}


def status(client: DockerClient, name: str) -> ClusterStatus:
    validate_name(name)
    containers = _containers(client, name)
    if not containers:
        raise NotFound(f"no cluster named {name!r}", hint=f"`layerkit up --name {name}`")
    rows = tuple(sorted((container_row(c, network_name(name), ROLE_LABEL) for c in containers),
                        key=lambda r: (r.role != "lb", r.name)))
    lb = next((c for c in containers if c.labels.get(ROLE_LABEL) == "lb"), None)
    view = lb_view(client, lb)
    kept = saved_options(client, name)
    return ClusterStatus(name, endpoints_of(lb), rows, view.members if view else (),
                         view.servers if view else (), bool(view and view.haproxy),
                         kept.web_image, kept.web_port, kept.health)


def stats_password(client: DockerClient, name: str) -> str:
    """The stats page's password, read back from the load balancer (printed only on request)."""
    validate_name(name)
    lb = _lb(client, name)
    if lb is None:
        raise NotFound(f"cluster {name!r} has no load balancer",
                       hint=f"`layerkit scale N --name {name}`")
    return get_file(client, lb.id, PASSWORD_PATH).decode().strip()
