"""Images in the engine: find, pull, inspect, load, tag, remove."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import docker.errors
from docker import DockerClient
from docker.models.images import Image

from layerkit.engine.client import engine_errors, gone_ok
from layerkit.errors import EngineError


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


def inspect_image(client: DockerClient, ref: str) -> dict[str, Any]:
    """The engine's inspect document of `ref`; NotFound if it has no such image."""
    with engine_errors(f"inspecting image {ref}"):
        return dict(client.api.inspect_image(ref))  # type: ignore[no-untyped-call]


def load_image(client: DockerClient, chunks: Iterable[bytes]) -> None:
    """`docker load` from tar chunks, sent as they come (chunked upload, never held whole)."""
    with engine_errors("loading the image"):
        for status in client.api.load_image(chunks):  # type: ignore[no-untyped-call]
            if isinstance(status, dict) and status.get("error"):
                raise EngineError(f"loading the image: engine said: {status['error']}")


def split_ref(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); no tag means 'latest'."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def tag_image(client: DockerClient, image_id: str, ref: str) -> None:
    repo, tag = split_ref(ref)
    with engine_errors(f"tagging {ref}"):
        if not client.api.tag(image_id, repo, tag, force=True):
            raise EngineError(f"tagging {ref}: the engine refused")


def remove_image(client: DockerClient, image_id: str) -> None:
    """Remove an untagged image layerkit created; never forced, so one in use stays."""
    with engine_errors(f"removing image {image_id[:19]}"), gone_ok():
        client.api.remove_image(image_id, noprune=False)
