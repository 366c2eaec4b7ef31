"""Labelled containers, networks and volumes, as the cluster asks for them.

Everything leaves this module as a frozen dataclass (ContainerInfo, NetworkInfo, VolumeInfo)
and every action takes a container's id or name: the SDK's objects and their `attrs` stay in
here, so the cluster's logic can be read (and tested) without knowing the SDK.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import docker.errors
from docker import DockerClient
from docker.models.containers import Container
from docker.types import LogConfig

from layerkit.engine.client import engine_errors, gone_ok
from layerkit.errors import EngineError, NotFound

__all__ = [
    "Container", "ContainerInfo", "ContainerSpec", "NetworkInfo", "PortBinding", "VolumeInfo",
    "create_container", "create_network", "exec_in", "get_file", "inspect_container",
    "kill_container", "labelled_containers", "labelled_networks", "labelled_volumes",
    "put_files", "remove_container", "remove_network", "remove_volume", "start_container",
    "stop_container",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """What the cluster asks for; the SDK's many keyword arguments stay in here."""

    image: str
    name: str
    hostname: str
    network: str                 # "none": the loopback interface only
    aliases: tuple[str, ...]
    labels: Mapping[str, str]
    env: Mapping[str, str]
    ports: Mapping[str, tuple[str, int | None]]  # "80/tcp" -> (host ip, host port or None)
    restart: str = "unless-stopped"
    memory: str | None = None    # "256m": memory limit, and no swap beyond it
    pids: int | None = None      # processes and threads
    log_size: str | None = None  # json-file log rotated at this size...
    log_files: int = 3           # ...keeping this many files


@dataclass(frozen=True)
class PortBinding:
    host_ip: str
    host_port: str


@dataclass(frozen=True)
class ContainerInfo:
    """One container as the engine last reported it."""

    id: str
    name: str
    labels: Mapping[str, str]
    status: str                                # created | running | exited | restarting ...
    created: str                               # RFC 3339: sorts in creation order
    restarts: int                              # times the restart policy brought it back
    hostname: str
    env: tuple[str, ...]                       # NAME=value, as the container was created
    addresses: Mapping[str, str]               # network name -> IPv4 address on it
    ports: Mapping[str, tuple[PortBinding, ...]]  # "80/tcp" -> where the host publishes it
    image: str = ""                            # the ID of the image it was created from

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    labels: Mapping[str, str]
    subnets: tuple[str, ...]   # CIDR of each IPAM pool
    gateways: tuple[str, ...]


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: Mapping[str, str]


def container_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    """A ContainerInfo from the engine's inspect document (also used on recorded JSON)."""
    settings = attrs.get("NetworkSettings") or {}
    config = attrs.get("Config") or {}
    ports = {port: tuple(PortBinding(str(b.get("HostIp") or ""), str(b.get("HostPort") or ""))
                         for b in bindings if isinstance(b, dict))
             for port, bindings in (settings.get("Ports") or {}).items()
             if isinstance(bindings, list)}
    return ContainerInfo(
        id=str(attrs.get("Id", "")), name=str(attrs.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        status=str((attrs.get("State") or {}).get("Status", "")),
        created=str(attrs.get("Created", "")), restarts=int(attrs.get("RestartCount") or 0),
        hostname=str(config.get("Hostname", "")), env=tuple(config.get("Env") or ()),
        addresses={net: str(value.get("IPAddress") or "")
                   for net, value in (settings.get("Networks") or {}).items()
                   if isinstance(value, dict)},
        ports=ports, image=str(attrs.get("Image", "")))


def network_info(attrs: Mapping[str, Any]) -> NetworkInfo:
    pools = [p for p in ((attrs.get("IPAM") or {}).get("Config") or []) if isinstance(p, dict)]
    return NetworkInfo(
        id=str(attrs.get("Id", "")), name=str(attrs.get("Name", "")),
        labels=dict(attrs.get("Labels") or {}),
        subnets=tuple(str(p["Subnet"]) for p in pools if p.get("Subnet")),
        gateways=tuple(str(p["Gateway"]) for p in pools if p.get("Gateway")))


def labelled_containers(client: DockerClient, labels: Mapping[str, str]
                        ) -> list[ContainerInfo]:
    """All containers (running or not) carrying every one of `labels`."""
    with engine_errors("listing containers"):
        found = client.containers.list(all=True, filters={"label": _label_filter(labels)},
                                       ignore_removed=True)
    return [container_info(c.attrs) for c in found]


def inspect_container(client: DockerClient, ref: str) -> ContainerInfo:
    with engine_errors(f"inspecting container {ref}"):
        return container_info(client.api.inspect_container(ref))


def labelled_networks(client: DockerClient, labels: Mapping[str, str]) -> list[NetworkInfo]:
    with engine_errors("listing networks"):
        found = client.api.networks(filters={"label": _label_filter(labels)})
    return [network_info(n) for n in found]


def labelled_volumes(client: DockerClient, labels: Mapping[str, str]) -> list[VolumeInfo]:
    with engine_errors("listing volumes"):
        found = client.api.volumes(filters={"label": _label_filter(labels)})
    return [VolumeInfo(str(v.get("Name", "")), dict(v.get("Labels") or {}))
            for v in (found or {}).get("Volumes") or []]


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in labels.items()]


def create_network(client: DockerClient, name: str, labels: Mapping[str, str]) -> NetworkInfo:
    with engine_errors(f"creating network {name}"):
        created = client.api.create_network(name, driver="bridge", labels=dict(labels))
        return network_info(client.api.inspect_network(created["Id"]))


def create_container(client: DockerClient, spec: ContainerSpec) -> ContainerInfo:
    """Created, not started: files can be put into it first."""
    api = client.api
    # (ip,) alone lets the engine pick a free host port
    bindings: dict[int | str, Any] = {port: (ip,) if host_port is None else (ip, host_port)
                                      for port, (ip, host_port) in spec.ports.items()}
    log = (LogConfig(type="json-file", config={"max-size": spec.log_size,
                                               "max-file": str(spec.log_files)})
           if spec.log_size else None)
    isolated = spec.network == "none"
    host_config = api.create_host_config(
        port_bindings=bindings, restart_policy={"Name": spec.restart}, mem_limit=spec.memory,
        memswap_limit=spec.memory, pids_limit=spec.pids, log_config=log,
        network_mode="none" if isolated else None)
    # the stubs type this argument as a single EndpointConfig; the API takes a map by network
    networking = None if isolated else api.create_networking_config(
        {spec.network: api.create_endpoint_config(aliases=list(spec.aliases))})  # type: ignore[arg-type]
    with engine_errors(f"creating container {spec.name}"):
        created = api.create_container(
            spec.image, name=spec.name, hostname=spec.hostname, labels=dict(spec.labels),
            environment=dict(spec.env), ports=list(spec.ports), host_config=host_config,
            networking_config=networking)
        logger.debug("created container %s (%s)", spec.name, created["Id"][:12])
        return container_info(api.inspect_container(created["Id"]))


def put_files(client: DockerClient, ref: str, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write files (absolute path -> (content, mode)) into a container, root-owned."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = sorted({str(PurePosixPath(p).parent).lstrip("/") for p in files})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    with engine_errors(f"copying files into {ref}"):
        if not client.api.put_archive(ref, "/", buf.getvalue()):
            raise EngineError(f"copying files into {ref}: engine refused")


def get_file(client: DockerClient, ref: str, path: str) -> bytes:
    """The content of one regular file inside a container (running or not)."""
    with engine_errors(f"reading {path} from {ref}"):
        stream, _ = client.api.get_archive(ref, path)
        raw = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.next()
        extracted = tar.extractfile(member) if member is not None else None
        if extracted is None:
            raise NotFound(f"{path} in {ref} is not a regular file")
        return extracted.read()


def start_container(client: DockerClient, ref: str) -> None:
    with engine_errors(f"starting container {ref}"):
        client.api.start(ref)


def stop_container(client: DockerClient, ref: str, timeout: int = 10) -> None:
    with engine_errors(f"stopping container {ref}"):
        client.api.stop(ref, timeout=timeout)


def kill_container(client: DockerClient, ref: str, signal: str = "SIGKILL") -> None:
    with engine_errors(f"killing container {ref}"):
        client.api.kill(ref, signal=signal)


def remove_container(client: DockerClient, ref: str) -> None:
    """Force-removed with its anonymous volumes; gone already is fine."""
    with engine_errors(f"removing container {ref}"), gone_ok():
        client.api.remove_container(ref, force=True, v=True)


def remove_network(client: DockerClient, ref: str, attempts: int = 5) -> None:
    """Removed; gone already is fine. The engine may still count an endpoint of a container
    it has just removed (or one killed while it restarted): such endpoints are disconnected
    by force and the removal tried again."""
    for attempt in range(attempts):
        try:
            with engine_errors(f"removing network {ref}"), gone_ok():
                client.api.remove_network(ref)
            return
        except EngineError as exc:
            if exc.status != 403 or attempt == attempts - 1:
                raise
            logger.debug("network %s still has endpoints (%s); disconnecting them", ref, exc)
        with engine_errors(f"inspecting network {ref}"), gone_ok():
            for endpoint in client.api.inspect_network(ref).get("Containers") or {}:
                with contextlib.suppress(docker.errors.APIError):
                    client.api.disconnect_container_from_network(endpoint, ref, force=True)
        time.sleep(0.2 * (attempt + 1))


def remove_volume(client: DockerClient, name: str) -> None:
    with engine_errors(f"removing volume {name}"), gone_ok():
        client.api.remove_volume(name, force=True)


def exec_in(client: DockerClient, ref: str, argv: list[str], *, user: str = ""
            ) -> tuple[int, str]:
    """Run `argv` in a running container (as `user`, default the image's): exit code and
    combined output."""
    with engine_errors(f"running {argv[0]} in {ref}"):
        exec_id = client.api.exec_create(ref, argv, user=user)["Id"]
        output = client.api.exec_start(exec_id, demux=False)
        code = client.api.exec_inspect(exec_id).get("ExitCode")
    data = output if isinstance(output, bytes) else b"".join(output or ())
    return int(code or 0), data.decode(errors="replace")
