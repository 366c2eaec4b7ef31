"""Labelled containers, networks and volumes, as the cluster asks for them."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from docker import DockerClient
from docker.models.containers import Container
from docker.models.networks import Network

from layerkit.engine.client import engine_errors, gone_ok
from layerkit.errors import EngineError, NotFound

__all__ = [
    "Container", "ContainerSpec", "Network", "create_container", "create_network", "exec_in",
    "get_file", "labelled_containers", "labelled_networks", "labelled_volumes", "put_files",
    "refresh", "remove_container", "remove_network", "remove_volume", "start_container",
    "stop_container",
]


@dataclass(frozen=True)
class ContainerSpec:
    """What cluster.py asks for; the SDK's many keyword arguments stay in here."""

    image: str
    name: str
    hostname: str
    network: str
    aliases: tuple[str, ...]
    labels: Mapping[str, str]
    env: Mapping[str, str]
    ports: Mapping[str, tuple[str, int | None]]  # "80/tcp" -> (host ip, host port or None)
    restart: str = "unless-stopped"


def labelled_containers(client: DockerClient, labels: Mapping[str, str]) -> list[Container]:
    """All containers (running or not) carrying every one of `labels`."""
    with engine_errors("listing containers"):
        return list(client.containers.list(all=True, filters={"label": _label_filter(labels)}))


def labelled_networks(client: DockerClient, labels: Mapping[str, str]) -> list[Network]:
    with engine_errors("listing networks"):
        return list(client.networks.list(filters={"label": _label_filter(labels)}))


def labelled_volumes(client: DockerClient, labels: Mapping[str, str]) -> list[Any]:
    with engine_errors("listing volumes"):
        return list(client.volumes.list(filters={"label": _label_filter(labels)}))


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in labels.items()]


def create_network(client: DockerClient, name: str, labels: Mapping[str, str]) -> Network:
    with engine_errors(f"creating network {name}"):
        return client.networks.create(name, driver="bridge", labels=dict(labels))


def create_container(client: DockerClient, spec: ContainerSpec) -> Container:
    """Created, not started: files can be put into it first."""
    api = client.api
    # (ip,) alone lets the engine pick a free host port
    bindings: dict[int | str, Any] = {port: (ip,) if host_port is None else (ip, host_port)
                                      for port, (ip, host_port) in spec.ports.items()}
    host_config = api.create_host_config(port_bindings=bindings,
                                         restart_policy={"Name": spec.restart})
    # the stubs type this argument as a single EndpointConfig; the API takes a map by network
    networking = api.create_networking_config(
        {spec.network: api.create_endpoint_config(aliases=list(spec.aliases))})  # type: ignore[arg-type]
    with engine_errors(f"creating container {spec.name}"):
        created = api.create_container(
            spec.image, name=spec.name, hostname=spec.hostname, labels=dict(spec.labels),
            environment=dict(spec.env), ports=list(spec.ports), host_config=host_config,
            networking_config=networking)
        return client.containers.get(created["Id"])


def put_files(container: Container, files: Mapping[str, tuple[bytes, int]]) -> None:
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
    with engine_errors(f"copying files into {container.name}"):
        if not container.put_archive("/", buf.getvalue()):
            raise EngineError(f"copying files into {container.name}: engine refused")


def get_file(container: Container, path: str) -> bytes:
    """The content of one regular file inside a container (running or not)."""
    with engine_errors(f"reading {path} from {container.name}"):
        stream, _ = container.get_archive(path)
        raw = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.next()
        extracted = tar.extractfile(member) if member is not None else None
        if extracted is None:
            raise NotFound(f"{path} in {container.name} is not a regular file")
        return extracted.read()


def start_container(container: Container) -> None:
    with engine_errors(f"starting container {container.name}"):
        container.start()


def stop_container(container: Container, timeout: int = 10) -> None:
    with engine_errors(f"stopping container {container.name}"):
        container.stop(timeout=timeout)


def remove_container(container: Container) -> None:
    """Force-removed with its anonymous volumes; gone already is fine."""
    with engine_errors(f"removing container {container.name}"), gone_ok():
        container.remove(force=True, v=True)


def remove_network(network: Network) -> None:
    with engine_errors(f"removing network {network.name}"), gone_ok():
        network.remove()


def remove_volume(volume: Any) -> None:
    with engine_errors(f"removing volume {volume.name}"), gone_ok():
        volume.remove(force=True)


def exec_in(container: Container, argv: list[str]) -> tuple[int, str]:
    """Run `argv` in a running container: exit code and combined output."""
    with engine_errors(f"running {argv[0]} in {container.name}"):
        code, output = container.exec_run(argv, demux=False)
    data = output if isinstance(output, bytes) else b"".join(output or ())
    return int(code or 0), data.decode(errors="replace")


def refresh(container: Container) -> Container:
    with engine_errors(f"inspecting container {container.name}"):
        container.reload()
    return container
