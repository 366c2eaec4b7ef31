"""The only module that imports the Docker SDK.

It makes the client from the environment (honouring DOCKER_HOST and friends), checks that the
engine answers, and translates the SDK's exceptions into layerkit's by type and HTTP status,
never by message text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker import DockerClient
from docker.models.containers import Container
from docker.models.images import Image
from docker.models.networks import Network

from .errors import EngineError, EngineUnavailable, LayerkitError, NotFound

__all__ = [
    "Container",
    "DockerClient",
    "EngineInfo",
    "Image",
    "Network",
    "connect",
    "engine_errors",
    "engine_info",
    "find_image",
    "pull_image",
    "save_image",
]

DEFAULT_HOST = "unix:///var/run/docker.sock"
FIX_HINT = "run `layerkit doctor --fix` (as root on Debian) or set DOCKER_HOST"


@dataclass(frozen=True)
class EngineInfo:
    host: str
    version: str
    api_version: str
    storage_driver: str
    os: str
    root_dir: str
    containerd_snapshotter: bool


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn SDK and transport exceptions raised while doing `what` into LayerkitErrors."""
    try:
        yield
    except LayerkitError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise NotFound(f"{what}: no such image ({_explanation(exc)})") from None
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found ({_explanation(exc)})") from None
    except docker.errors.APIError as exc:
        raise EngineError(f"{what}: engine said {exc.status_code}: {_explanation(exc)}") from None
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"{what}: {exc}", hint=FIX_HINT) from None
    except (requests.exceptions.ConnectionError, ConnectionError) as exc:
        raise EngineUnavailable(f"{what}: cannot reach the Docker engine ({type(exc).__name__})",
                                hint=FIX_HINT) from None


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation if isinstance(exc.explanation, str) else None
    lines = (text or str(exc)).strip().splitlines()
    return lines[0] if lines else "?"


def connect(environment: Mapping[str, str] | None = None, *, timeout: int = 120) -> DockerClient:
    """A client for the engine the environment names; EngineUnavailable if it does not answer."""
    env = dict(environment) if environment is not None else None
    host = (env if env is not None else os.environ).get("DOCKER_HOST") or DEFAULT_HOST
    try:
        client = docker.DockerClient.from_env(environment=env, timeout=timeout)
    except docker.errors.DockerException as exc:
        # from_env asks the engine for its API version, so a silent engine fails here.
        cause = type(exc.__context__ or exc).__name__
        raise EngineUnavailable(f"no Docker engine answers at {host} ({cause})",
                                hint=FIX_HINT) from None
    with engine_errors(f"connecting to the Docker engine at {host}"):
        try:
            client.ping()
        except requests.exceptions.RequestException as exc:
            raise EngineUnavailable(
                f"no Docker engine answers at {client.api.base_url} ({type(exc).__name__})",
                hint=FIX_HINT) from None
    return client


def engine_info(client: DockerClient) -> EngineInfo:
    with engine_errors("reading engine information"):
        version: dict[str, Any] = client.version()
        info: dict[str, Any] = client.info()
    status = dict(info.get("DriverStatus") or [])
    return EngineInfo(
        host=str(client.api.base_url),
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        storage_driver=str(info.get("Driver", "?")),
        os=str(info.get("OperatingSystem", "?")),
        root_dir=str(info.get("DockerRootDir", "")),
        containerd_snapshotter="driver-type" in status
        and "snapshotter" in str(status.get("driver-type", "")),
    )


def find_image(client: DockerClient, ref: str) -> Image | None:
    """The image `ref` if the engine has it, else None."""
    with engine_errors(f"looking up image {ref}"):
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None


def pull_image(client: DockerClient, ref: str) -> Image | None:
    """Pull `ref`; None when no registry can provide it (offline, unknown name)."""
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    with engine_errors(f"pulling {ref}"):
        try:
            return client.images.pull(repo, tag=tag or "latest")
        except (docker.errors.NotFound, docker.errors.APIError):
            return None


def save_image(client: DockerClient, ref: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The `docker save` stream of `ref`, as it arrives (legacy or OCI layout, per engine)."""
    with engine_errors(f"saving image {ref}"):
        yield from client.api.get_image(ref, chunk_size=chunk_size)
