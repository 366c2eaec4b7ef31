"""Log streams of containers and of Swarm services, as raw lines with the engine's timestamps
(`<RFC 3339 timestamp> [<details>] <text>`), for the cluster's merged view."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import urllib3.exceptions
from docker import DockerClient

from layerkit.engine.client import engine_errors
from layerkit.errors import EngineError, NotFound

logger = logging.getLogger(__name__)

__all__ = ["IDLE_SECONDS", "container_logs", "service_logs"]

# A manager asked for a service's log waits, without end, for the lines of tasks whose
# containers are gone (a drained or lost node's): when nothing came for this long, it has sent
# all it has.
IDLE_SECONDS = 3.0
FIRST_BYTE = 30.0  # seconds until the answer's head; a manager under load can be slow


def container_logs(client: DockerClient, ref: str, *, since: int = 0, follow: bool = False
                   ) -> Iterator[bytes]:
    """Chunks of `<timestamp> <text>` lines, stdout and stderr together."""
    with engine_errors(f"reading the logs of {ref}"):
        stream = client.api.logs(ref, stdout=True, stderr=True, timestamps=True, stream=True,
                                 follow=follow, since=since or None)
        yield from stream


def service_logs(client: DockerClient, service_id: str, *, follow: bool = False,
                 since: int = 0, tail: str = "all") -> Iterator[bytes]:
    """Chunks of `<timestamp> <details> <text>` lines of every task of a service, from
    wherever the tasks run (the manager gathers them); the details name the task and node.
    Without `follow`, the stream ends after IDLE_SECONDS of silence."""
    params = {"details": "1", "stdout": "1", "stderr": "1", "timestamps": "1",
              "follow": "1" if follow else "0", "since": str(since), "tail": tail}
    yield from _frames(client, f"/services/{service_id}/logs", params,
                       None if follow else IDLE_SECONDS, f"the logs of service {service_id[:12]}")


def _frames(client: DockerClient, path: str, params: Mapping[str, str], idle: float | None,
            what: str) -> Iterator[bytes]:
    """The payloads of a multiplexed stream (8-byte header: stream, 0, 0, 0, size), read with
    the SDK's session and our own read timeout (the SDK's streams have none)."""
    api: Any = client.api
    url = f"{api.base_url}/v{api.api_version}{path}"
    with engine_errors(f"reading {what}"):
        try:
            response = api.get(url, params=dict(params), stream=True, timeout=(10, FIRST_BYTE))
        except requests.exceptions.ReadTimeout:
            raise EngineError(f"reading {what}: no answer in {FIRST_BYTE:.0f} s") from None
    try:
        _check(response, what)
        # the answer has begun: from here on, silence means the end (or never, with follow)
        sock = getattr(response.raw.connection, "sock", None)
        if sock is not None:
            sock.settimeout(idle)
        while True:
            header = response.raw.read(8)
            if len(header) < 8:
                return
            yield response.raw.read(int.from_bytes(header[4:8], "big"))
    except (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout,
            TimeoutError):
        logger.debug("%s: nothing more after %.0f s", what, idle or 0)
    finally:
        response.close()


def _check(response: requests.Response, what: str) -> None:
    if response.status_code < 400:
        return
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else "?"
    if response.status_code == 404:
        raise NotFound(f"reading {what}: not found ({text})")
    raise EngineError(f"reading {what}: engine said {response.status_code}: {text}",
                      status=response.status_code)
