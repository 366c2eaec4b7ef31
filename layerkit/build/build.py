"""The build graph: base first, each image's context made here, built through the engine.

Progress is reported as `BuildEvent`s to a callback (the CLI draws them); nothing is printed.
Tags move only when every image asked for has built: each image is built untagged (and so are
its reproducible rewrite and its squash), its children are built FROM its ID, and the tags are
applied at the end. A failed or interrupted build removes what it made that nothing else refers
to, so it leaves no dangling images; the steps that were already cached stay cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tarfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from layerkit.build import bootstrap
from layerkit.build.dockerfile import Generated, generate, image_ref
from layerkit.build.reproducible import DEFAULT_EPOCH, rewrite_image
from layerkit.build.specs import ImageSpec
from layerkit.build.stream import BuildEvent, OnEvent, StreamState, consume
from layerkit.engine.client import DockerClient, connect
from layerkit.engine.images import (
    build_image,
    cancel_build,
    find_image,
    image_info,
    remove_image,
    tag_image,
)
from layerkit.errors import BuildError, EngineError, LayerkitError, NothingToSquash

__all__ = ["BuildEvent", "BuiltImage", "build_all", "build_one", "context_tar", "parent_ref"]

logger = logging.getLogger(__name__)
CONTEXT_MTIME = 1_700_000_000  # fixed, so identical inputs give identical contexts and cache hits


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
    # (tag, image ID) of the images kept beside it: each build stage's result and, for a
    # reproducible build, the builder's own image, so that none dangles and their steps stay
    # cached
    extra_tags: tuple[tuple[str, str], ...] = ()


def parent_ref(spec: ImageSpec, specs: dict[str, ImageSpec], version: str) -> str:
    return image_ref(spec.parent, version) if spec.parent in specs else spec.parent


def build_all(client: DockerClient, order: list[ImageSpec], specs: dict[str, ImageSpec], *,
              version: str, no_cache: bool | Collection[str] = False,
              write_dockerfiles: bool = True, tag_latest: bool = True, squash: bool = False,
              build_args: Mapping[str, str] | None = None, epoch: int | None = None,
              on_event: OnEvent = lambda _: None) -> list[BuiltImage]:
    """Build `order` (already sorted parents first); stops at the first failure, with no tag
    moved. `no_cache` is True (every image) or the names of the images built without the
    cache. `build_args` override the defaults of the specs that declare them. `epoch` makes
    the images reproducible (`reproducible.py`) with that time. `squash` merges each image's
    own layers above its parent into one (the parent's stay shared)."""
    built: list[BuiltImage] = []
    try:
        for spec in order:
            fresh = no_cache is True or (not isinstance(no_cache, bool) and spec.name in no_cache)
            args = {k: v for k, v in (build_args or {}).items()
                    if k in dict(spec.build_args)}
            built.append(_build_spec(client, spec, specs, built, version=version,
                                     no_cache=fresh, write_dockerfiles=write_dockerfiles,
                                     squash=squash, build_args=args,
                                     epoch=epoch, on_event=on_event))
    except BaseException as exc:
        _forget(_usable(client, exc), built)
        raise
    for image in built:
        for extra_ref, extra_id in image.extra_tags:
            tag_image(client, extra_id, extra_ref)
        tag_image(client, image.image_id, image.ref)
        if tag_latest:
            tag_image(client, image.image_id, f"layerkit/{image.name}:latest")
    return built


def _build_spec(client: DockerClient, spec: ImageSpec, specs: dict[str, ImageSpec],
                built: list[BuiltImage], *, version: str, no_cache: bool,
                write_dockerfiles: bool, squash: bool,
                build_args: dict[str, str], epoch: int | None, on_event: OnEvent) -> BuiltImage:
    parent = parent_ref(spec, specs, version)
    if spec.parent not in specs:
        def log(text: str, name: str = spec.name) -> None:
            on_event(BuildEvent(name, "base", text=text))

        parent = bootstrap.ensure_base(client, spec.parent, allow_bootstrap=spec.bootstrap,
                                       epoch=DEFAULT_EPOCH if epoch is None else epoch,
                                       log=log).ref
    named = {s.name: image_ref(s.parent, version) for s in spec.stages if s.parent in specs}
    generated = generate(spec, parent, version, named, reproducible=epoch is not None)
    if write_dockerfiles:
        (spec.directory / "Dockerfile").write_text(generated.text)
    # a parent built in this run is not tagged yet: build FROM its ID
    from_this_run = {b.name: b.image_id for b in built if not _tagged_as(client, b)}
    if spec.parent in from_this_run:
        parent = from_this_run[spec.parent]
    stage_refs = {**named, **{s.name: from_this_run[s.parent] for s in spec.stages
                              if s.parent in from_this_run}}
    generated = generate(spec, parent, version, stage_refs, reproducible=epoch is not None)
    layers = _layers_of(client, parent) if spec.parent in specs else None
    if epoch is not None:
        build_args = {**build_args, "SOURCE_DATE_EPOCH": str(epoch)}
    image = build_one(client, spec, generated, version=version, no_cache=no_cache,
                      tag_latest=False, parent_layers=layers, build_args=build_args,
                      on_event=on_event)
    made = [image]  # what a failure from here on removes (the untagged ones)
    try:
        if epoch is not None:
            made.append(_reproducible(client, made[-1], parent, epoch, on_event))
        if squash:
            made.append(_squashed(client, made[-1], parent, rewritten=epoch is not None,
                                  on_event=on_event))
    except BaseException as exc:
        _forget(_usable(client, exc), made)
        raise
    return made[-1]


def _squashed(client: DockerClient, image: BuiltImage, parent: str, *, rewritten: bool,
              on_event: OnEvent) -> BuiltImage:
    """Squash `image` and leave the image it replaces neither dangling nor kept twice: the
    builder's own image stays as `<ref>-build` (its steps stay cached); a reproducible
    rewrite of it is removed (the builder's image is kept by `_reproducible` already)."""
    result = squash_own_layers(client, image, parent, on_event=on_event)
    if result.image_id == image.image_id:  # nothing to squash
        return result
    if rewritten:
        _discard_quietly(client, image.image_id)
        return result
    keep = (f"{image.ref}-build", image.image_id)
    return dataclasses.replace(result, extra_tags=(*result.extra_tags, keep))


def _discard_quietly(client: DockerClient, image_id: str) -> None:
    """Remove an untagged image that only stood between two steps. Its ID is reproducible,
    so an image of an earlier run may be the same one and be in use: then it stays."""
    try:
        _remove_if_untagged(client, image_id, seconds=0)  # in use (409): not waited for
    except LayerkitError as exc:
        logger.debug("kept the intermediate image %s: %s", image_id[:19], exc.message)


def _reproducible(client: DockerClient, image: BuiltImage, parent: str, epoch: int,
                  on_event: OnEvent) -> BuiltImage:
    below = find_image(client, parent)
    result = rewrite_image(client, image.image_id, len(below.layers) if below else 0, epoch)
    with _removed_on_failure(client, result.image_id):
        on_event(BuildEvent(image.name, "log", text=f"reproducible: {result.layers_rewritten} "
                            f"layers rewritten, {result.dropped_files} files dropped "
                            f"({result.image_id[:19]})"))
    keep = (f"{image.ref}-build", image.image_id)
    return dataclasses.replace(image, image_id=result.image_id,
                               extra_tags=(*image.extra_tags, keep))


def _usable(client: DockerClient, exc: BaseException) -> DockerClient:
    """A client for the clean-up: after Ctrl-C the client's connections may have been closed
    (to cancel a build) or cut mid-request, so a new one is made."""
    return connect(timeout=10) if isinstance(exc, KeyboardInterrupt) else client


@contextlib.contextmanager
def _removed_on_failure(client: DockerClient, image_id: str) -> Iterator[None]:
    """For the steps between making an untagged image and handing it to the caller (who
    removes it after a later failure): a failure here removes it."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(LayerkitError):
            _remove_if_untagged(_usable(client, exc), image_id)
        raise


def _tagged_as(client: DockerClient, image: BuiltImage) -> bool:
    """Whether `image.ref` already names this ID (a fully cached build): then its children
    can say FROM ref, as the Dockerfile written for people does."""
    tagged = find_image(client, image.ref)
    return tagged is not None and tagged.id == image.image_id


def _forget(client: DockerClient, built: list[BuiltImage]) -> None:
    """Remove the images this failed run built that carry no tag (new ones; a fully cached
    image is the tagged one and stays)."""
    try:
        for image in reversed(built):
            _remove_if_untagged(client, image.image_id)
            for _, extra_id in image.extra_tags:
                _remove_if_untagged(client, extra_id)
    except LayerkitError as exc:  # the original failure is what the user needs to see
        logger.debug("could not remove an image of the failed build: %s", exc.message)


def _remove_if_untagged(client: DockerClient, image_id: str, *, seconds: float = 15) -> None:
    """Remove `image_id` unless it is tagged. Right after a cancelled build the engine may
    still be tearing down the step container that uses the image (409 conflict): retried."""
    deadline = time.monotonic() + seconds
    while True:
        info = find_image(client, image_id)
        if info is None or info.tags:
            return
        logger.debug("removing untagged image %s made by the failed build", image_id[:19])
        try:
            remove_image(client, image_id)
            return
        except EngineError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
            logger.debug("image %s still in use; retrying", image_id[:19])
            time.sleep(0.5)


def squash_own_layers(client: DockerClient, image: BuiltImage, parent: str, *,
                      on_event: OnEvent = lambda _: None) -> BuiltImage:
    """`layerkit squash --from parent`, reproducibly: a cached rebuild squashes to the same ID,
    so the images built on this one keep their cache too. The result is loaded untagged, as
    the builder's images are: the caller moves the tags (`build_all`, once all have built)."""
    from layerkit.squash.squash import SquashOptions  # only a --squash build loads squash
    from layerkit.squash.squash import squash as squash_image

    options = SquashOptions(tag=image.ref, base=parent, reproducible=True, move_tag=False)
    try:
        result = squash_image(client, image.image_id, options, os.environ)
    except NothingToSquash:
        return image
    with _removed_on_failure(client, result.image_id):
        size = image_info(client, result.image_id).size or image.size
        on_event(BuildEvent(image.name, "log", text=f"squashed {result.squashed_layers} "
                            f"layers into one ({result.image_id[:19]})"))
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
              build_args: Mapping[str, str] | None = None,
              on_event: OnEvent = lambda _: None) -> BuiltImage:
    """Build one image, untagged; `tag_latest` tags it as `ref` and `:latest` once it is
    built. A failed or interrupted build removes the images its new steps committed."""
    ref = image_ref(spec.name, version)
    started = time.monotonic()
    state = StreamState()
    on_event(BuildEvent(spec.name, "start", text=ref))
    try:
        for chunk in build_image(client, context_tar(generated), what=f"building {ref}",
                                 no_cache=no_cache, build_args=dict(build_args or {})):
            consume(spec.name, chunk, state, on_event)
        if not state.image_id:
            raise BuildError(spec.name, "the engine reported no image",
                             step=state.instruction or None, log_tail=tuple(state.tail))
    except KeyboardInterrupt:
        _discard(cancel_build(client, state.containers), state)
        raise
    except LayerkitError:
        _discard(client, state)
        raise
    # a stage's result is tagged `<ref>-<stage>`, so that it is no dangling image and its
    # steps stay cached for the next build
    stages = tuple((f"{ref}-{stage.name}", short)
                   for stage, short in zip(spec.stages, state.stages, strict=False) if short)
    if tag_latest:
        for stage_ref, stage_id in stages:
            tag_image(client, stage_id, stage_ref)
        tag_image(client, state.image_id, ref)
        tag_image(client, state.image_id, f"layerkit/{spec.name}:latest")
    image = image_info(client, state.image_id)
    shared = 0
    if parent_layers and list(image.layers[: len(parent_layers[0])]) == parent_layers[0]:
        shared = parent_layers[1]
    seconds = time.monotonic() - started
    on_event(BuildEvent(spec.name, "done", state.total, state.total, f"{seconds:.1f}s"))
    return BuiltImage(spec.name, ref, state.image_id, image.size, len(image.layers), shared,
                      seconds, state.total, state.cached, stages)


def _discard(client: DockerClient | None, state: StreamState) -> None:
    """Remove the last image the failed build committed and the stages it completed (and
    with them, the untagged chains of new steps below them), so nothing dangles."""
    leaves = [*state.stages, *state.committed[-1:]]
    if not leaves:
        return
    try:
        client = client or connect(timeout=10)
        for short in leaves:
            _remove_if_untagged(client, short)
    except LayerkitError as exc:
        logger.debug("could not remove the failed build's images: %s", exc.message)
