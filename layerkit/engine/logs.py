"""Log streams of containers and of Swarm services, as raw lines with the engine's timestamps
(`<RFC 3339 timestamp> [<details>] <text>`), for the cluster's merged view."""

from __future__ import annotations

from collections.abc import Iterator

from docker import DockerClient

from layerkit.engine.client import engine_errors

__all__ = ["container_logs", "service_logs"]


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
    wherever the tasks run (the manager gathers them); the details name the task and node."""
    with engine_errors(f"reading the logs of service {service_id[:12]}"):
        stream = client.api.service_logs(service_id, details=True, stdout=True, stderr=True,
                                         timestamps=True, follow=follow, since=since, tail=tail)
        yield from stream
