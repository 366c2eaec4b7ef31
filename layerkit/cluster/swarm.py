"""The cluster on Docker Swarm: web apps as a replicated service, K load balancers on different
nodes (each publishing the cluster's port on its node), and with a floating address, keepalived
on every node's own network in front of them.

Services resolve peers by DNS (`endpoint_mode: dnsrr`, `tasks.<service>`), so nothing needs
IPVS; a kernel with it can take `vip`. The gossip key and the stats password are Swarm secrets of
the cluster's, mounted as files; every service, secret and network carries the labels
`org.layerkit.project` and `org.layerkit.role`, and `down` removes by them.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from layerkit import __version__
from layerkit.agent.members import DEFAULT_HEALTH
from layerkit.agent.serfagent import FORGET_SECONDS
from layerkit.cluster.cluster import (
    PROJECT_LABEL,
    ROLE_LABEL,
    labels,
    network_name,
    validate_name,
    validate_scale,
)
from layerkit.cluster.launch import web_env
from layerkit.cluster.options import ClusterOptions, size_bytes, validate_limits, validate_web
from layerkit.cluster.registry import push_all, validate_registry
from layerkit.cluster.swarmview import SwarmStatus, lb_endpoints, read_status, serving
from layerkit.cluster.swarmvip import (
    VRID_LABEL,
    check_vip_on_nodes,
    free_vrid,
    taken_vrids,
    vip_interface,
)
from layerkit.cluster.webcheck import (
    CHECK_SECONDS,
    check_web_image,
    find_web_image,
)
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import labelled_containers, labelled_networks, remove_network
from layerkit.engine.images import ImageInfo, find_image
from layerkit.engine.swarm import (
    PortSpec,
    SecretRef,
    ServiceRequest,
    SwarmNode,
    SwarmService,
    TaskLimits,
    create_overlay,
    create_secret,
    create_service,
    labelled_secrets,
    labelled_services,
    list_nodes,
    remove_secret,
    remove_service,
    scale_service,
    service_tasks,
    swarm_state,
    tasks_of,
)
from layerkit.errors import ClusterError, EngineError, NotFound, UsageError
from layerkit.render import plural

logger = logging.getLogger(__name__)

MODE_LABEL = "org.layerkit.mode"
PORT_LABEL, VIP_LABEL = "org.layerkit.port", "org.layerkit.vip"
KEYRING_SECRET, PASSWORD_SECRET = "serf-keyring", "stats-password"  # file names in /run/secrets
HTTP_TARGET = 80
MAX_LB = 16


@dataclass(frozen=True)
class SwarmOptions:
    name: str = "demo"
    port: int = 8080           # published on every load balancer's node (host mode)
    lb: int = 2
    vip: str | None = None     # ADDRESS[/PREFIX] on the nodes' network
    registry: str | None = None  # HOST:PORT every node pulls from; images pinned by digest
    endpoint_mode: str = "dnsrr"  # vip where the kernels have IPVS
    forget_after: int = FORGET_SECONDS
    lb_image: str = f"layerkit/haproxy:{__version__}"
    web_image: str = f"layerkit/webapp:{__version__}"
    web_port: int = 0          # 0: the image's own (cluster.webcheck.web_port_of)
    health: str = DEFAULT_HEALTH
    vip_image: str = f"layerkit/keepalived:{__version__}"
    memory: str = "256m"       # per task, as on one engine (cluster.options)
    pids: int = 256
    log_size: str = "10m"
    log_files: int = 3


@dataclass(frozen=True)
class SwarmUpResult:
    name: str
    urls: tuple[str, ...]
    web: int
    lb: int
    vip: str | None
    ready: bool
    seconds: float


@dataclass(frozen=True)
class SwarmScaleResult:
    name: str
    before: int
    after: int
    ready: bool
    seconds: float


@dataclass(frozen=True)
class SwarmDownResult:
    name: str
    services: tuple[str, ...]
    secrets: tuple[str, ...]
    networks: tuple[str, ...]


def service_name(name: str, role: str) -> str:
    return f"layerkit-{name}-{role}"


def validate_options(opts: SwarmOptions) -> None:
    validate_name(opts.name)
    if not 0 < opts.port < 65536:
        raise UsageError(f"--port {opts.port}: a Swarm cluster publishes a fixed port, 1-65535")
    if not 1 <= opts.lb <= MAX_LB:
        raise UsageError(f"--lb {opts.lb} is out of range 1..{MAX_LB}")
    if opts.endpoint_mode not in ("dnsrr", "vip"):
        raise UsageError(f"endpoint mode {opts.endpoint_mode!r} is not dnsrr or vip")
    if opts.vip is not None:
        vip_interface(opts.vip)
    if opts.registry is not None:
        validate_registry(opts.registry)
    validate_limits(opts.memory, opts.pids, opts.log_size, opts.log_files)
    validate_web(opts.web_port, opts.health)


def _ready_nodes(client: DockerClient) -> tuple[SwarmNode, ...]:
    return tuple(n for n in list_nodes(client) if n.state == "ready" and n.availability == "active")


def require_manager(client: DockerClient) -> None:
    state = swarm_state(client)
    if not state.manager:
        raise UsageError(f"the engine is not a Swarm manager (swarm {state.state})",
                         hint="`docker swarm init`, or DOCKER_HOST of a manager")


def find_services(client: DockerClient, name: str) -> dict[str, SwarmService]:
    """The cluster's services by role; empty when the engine is no manager or has none."""
    if not swarm_state(client).manager:
        return {}
    found = labelled_services(client, {PROJECT_LABEL: name})
    return {s.labels.get(ROLE_LABEL, ""): s for s in found}


def _check_free(client: DockerClient, name: str) -> None:
    if find_services(client, name):
        raise UsageError(f"Swarm cluster {name!r} already exists",
                         hint=f"`layerkit scale N --name {name}` or `layerkit down --name {name}`")
    if labelled_containers(client, {PROJECT_LABEL: name}) or labelled_networks(
            client, {PROJECT_LABEL: name}):
        raise UsageError(f"cluster name {name!r} is already used by a single-engine cluster",
                         hint="choose another --name")


def _check_images(client: DockerClient, opts: SwarmOptions) -> ImageInfo:
    """Every image on the manager (a user's web image pulled if need be); the web image's."""
    refs = [opts.lb_image, opts.web_image] + ([opts.vip_image] if opts.vip else [])
    found = {}
    for ref in refs:
        image = (find_web_image(client, ref, SwarmOptions.web_image)
                 if ref == opts.web_image else find_image(client, ref))
        if image is None:
            raise NotFound(f"image {ref} is not on the manager",
                           hint="run `layerkit build`, and `layerkit push --registry` for the "
                                "other nodes")
        found[ref] = image
    return found[opts.web_image]


def _as_web_member(opts: SwarmOptions) -> ClusterOptions:
    """The options a web app is checked and made with, as on one engine."""
    return ClusterOptions(name=opts.name, web_image=opts.web_image, web_port=opts.web_port,
                          health=opts.health, memory=opts.memory, pids=opts.pids,
                          log_size=opts.log_size, log_files=opts.log_files)


# --- up / scale / down -------------------------------------------------------------------------

def up(client: DockerClient, opts: SwarmOptions, scale: int, *, wait: float = 60.0,
       check_timeout: float = CHECK_SECONDS,
       on_progress: Callable[[str], None] = lambda _: None) -> SwarmUpResult:
    """Secrets, an overlay network and the services; waits until every load balancer serves
    every web app."""
    validate_options(opts)
    validate_scale(scale)
    started = time.monotonic()
    require_manager(client)
    nodes = _ready_nodes(client)
    if opts.lb > len(nodes):
        raise UsageError(f"--lb {opts.lb} is more than the {len(nodes)} active nodes",
                         hint="each load balancer runs on a node of its own")
    if opts.vip:
        check_vip_on_nodes(opts.vip, nodes)
    _check_free(client, opts.name)
    web = _check_images(client, opts)
    on_progress(f"the check of {opts.web_image}")
    opts = replace(opts, web_port=check_web_image(client, _as_web_member(opts), web,
                                                  timeout=check_timeout))
    if opts.registry:
        opts = _pinned(client, opts, opts.registry, on_progress)
    try:
        _create(client, opts, scale, on_progress)
    except BaseException:
        down(client, opts.name)  # nothing half-created left behind
        raise
    ready = wait_ready(client, opts.name, scale, timeout=wait) if wait > 0 else False
    return SwarmUpResult(opts.name, urls(client, opts.name), scale, opts.lb,
                         str(vip_interface(opts.vip).ip) if opts.vip else None, ready,
                         time.monotonic() - started)


def _pinned(client: DockerClient, opts: SwarmOptions, registry: str,
            on_progress: Callable[[str], None]) -> SwarmOptions:
    """The images pushed to the registry, and the options naming them there by digest."""
    refs = [opts.lb_image, opts.web_image] + ([opts.vip_image] if opts.vip else [])
    pinned = {p.local: p.pinned for p in push_all(client, registry, refs,
                                                   on_progress=on_progress)}
    return replace(opts, lb_image=pinned[opts.lb_image], web_image=pinned[opts.web_image],
                   vip_image=pinned.get(opts.vip_image, opts.vip_image))


def _create(client: DockerClient, opts: SwarmOptions, scale: int,
            on_progress: Callable[[str], None]) -> None:
    tag = secrets.token_hex(3)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    keyring = create_secret(client, f"layerkit-{opts.name}-keyring-{tag}",
                            json.dumps([key]).encode(), labels(opts.name, "secret"))
    password = create_secret(client, f"layerkit-{opts.name}-password-{tag}",
                             secrets.token_urlsafe(18).encode(), labels(opts.name, "secret"))
    net = network_name(opts.name)
    subnet = create_overlay(client, net, {**labels(opts.name, "network"), MODE_LABEL: "swarm"})
    member = {"LAYERKIT_CLUSTER": opts.name, "LAYERKIT_SERF_ADVERTISE_NET": subnet,
              "LAYERKIT_SERF_KEYRING": f"/run/secrets/{KEYRING_SECRET}",
              "LAYERKIT_SERF_FORGET": str(opts.forget_after)}
    key_ref = SecretRef(keyring.secret_id, keyring.secret_name, KEYRING_SECRET)
    on_progress(plural(scale, "web app"))
    limits = TaskLimits(size_bytes(opts.memory), opts.pids, opts.log_size, opts.log_files)
    create_service(client, ServiceRequest(
        limits=limits, name=service_name(opts.name, "web"), image=opts.web_image,
        labels=labels(opts.name, "web"), replicas=scale, networks=(net,),
        endpoint_mode=opts.endpoint_mode, secrets=(key_ref,),
        env={**member, **web_env(_as_web_member(opts)),
             "LAYERKIT_JOIN": f"tasks.{service_name(opts.name, 'lb')}"}))
    on_progress(plural(opts.lb, "load balancer"))
    create_service(client, ServiceRequest(
        limits=limits, name=service_name(opts.name, "lb"), image=opts.lb_image,
        labels={**labels(opts.name, "lb"), PORT_LABEL: str(opts.port),
                **({VIP_LABEL: opts.vip} if opts.vip else {})},
        replicas=opts.lb, max_per_node=1, networks=(net,), endpoint_mode=opts.endpoint_mode,
        ports=(PortSpec(HTTP_TARGET, opts.port, "host"),),
        secrets=(key_ref, SecretRef(password.secret_id, password.secret_name, PASSWORD_SECRET)),
        env={**member, "LAYERKIT_HEALTH_PATH": opts.health,
             "LAYERKIT_JOIN": f"tasks.{service_name(opts.name, 'web')}"}))
    if opts.vip:
        on_progress(f"the floating address {opts.vip}")
        router = free_vrid(opts.name, taken_vrids(client))
        create_service(client, ServiceRequest(
            limits=limits, name=service_name(opts.name, "vip"), image=opts.vip_image,
            labels={**labels(opts.name, "vip"), VRID_LABEL: str(router)}, replicas=None,
            networks=("host",),
            cap_add=("CAP_NET_ADMIN", "CAP_NET_RAW"),
            env={"LAYERKIT_VIP": vip_interface(opts.vip).with_prefixlen,
                 "LAYERKIT_VRID": str(router),
                 "LAYERKIT_CHECK_PORT": str(opts.port)}))


def scale(client: DockerClient, name: str, n: int, *, wait: float = 60.0) -> SwarmScaleResult:
    """The web service's replicas set to `n`; Swarm starts or stops the difference."""
    validate_name(name)
    validate_scale(n)
    started = time.monotonic()
    web = find_services(client, name).get("web")
    if web is None:
        raise NotFound(f"no Swarm cluster named {name!r}",
                       hint=f"`layerkit up --swarm --name {name}`")
    scale_service(client, web.id, n)
    ready = wait_ready(client, name, n, timeout=wait) if wait > 0 else False
    return SwarmScaleResult(name, web.replicas or 0, n, ready, time.monotonic() - started)


def down(client: DockerClient, name: str, *, timeout: float = 60.0) -> SwarmDownResult:
    """Services first, then (once their tasks are gone) the overlay network, then secrets."""
    validate_name(name)
    project = {PROJECT_LABEL: name}
    services = labelled_services(client, project) if swarm_state(client).manager else ()
    for service in services:
        remove_service(client, service.id)
    _wait_tasks_gone(client, services, time.monotonic() + timeout)
    networks = _remove_networks(client, project, time.monotonic() + timeout)
    removed = labelled_secrets(client, project) if swarm_state(client).manager else ()
    for secret in removed:
        remove_secret(client, secret.secret_id)
    return SwarmDownResult(name, tuple(s.name for s in services),
                           tuple(s.secret_name for s in removed), networks)


def _wait_tasks_gone(client: DockerClient, services: tuple[SwarmService, ...], deadline: float
                     ) -> None:
    """The manager forgets a removed service's tasks once their nodes report them stopped
    and removed: then no node holds a container of the cluster any more."""
    while tasks_of(client, {s.id for s in services}):
        if time.monotonic() >= deadline:
            raise ClusterError("the cluster's tasks are still stopping on their nodes",
                               hint="run `layerkit down` again")
        time.sleep(0.5)


def _remove_networks(client: DockerClient, project: dict[str, str], deadline: float
                     ) -> tuple[str, ...]:
    """A network is removable once the last task on it is gone, seconds after its service."""
    names: list[str] = []
    while True:
        pending = [n for n in labelled_networks(client, project)
                   if n.labels.get(MODE_LABEL) == "swarm"]
        for network in pending:
            try:
                remove_network(client, network.id)
                names.append(network.name)
            except EngineError as exc:
                if time.monotonic() >= deadline:
                    raise ClusterError(f"network {network.name} still in use: {exc.message}",
                                       hint="run `layerkit down` again") from None
        if not pending:
            return tuple(names)
        time.sleep(0.5)


# --- readiness and status -------------------------------------------------------------------

def urls(client: DockerClient, name: str) -> tuple[str, ...]:
    """The floating address's URL when there is one, else one per load balancer's node."""
    services = find_services(client, name)
    lb = services.get("lb")
    if lb is None:
        return ()
    port = lb.labels.get(PORT_LABEL, "80")
    vip = lb.labels.get(VIP_LABEL)
    if vip:
        return (f"http://{vip_interface(vip).ip}:{port}/",)
    return tuple(f"http://{address}:{port}/" for address in lb_endpoints(client, lb.id))


def wait_ready(client: DockerClient, name: str, n: int, *, timeout: float) -> bool:
    """Until every load balancer's node serves exactly the running web tasks' addresses (and
    the floating address, if any, too), or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        services = find_services(client, name)
        web, lb = services.get("web"), services.get("lb")
        if web is not None and lb is not None:
            live = {a for t in service_tasks(client, web.id) if t.state == "running"
                    for a in t.addresses}
            port = lb.labels.get(PORT_LABEL, "80")
            targets = [*lb_endpoints(client, lb.id), *(
                [str(vip_interface(lb.labels[VIP_LABEL]).ip)] if VIP_LABEL in lb.labels else [])]
            served = [serving(f"http://{t}:{port}/", 3 * n + 3) for t in targets]
            logger.debug("ready? web tasks %s, load balancers at %s serve %s",
                         sorted(live), targets, served)
            if len(live) == n and len(targets) >= (lb.replicas or 1) and all(
                    s == live for s in served):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def status(client: DockerClient, name: str) -> SwarmStatus:
    validate_name(name)
    services = find_services(client, name)
    if not services:
        raise NotFound(f"no Swarm cluster named {name!r}",
                       hint=f"`layerkit up --swarm --name {name}`")
    return read_status(client, name, services, urls(client, name))
