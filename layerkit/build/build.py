"""The build graph: base first, each image's context made here, built through the engine.

Progress is reported as `BuildEvent`s to a callback (the CLI draws them); nothing is printed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from layerkit.build import bootstrap
from layerkit.build.dockerfile import Generated, generate, image_ref
from layerkit.build.specs import ImageSpec
from layerkit.engine.client import DockerClient
from layerkit.engine.images import BuildChunk, build_image, cancel_build, find_image, image_info, tag_image
from layerkit.errors import BuildError, NothingToSquash

CONTEXT_MTIME = 1_700_000_000  # fixed, so identical inputs give identical contexts and cache hits
LOG_TAIL = 12

EventKind = Literal["base", "start", "step", "log", "done"]


@dataclass(frozen=True)
class BuildEvent:
    image: str
    kind: EventKind
    step: int = 0
    total: int = 0
    text: str = ""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    image_id: str
    size: int
    layers: int
    shared_bytes: int       # bytes of layers shared with the layerkit image it stands on
    seconds: float
    steps: int
    cached_steps: int


OnEvent = Callable[[BuildEvent], None]


@dataclass
class _StreamState:
    step: int = 0
    total: int = 0
    instruction: str = ""
    cached: int = 0
    image_id: str = ""
    tail: list[str] = field(default_factory=list)
    containers: set[str] = field(default_factory=set)  # short IDs from "---> Running in <id>"


def parent_ref(spec: ImageSpec, specs: dict[str, ImageSpec], version: str) -> str:
    return image_ref(spec.parent, version) if spec.parent in specs else spec.parent


def build_all(client: DockerClient, order: list[ImageSpec], specs: dict[str, ImageSpec], *,
              version: str, no_cache: bool = False, write_dockerfiles: bool = True,
              tag_latest: bool = True, squash: bool = False,
              on_event: OnEvent = lambda _: None) -> list[BuiltImage]:
    """Build `order` (already sorted parents first); stops at the first failure. `squash`
    merges each image's own layers above its parent into one (the parent's stay shared)."""
    built: list[BuiltImage] = []
    for spec in order:
        parent = parent_ref(spec, specs, version)
        if spec.parent not in specs:
            def log(text: str, name: str = spec.name) -> None:
                on_event(BuildEvent(name, "base", text=text))

            parent = bootstrap.ensure_base(client, spec.parent, allow_bootstrap=spec.bootstrap,
                                           log=log).ref
        generated = generate(spec, parent, version)
        if write_dockerfiles:
            (spec.directory / "Dockerfile").write_text(generated.text)
        layers = _layers_of(client, parent) if spec.parent in specs else None
        image = build_one(client, spec, generated, version=version, no_cache=no_cache,
                          tag_latest=tag_latest, parent_layers=layers, on_event=on_event)
        if squash:
            image = squash_own_layers(client, image, parent, tag_latest=tag_latest,
                                      on_event=on_event)
        built.append(image)
    return built


def squash_own_layers(client: DockerClient, image: BuiltImage, parent: str, *,
                      tag_latest: bool = True, on_event: OnEvent = lambda _: None) -> BuiltImage:
    """`layerkit squash --from parent`, reproducibly: a cached rebuild squashes to the same ID,
    so the images built on this one keep their cache too."""
    from layerkit.squash.squash import SquashOptions  # only a --squash build loads squash
    from layerkit.squash.squash import squash as squash_image

    options = SquashOptions(tag=image.ref, base=parent, reproducible=True)
    try:
        result = squash_image(client, image.ref, options, os.environ)
    except NothingToSquash:
        return image
    if tag_latest:
        tag_image(client, result.image_id, f"layerkit/{image.name}:latest")
    on_event(BuildEvent(image.name, "log", text=f"squashed {result.squashed_layers} layers "
                        f"into one ({result.image_id[:19]})"))
    size = image_info(client, result.image_id).size or image.size
    return dataclasses.replace(image, image_id=result.image_id, layers=result.layers_after,
                               size=size)


def _layers_of(client: DockerClient, ref: str) -> tuple[list[str], int] | None:
    image = find_image(client, ref)
    if image is None:
        return None
    return list(image.layers), image.size


def context_tar(generated: Generated) -> io.BytesIO:
    """The build context as an in-memory tar: the Dockerfile plus files with their final modes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "Dockerfile", generated.text.encode(), 0o644)
        dirs: set[str] = set()
        for f in generated.files:
            parts = f.arcname.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = _info(d, 0o755)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
            _add_bytes(tar, f.arcname, f.source.read_bytes(), f.mode)
    buf.seek(0)
    return buf


def _info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = mode, CONTEXT_MTIME, 0, 0
    info.uname = info.gname = "root"
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = _info(name, mode)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_one(client: DockerClient, spec: ImageSpec, generated: Generated, *, version: str,
              no_cache: bool = False, tag_latest: bool = True,
              parent_layers: tuple[list[str], int] | None = None,
              on_event: OnEvent = lambda _: None) -> BuiltImage:
    ref = image_ref(spec.name, version)
    started = time.monotonic()
    state = _StreamState()
    on_event(BuildEvent(spec.name, "start", text=ref))
    try:
        for chunk in build_image(client, context_tar(generated), what=f"building {ref}",
                                 tag=ref, no_cache=no_cache):
            _consume(spec.name, chunk, state, on_event)
    except KeyboardInterrupt:
        cancel_build(client, state.containers)
        raise
    if not state.image_id:
        raise BuildError(spec.name, "the engine reported no image", step=state.instruction,
                         log_tail=tuple(state.tail))
    if tag_latest:
        tag_image(client, state.image_id, f"layerkit/{spec.name}:latest")
    image = image_info(client, state.image_id)
    shared = 0
    if parent_layers and list(image.layers[: len(parent_layers[0])]) == parent_layers[0]:
        shared = parent_layers[1]
    seconds = time.monotonic() - started
    on_event(BuildEvent(spec.name, "done", state.total, state.total, f"{seconds:.1f}s"))
    return BuiltImage(spec.name, ref, state.image_id, image.size, len(image.layers), shared,
                      seconds, state.total, state.cached)


def _consume(name: str, chunk: BuildChunk, state: _StreamState, on_event: OnEvent) -> None:
    if chunk.error:
        message = chunk.error.strip().splitlines()
        raise BuildError(name, message[-1] if message else "unknown error",
                         step=state.instruction or None, log_tail=tuple(state.tail))
    if chunk.image_id:
        state.image_id = chunk.image_id
    for line in chunk.text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        step = _parse_step(line)
        if step:
            state.step, state.total, state.instruction = step
            state.tail.clear()
            on_event(BuildEvent(name, "step", state.step, state.total, state.instruction))
        elif line.strip() == "---> Using cache":
            state.cached += 1
        else:
            running = line.strip().removeprefix("---> Running in ")
            if running != line.strip():
                state.containers.add(running)
            state.tail = [*state.tail[-(LOG_TAIL - 1):], line]
            on_event(BuildEvent(name, "log", state.step, state.total, line))


def _parse_step(line: str) -> tuple[int, int, str] | None:
    """'Step 3/9 : RUN apt-get ...' -> (3, 9, 'RUN apt-get ...')."""
    if not line.startswith("Step "):
        return None
    head, sep, instruction = line.partition(" : ")
    numbers = head[5:].split("/")
    if not sep or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1]), instruction.strip()
