"""The client: made from the environment (honouring DOCKER_HOST and friends), checked to answer,
and the one place where the SDK's exceptions become layerkit's, by type and HTTP status, never
by message text."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
import requests.exceptions
import urllib3.exceptions
from docker import DockerClient

from layerkit.errors import (
    FIX_HINT,
    EngineError,
    EngineUnavailable,
    LayerkitError,
    NotFound,
    no_such_image,
)

__all__ = ["DEFAULT_HOST", "DEFAULT_SOCKET", "DockerClient", "EngineInfo", "connect",
           "engine_errors", "engine_info", "gone_ok"]

DEFAULT_SOCKET = "/var/run/docker.sock"  # where the engine listens when DOCKER_HOST is unset
DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"


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
        raise NotFound(no_such_image(what, _explanation(exc))) from None
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found ({_explanation(exc)})") from None
    except docker.errors.APIError as exc:
        raise EngineError(f"{what}: engine said {exc.status_code}: {_explanation(exc)}",
                          status=exc.status_code) from None
    except docker.errors.DockerException as exc:
        # the SDK's own refusals (bad argument, unreadable context, TLS set-up): the engine may
        # well be there, so this is not "unavailable"
        raise EngineError(f"{what}: {exc}") from None
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as exc:
        raise EngineError(f"{what}: the engine's reply broke off ({type(exc).__name__})") from None
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


def gone_ok() -> contextlib.suppress:
    """Removing what is already gone is success (another `down`, or the user, was first)."""
    return contextlib.suppress(docker.errors.NotFound)
