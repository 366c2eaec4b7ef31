"""Swarm mode through the SDK: the swarm's state, nodes, secrets, overlay networks, services,
their tasks, translated into frozen dataclasses (the SDK's objects stay in here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker.types
from docker import DockerClient

from layerkit.engine.client import engine_errors, gone_ok
from layerkit.errors import EngineError

logger = logging.getLogger(__name__)

__all__ = [
    "PortSpec", "SecretRef", "ServiceRequest", "SwarmNode", "SwarmService", "SwarmState",
    "SwarmTask", "TaskLimits", "create_overlay", "create_secret", "create_service",
    "labelled_secrets",
    "labelled_services", "list_nodes", "remove_secret", "remove_service", "scale_service",
    "service_tasks", "set_availability", "swarm_state", "tasks_of",
]


@dataclass(frozen=True)
class SwarmState:
    node_id: str
    manager: bool      # this engine can run swarm commands (a manager with a quorum)
    state: str         # inactive | active | pending | error | locked
    address: str       # the address this node advertises to the swarm


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    address: str
    role: str          # manager | worker
    state: str         # ready | down | unknown
    availability: str  # active | pause | drain


@dataclass(frozen=True)
class PortSpec:
    target: int
    published: int     # 0: the engine picks (only in ingress mode)
    mode: str = "host"  # host: each task's node; ingress: the routing mesh (needs IPVS)


@dataclass(frozen=True)
class SecretRef:
    secret_id: str
    secret_name: str
    target: str        # the file name under /run/secrets/ in the task


@dataclass(frozen=True)
class TaskLimits:
    """Each task's memory, processes and log, as on one engine."""

    memory_bytes: int = 0                 # 0: no limit
    pids: int = 0                         # 0: no limit (Limits.Pids needs API 1.41)
    log_size: str = ""                    # json-file log rotated at this size ("": the default)
    log_files: int = 3


@dataclass(frozen=True)
class ServiceRequest:
    """What cluster/swarm.py asks for; the SDK's task template is built in here."""

    name: str
    image: str
    labels: Mapping[str, str]
    env: Mapping[str, str]
    replicas: int | None                  # None: a global service (one task per node)
    networks: tuple[str, ...] = ()        # "host" puts the task in its node's network
    endpoint_mode: str = "dnsrr"          # vip needs IPVS in the nodes' kernels
    ports: tuple[PortSpec, ...] = ()
    secrets: tuple[SecretRef, ...] = ()
    max_per_node: int = 0                 # 0: no limit
    cap_add: tuple[str, ...] = ()
    hostname: str = ""                    # a Go template, e.g. "{{.Service.Name}}-{{.Task.Slot}}"
    stop_grace_seconds: int = 10
    limits: TaskLimits = TaskLimits()


@dataclass(frozen=True)
class SwarmService:
    id: str
    name: str
    labels: Mapping[str, str]
    replicas: int | None
    image: str
    env: Mapping[str, str]


@dataclass(frozen=True)
class SwarmTask:
    id: str
    service_id: str
    slot: int
    node_id: str
    state: str          # running, failed, shutdown, ...
    desired_state: str
    addresses: tuple[str, ...]  # on the service's overlay networks, without the prefix
    container_id: str
    message: str
    created: str


def swarm_state(client: DockerClient) -> SwarmState:
    with engine_errors("reading the engine's swarm state"):
        info: dict[str, Any] = client.info()
    swarm = info.get("Swarm") or {}
    return SwarmState(node_id=str(swarm.get("NodeID") or ""),
                      manager=bool(swarm.get("ControlAvailable")),
                      state=str(swarm.get("LocalNodeState") or "inactive"),
                      address=str(swarm.get("NodeAddr") or ""))


def list_nodes(client: DockerClient) -> tuple[SwarmNode, ...]:
    with engine_errors("listing swarm nodes"):
        raw: list[dict[str, Any]] = client.api.nodes()
    return tuple(sorted((_node(n) for n in raw), key=lambda n: n.hostname))


def _node(raw: Mapping[str, Any]) -> SwarmNode:
    spec, status = raw.get("Spec") or {}, raw.get("Status") or {}
    return SwarmNode(id=str(raw.get("ID")),
                     hostname=str((raw.get("Description") or {}).get("Hostname") or ""),
                     address=str(status.get("Addr") or ""), role=str(spec.get("Role") or ""),
                     state=str(status.get("State") or ""),
                     availability=str(spec.get("Availability") or ""))


def set_availability(client: DockerClient, node_id: str, availability: str) -> None:
    """active | pause | drain (a drained node's tasks are rescheduled elsewhere)."""
    with engine_errors(f"setting node {node_id[:12]} {availability}"):
        raw = client.api.inspect_node(node_id)
        spec = dict(raw["Spec"], Availability=availability)
        client.api.update_node(node_id, raw["Version"]["Index"], spec)  # type: ignore[arg-type]


def create_secret(client: DockerClient, name: str, data: bytes, labels: Mapping[str, str]
                  ) -> SecretRef:
    with engine_errors(f"creating secret {name}"):
        made = client.api.create_secret(name, data, labels=dict(labels))
    return SecretRef(str(made["ID"]), name, name)


def labelled_secrets(client: DockerClient, labels: Mapping[str, str]) -> tuple[SecretRef, ...]:
    with engine_errors("listing secrets"):
        raw = list(client.api.secrets(filters={"label": _filter(labels)}))
    return tuple(SecretRef(str(s["ID"]), str(s["Spec"]["Name"]), str(s["Spec"]["Name"]))
                 for s in raw)


def remove_secret(client: DockerClient, secret_id: str) -> None:
    with engine_errors(f"removing secret {secret_id[:12]}"), gone_ok():
        client.api.remove_secret(secret_id)


def create_overlay(client: DockerClient, name: str, labels: Mapping[str, str]) -> str:
    """An attachable overlay network; its subnet (chosen by the swarm), which the agents use
    to pick the address they advertise."""
    with engine_errors(f"creating overlay network {name}"):
        made = client.api.create_network(name, driver="overlay", attachable=True,
                                         labels=dict(labels))
        # the manager's allocator fills the subnet in a moment after the network exists
        deadline = time.monotonic() + 10
        while True:
            raw = client.api.inspect_network(made["Id"])
            configs = (raw.get("IPAM") or {}).get("Config") or [{}]
            if configs[0].get("Subnet") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    subnet = str(configs[0].get("Subnet") or "")
    if not subnet:
        raise EngineError(f"creating overlay network {name}: the swarm gave it no subnet")
    return subnet


def create_service(client: DockerClient, req: ServiceRequest) -> str:
    """The service's id; its tasks start as the swarm schedules them."""
    mounts_secrets = [docker.types.SecretReference(s.secret_id, s.secret_name, filename=s.target,
                                                   mode=0o400) for s in req.secrets]
    container = docker.types.ContainerSpec(
        req.image, env=dict(req.env), labels=dict(req.labels), secrets=mounts_secrets,
        hostname=req.hostname or None, cap_add=list(req.cap_add) or None,
        stop_grace_period=req.stop_grace_seconds * 10**9)
    placement = docker.types.Placement(maxreplicas=req.max_per_node or None)
    limits = req.limits
    resources = docker.types.Resources(mem_limit=limits.memory_bytes or None)
    if limits.pids:  # not among the SDK's arguments; the API has it since 1.41
        resources.setdefault("Limits", {})["Pids"] = limits.pids
    log = (docker.types.DriverConfig("json-file", {"max-size": limits.log_size,
                                                   "max-file": str(limits.log_files)})
           if limits.log_size else None)
    template = docker.types.TaskTemplate(
        container, placement=placement, networks=list(req.networks), resources=resources,
        log_driver=log, restart_policy=docker.types.RestartPolicy(condition="any", delay=10**9))
    mode = (docker.types.ServiceMode("global") if req.replicas is None
            else docker.types.ServiceMode("replicated", replicas=req.replicas))
    ports = [{"Protocol": "tcp", "TargetPort": p.target, "PublishMode": p.mode,
              **({"PublishedPort": p.published} if p.published else {})} for p in req.ports]
    # a host-network task has no endpoint of its own to resolve
    endpoint = (None if req.networks == ("host",)
                else docker.types.EndpointSpec(mode=req.endpoint_mode, ports=None))
    if endpoint is not None and ports:
        endpoint["Ports"] = ports
    with engine_errors(f"creating service {req.name}"):
        made = client.api.create_service(  # type: ignore[no-untyped-call]
            template, name=req.name, labels=dict(req.labels), mode=mode, endpoint_spec=endpoint)
    logger.debug("service %s: %s replicas, endpoint %s", req.name, req.replicas, req.endpoint_mode)
    return str(made["ID"])


def labelled_services(client: DockerClient, labels: Mapping[str, str]
                      ) -> tuple[SwarmService, ...]:
    with engine_errors("listing services"):
        raw: list[dict[str, Any]] = client.api.services(  # type: ignore[no-untyped-call]
            filters={"label": _filter(labels)})
    return tuple(sorted((_service(s) for s in raw), key=lambda s: s.name))


def _service(raw: Mapping[str, Any]) -> SwarmService:
    spec = raw.get("Spec") or {}
    mode = spec.get("Mode") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    env = dict(e.split("=", 1) for e in container.get("Env") or () if "=" in e)
    replicated = mode.get("Replicated")
    return SwarmService(id=str(raw.get("ID")), name=str(spec.get("Name")),
                        labels=dict(spec.get("Labels") or {}),
                        replicas=int(replicated.get("Replicas", 0)) if replicated is not None
                        else None,
                        image=str(container.get("Image") or ""), env=env)


def scale_service(client: DockerClient, service_id: str, replicas: int) -> None:
    with engine_errors(f"scaling service {service_id[:12]}"):
        client.services.get(service_id).scale(replicas)  # type: ignore[no-untyped-call]


def remove_service(client: DockerClient, service_id: str) -> None:
    with engine_errors(f"removing service {service_id[:12]}"), gone_ok():
        client.api.remove_service(service_id)  # type: ignore[no-untyped-call]


def service_tasks(client: DockerClient, service_id: str) -> tuple[SwarmTask, ...]:
    with engine_errors(f"listing the tasks of service {service_id[:12]}"):
        raw: list[dict[str, Any]] = client.api.tasks(  # type: ignore[no-untyped-call]
            filters={"service": service_id})
    return tuple(_task(t) for t in raw)


def tasks_of(client: DockerClient, service_ids: set[str]) -> tuple[SwarmTask, ...]:
    """The tasks of these services that the swarm still tracks, removed services too (a
    service's own filter answers 404 once the service is gone)."""
    with engine_errors("listing tasks"):
        raw: list[dict[str, Any]] = client.api.tasks()  # type: ignore[no-untyped-call]
    return tuple(_task(t) for t in raw if t.get("ServiceID") in service_ids)


def _task(raw: Mapping[str, Any]) -> SwarmTask:
    status = raw.get("Status") or {}
    addresses = tuple(a.split("/", 1)[0] for att in raw.get("NetworksAttachments") or ()
                      if (att.get("Network") or {}).get("Spec", {}).get("Name") != "ingress"
                      for a in att.get("Addresses") or ())
    return SwarmTask(id=str(raw.get("ID")), service_id=str(raw.get("ServiceID")),
                     slot=int(raw.get("Slot") or 0), node_id=str(raw.get("NodeID") or ""),
                     state=str(status.get("State") or ""),
                     desired_state=str(raw.get("DesiredState") or ""), addresses=addresses,
                     container_id=str((status.get("ContainerStatus") or {}).get("ContainerID")
                                      or ""),
                     message=str(status.get("Err") or status.get("Message") or ""),
                     created=str(raw.get("CreatedAt") or ""))


def _filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in labels.items()]
