"""Images in the engine: find, pull, inspect, build, import, load, tag, remove.

Callers get `ImageInfo` and `BuildChunk` values, never SDK objects.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import docker.errors
from docker import DockerClient

from layerkit.engine.client import connect, engine_errors, gone_ok
from layerkit.errors import EngineError, LayerkitError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInfo:
    """What layerkit reads of an image: its ID, tags, size, layer digests (diff IDs) and labels."""

    id: str
    tags: tuple[str, ...]
    size: int
    layers: tuple[str, ...]
    created: str
    labels: tuple[tuple[str, str], ...] = ()
    env: tuple[str, ...] = ()      # NAME=value, as the image's config sets them
    exposed: tuple[str, ...] = ()  # "3000/tcp", as the image's config declares them


@dataclass(frozen=True)
class BuildChunk:
    """One item of the classic builder's progress stream, parsed: printed text, the built
    image's ID, or an error (with its message)."""

    text: str = ""
    image_id: str = ""
    error: str = ""
    code: int | None = None  # a failed RUN's exit code


def image_info_of(attrs: dict[str, Any]) -> ImageInfo:
    """An inspect document as an ImageInfo."""
    config = attrs.get("Config") or {}
    return ImageInfo(
        id=str(attrs.get("Id", "")),
        tags=tuple(attrs.get("RepoTags") or ()),
        size=int(attrs.get("Size") or 0),
        layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
        created=str(attrs.get("Created", "")),
        labels=tuple(sorted((config.get("Labels") or {}).items())),
        env=tuple(config.get("Env") or ()),
        exposed=tuple(sorted(config.get("ExposedPorts") or {})),
    )


def find_image(client: DockerClient, ref: str) -> ImageInfo | None:
    """The image `ref` if the engine has it, else None."""
    with engine_errors(f"looking up image {ref}"):
        try:
            return image_info_of(client.api.inspect_image(ref))  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            return None


def image_info(client: DockerClient, ref: str) -> ImageInfo:
    """The image `ref`; NotFound if the engine has no such image."""
    with engine_errors(f"inspecting image {ref}"):
        return image_info_of(client.api.inspect_image(ref))  # type: ignore[no-untyped-call]


def pull_image(client: DockerClient, ref: str) -> ImageInfo | None:
    """Pull `ref`; None when no registry can provide it (offline, unknown name)."""
    repo, tag = split_ref(ref)
    with engine_errors(f"pulling {ref}"):
        try:
            client.api.pull(repo, tag=tag)
        except (docker.errors.NotFound, docker.errors.APIError) as exc:
            logger.debug("pulling %s failed: %s", ref, exc)
            return None
    return find_image(client, ref)


def inspect_image(client: DockerClient, ref: str) -> dict[str, Any]:
    """The engine's inspect document of `ref`; NotFound if it has no such image."""
    with engine_errors(f"inspecting image {ref}"):
        return dict(client.api.inspect_image(ref))  # type: ignore[no-untyped-call]


def parse_build_chunk(chunk: dict[str, Any]) -> BuildChunk:
    """One decoded JSON object of the build stream as a BuildChunk."""
    if "error" in chunk:
        detail = chunk.get("errorDetail") or {}
        code = detail.get("code")
        return BuildChunk(error=str(detail.get("message") or chunk["error"]),
                          code=code if isinstance(code, int) and code else None)
    aux = chunk.get("aux")
    if isinstance(aux, dict) and aux.get("ID"):
        return BuildChunk(image_id=str(aux["ID"]))
    text = chunk.get("stream")
    return BuildChunk(text=text if isinstance(text, str) else "")


def build_image(client: DockerClient, context: IO[bytes], *, what: str, tag: str | None = None,
                no_cache: bool = False, build_args: dict[str, str] | None = None,
                ) -> Iterator[BuildChunk]:
    """Build from a tar context with the classic builder, yielding its progress as it comes.
    Intermediate containers are always removed, even after a failed step."""
    with engine_errors(what):
        stream = client.api.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                                  forcerm=True, nocache=no_cache, pull=False, decode=True,
                                  buildargs=build_args or None)
        for chunk in stream:
            yield parse_build_chunk(chunk)


def cancel_build(client: DockerClient, containers: set[str], *,
                 seconds: float = 15) -> DockerClient | None:
    """After Ctrl-C: close the client's connections, which makes the engine cancel the build,
    then remove the step containers it named (short IDs) that are still there a moment later.
    Only those: other builds and containers on the same engine are not ours to touch.
    Returns a new client for what the caller cleans up next (None if none was needed)."""
    client.close()
    if not containers:
        return None
    fresh = connect(timeout=10)  # bounded: a busy engine must not keep Ctrl-C waiting long
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine_errors("cleaning up after an interrupted build"):
            leftovers = [c["Id"] for c in fresh.api.containers(all=True, quiet=True)
                         if any(c["Id"].startswith(short) for short in containers)]
        if not leftovers:
            return fresh
        for cid in leftovers:
            with contextlib.suppress(LayerkitError), engine_errors("removing a build container"):
                fresh.api.remove_container(cid, force=True)
        time.sleep(0.5)
    return fresh


def import_rootfs(client: DockerClient, path: str, ref: str, *,
                  changes: Sequence[str] = ()) -> None:
    """`docker import` of a root filesystem tar as `ref`, with Dockerfile `changes`."""
    repo, tag = split_ref(ref)
    with engine_errors(f"importing the root filesystem as {ref}"):
        client.api.import_image_from_file(path, repository=repo, tag=tag, changes=list(changes))


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
