"""`layerkit squash`: merge a range of an image's layers into one, load it, verify it, tag it.

Phases (each timed for the summary):

1. read: on a local overlay2 engine every layer's entries come from the engine's tar-split record
   of it, or a walk of its directory (`image.storage`; the range's contents hashed for the
   verification), and the merge reads them again there: no temporary copy of the image. Otherwise
   (`image.source` says when) one `docker save` stream (or the user's archive) is parsed as it
   arrives for every layer's entries and content hashes; by default the stream is also spooled to a
   temporary file so the merge can read the range's layers from it (kept layers are dropped from
   the spool as soon as they have passed, see `spool`). `low_disk` (chosen by itself when the
   temporary directory lacks room for that) reads the image a second time from the engine instead,
   so the only temporary file is the new layer.
2. merge: `merge.plan_merge` decides from metadata, newest layer first, what the new layer holds;
   `merge.write_layer*` copies it into one temporary tar, hashing it (its diff_id) on the way.
3. load: a tar holding just the new layer, the new config and a manifest is streamed to the
   engine; the kept layers are found by chain ID and not sent again.
4. verify (concurrently with the load): the new layer's bytes are read back and the merged tree of
   kept layers + new layer must equal the source's (paths, kinds, modes, owners, link targets,
   content hashes); the engine must report exactly the diff_ids written. Only then is the tag set.

The source image is never modified or deleted. Any failure or interruption removes the temporary
directory and an image this run loaded but did not tag; the tag moves only at the very end.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import gc
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from layerkit.engine.client import DockerClient
from layerkit.engine.images import find_image, inspect_image, load_image, remove_image, tag_image
from layerkit.engine.save import info_unix, save_image, socket_path
from layerkit.errors import NotFound, SquashError, UsageError, VerifyFailed
from layerkit.image import storage
from layerkit.image.archive import Archive, Layer, SavedImage, layer_tar_chunks, read_archive
from layerkit.image.source import choose
from layerkit.image.storage import LayerDirs
from layerkit.image.streams import iter_chunks_reader
from layerkit.squash.config import (
    ArchiveWriter,
    created_time,
    file_chunks,
    image_id,
    load_stream,
    squashed_config,
)
from layerkit.squash.dirlayer import write_layer_from_dirs
from layerkit.squash.layer_range import check_range, choose_start
from layerkit.squash.merge import (
    MergePlan,
    WrittenLayer,
    plan_merge,
    write_layer,
    write_layer_seekable,
)
from layerkit.squash.results import Phases, SquashOptions, SquashResult
from layerkit.squash.spool import Spool
from layerkit.squash.verify import result_matches

__all__ = ["Phases", "SquashOptions", "SquashResult", "check_range", "choose_start", "squash"]

logger = logging.getLogger(__name__)

OnPhase = Callable[[str], None]
T = TypeVar("T")


def squash(client: DockerClient | None, ref: str | None, opts: SquashOptions,
           environ: Mapping[str, str], on_phase: OnPhase = lambda _: None) -> SquashResult:
    """Squash `ref` (from the engine, or from `opts.archive`) as `opts` says."""
    if opts.tag is None and opts.archive_out is None:
        raise UsageError("say where the result goes: -t NEW_TAG and/or --archive-out FILE")
    if opts.load and opts.tag is not None and client is None:
        raise UsageError("loading the result needs an engine (or pass --no-load)")
    check_range(base=opts.base is not None, last=opts.last, all_layers=opts.all_layers)
    collecting = gc.isenabled()
    gc.disable()  # millions of small acyclic objects: collections would rescan them again and again
    _one_malloc_arena()
    try:
        with tempfile.TemporaryDirectory(prefix="layerkit-squash-", dir=opts.tmp_dir) as tmp:
            return _Run(client, ref, opts, environ=environ, tmp=Path(tmp), on_phase=on_phase).run()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = opts.tmp_dir or tempfile.gettempdir()
            raise SquashError(f"no space left for temporary files in {where} "
                              "(set TMPDIR, or try --low-disk)") from None
        if exc.filename:  # an output or temporary path that cannot be written
            raise SquashError(f"{exc.filename}: {exc.strerror or exc}") from None
        raise
    finally:
        if collecting:
            gc.enable()


def _one_malloc_arena() -> None:
    """glibc gives the verify thread a heap (arena) of its own whose freed buffers stay mapped;
    one arena for the process keeps the peak lower. Nothing happens off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = 1


class _EngineRange(NamedTuple):
    """An engine's image and the range chosen in it, before its layers are read."""

    client: DockerClient
    ref: str
    info: dict[str, Any]
    source_layers: list[str]
    start: int


class _Run:
    """One squash: the state shared by its phases."""

    def __init__(self, client: DockerClient | None, ref: str | None, opts: SquashOptions, *,
                 environ: Mapping[str, str], tmp: Path, on_phase: OnPhase) -> None:
        self.client, self.ref, self.opts, self.environ = client, ref, opts, environ
        self.tmp, self.on_phase = tmp, on_phase
        self.spool = tmp / "source.tar" if opts.archive is None else opts.archive
        self.times: dict[str, float] = {}
        self.existed = True  # was the result's image ID already in the engine before the load?
        self.low_disk = opts.low_disk
        self.spooled: Callable[[int], int] = lambda offset: offset  # stream -> spool offsets
        self.storage: LayerDirs | None = None  # the layer directories read, if they were

    def run(self) -> SquashResult:
        # an engine's image: its range is checked before the read begins (an archive must be read)
        planned = None if self.opts.archive is not None else self._engine_range()
        image, start = self._timed("read", lambda: self._read(planned))
        layer_path = self.tmp / "layer.tar"

        def merge() -> tuple[MergePlan, WrittenLayer]:
            plan = plan_merge([lay.entries for lay in image.layers], start)
            return plan, self._merge(image, plan, layer_path)

        plan, written = self._timed("merge", merge)
        created = created_time(reproducible=self.opts.reproducible, environ=self.environ,
                               source_config=image.config)
        config = squashed_config(image, start, written.diff_id, created)
        new_id = image_id(config)
        with ThreadPoolExecutor(max_workers=1) as pool:
            check = pool.submit(result_matches, image, start, layer_path, config) \
                if self.opts.verify else None
            try:
                loaded = self._timed("load", lambda: self._load(layer_path, config, start, new_id))
                self._timed("verify", lambda: self._verify(check, loaded, new_id, config))
                if self.opts.archive_out is not None:  # writing the result counts as loading it
                    self._timed("load", lambda: self._write_archive(image, start, layer_path,
                                                                    config))
                if loaded and self.opts.tag is not None and self.opts.move_tag:
                    assert self.client is not None
                    tag_image(self.client, new_id, self.opts.tag)
            except BaseException:
                self._forget(new_id)
                raise
        return self._result(image, start, plan, written, new_id=new_id, loaded=loaded)

    def _timed(self, phase: str, step: Callable[[], T]) -> T:
        if phase not in self.times:  # a phase that runs in two parts is announced once
            self.on_phase(phase)
        started = time.perf_counter()
        try:
            return step()
        finally:
            took = time.perf_counter() - started
            self.times[phase] = self.times.get(phase, 0.0) + took
            logger.debug("squash: %s step took %.3f s", phase, took)

    # --- read --------------------------------------------------------------------------------

    def _engine_range(self) -> _EngineRange:
        client, ref = self._engine_source()
        info = inspect_image(client, ref)
        source_layers = list(info.get("RootFS", {}).get("Layers") or [])
        start = choose_start(len(source_layers), base_layers=self._base_layers(None),
                             source_layers=source_layers, last=self.opts.last,
                             all_layers=self.opts.all_layers)
        return _EngineRange(client, ref, info, source_layers, start)

    def _read(self, planned: _EngineRange | None) -> tuple[SavedImage, int]:
        if planned is None:
            assert self.opts.archive is not None
            if not self.opts.archive.is_file():
                raise NotFound(f"no archive at {self.opts.archive}")
            archive = read_archive(self.opts.archive, hash_content=self.opts.verify)
            image = _pick(archive, self.ref)
            return image, self._start(image, archive)
        client, ref, info, source_layers, start = planned
        self.storage = self._layer_dirs(ref, info)
        if self.storage is not None:
            names = storage.saved_refs(ref, info.get("RepoTags") or [])
            image = storage.read_image(ref, names, self.storage,
                                       visible_from=start if self.opts.verify else None)
        else:
            image = self._read_save(client, ref, info, source_layers, start)
        if [layer.digest for layer in image.layers] != source_layers:
            raise SquashError(f"{ref} changed while it was being read; retry")
        return image, start

    def _layer_dirs(self, ref: str, inspect: dict[str, Any]) -> LayerDirs | None:
        """The layer directories to read, or None for the save stream (see image.source)."""
        requested = self.opts.source
        if self.opts.archive_out is not None:  # it copies the kept layers' tars from a save
            if requested == "storage":
                raise UsageError("--source storage: --archive-out needs the image's save")
            requested = "save"
        path = socket_path(self.environ)
        local = path is not None and requested != "save"
        info = info_unix(path) if path is not None and local else None
        return choose(requested, ref, local=local, info=info,
                      inspect=inspect if local else None).storage

    def _read_save(self, client: DockerClient, ref: str, info: dict[str, Any],
                   source_layers: list[str], start: int) -> SavedImage:
        # spooling needs room for the range's layers and the new layer; else read the image twice
        kept = 0 if self.opts.archive_out or self.opts.base is None else \
            int(inspect_image(client, self.opts.base).get("Size", 0))
        self.low_disk = self.opts.low_disk or _short_of_space(
            self.tmp, int(info.get("Size", 0)) - kept)
        logger.debug("squash: %s", "reading the image twice (low disk)" if self.low_disk
                     else "spooling the range's layers")
        with save_image(client, ref, chunk_size=256 << 10) as stream:  # see SaveStream
            if not self._spooling:
                return read_archive(stream, hash_content=self.opts.verify).images[0]
            # kept layers are not read again (unless --archive-out copies them): not spooled
            drop = set() if self.opts.archive_out else \
                set(source_layers[:start]) - set(source_layers[start:])
            with open(self.spool, "w+b") as fh:
                spool = Spool(fh, drop)
                image = read_archive(spool.tee(stream), hash_content=self.opts.verify,
                                     on_layer=spool.passed).images[0]
            self.spooled = spool.offset
            return image

    @property
    def _spooling(self) -> bool:
        return self.opts.archive is None and (not self.low_disk
                                              or self.opts.archive_out is not None)

    def _engine_source(self) -> tuple[DockerClient, str]:
        if self.client is None or self.ref is None:
            raise UsageError("name the image to squash, or pass --archive FILE")
        return self.client, self.ref

    def _start(self, image: SavedImage, archive: Archive) -> int:
        source_layers = [layer.digest for layer in image.layers]
        return choose_start(len(image.layers), base_layers=self._base_layers(archive),
                            source_layers=source_layers, last=self.opts.last,
                            all_layers=self.opts.all_layers)

    def _base_layers(self, archive: Archive | None) -> list[str] | None:
        base = self.opts.base
        if base is None:
            return None
        for image in archive.images if archive is not None else ():
            if base in image.refs or image.config_digest == base:
                return [layer.digest for layer in image.layers]
        if self.client is None:
            raise UsageError(f"--from {base}: not in the archive, and no engine to ask")
        return list(inspect_image(self.client, base).get("RootFS", {}).get("Layers")
                    or [])

    # --- merge and load ----------------------------------------------------------------------

    def _merge(self, image: SavedImage, plan: MergePlan, out_path: Path) -> WrittenLayer:
        with open(out_path, "wb") as out:
            if self.storage is not None:
                return write_layer_from_dirs(self.ref or "", self.storage.dirs, image.layers,
                                             plan, out)
            if self._spooling or self.opts.archive is not None:
                layers = [dataclasses.replace(layer, data_offset=self.spooled(layer.data_offset))
                          if layer.index >= plan.start else layer for layer in image.layers]
                with open(self.spool, "rb") as fh:
                    return write_layer_seekable(fh, layers, plan, out)
            client, ref = self._engine_source()
            with save_image(client, ref, chunk_size=256 << 10) as again:
                return write_layer(iter_chunks_reader(again), image.layers, plan, out)

    def _load(self, layer_path: Path, config: dict[str, Any], start: int,
              new_id: str) -> bool:
        if not self.opts.load or self.opts.tag is None:
            return False
        assert self.client is not None
        self.existed = find_image(self.client, new_id) is not None
        load_image(self.client, load_stream(layer_path, config, start))
        return True

    def _verify(self, check: Future[str | None] | None, loaded: bool, new_id: str,
                config: dict[str, Any]) -> None:
        if check is not None and (problem := check.result()) is not None:
            raise VerifyFailed(f"the squashed filesystem differs from the source's: {problem}")
        if loaded:
            assert self.client is not None
            got = inspect_image(self.client, new_id).get("RootFS", {}).get("Layers")
            want = config["rootfs"]["diff_ids"]
            if got != want:
                raise VerifyFailed(f"the engine holds other layers than were written for "
                                   f"{new_id[:19]}")

    def _forget(self, new_id: str) -> None:
        """After a failure or an interrupt (even mid-load): remove the image this run may have
        loaded, unless it was there before."""
        if not self.existed and self.client is not None:
            with contextlib.suppress(Exception):
                remove_image(self.client, new_id)

    def _write_archive(self, image: SavedImage, start: int, layer_path: Path,
                       config: dict[str, Any]) -> None:
        assert self.opts.archive_out is not None
        target = self.opts.archive_out
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "wb") as out, open(self.spool, "rb") as src:
                writer = ArchiveWriter(out)
                for layer in image.layers[:start]:
                    writer.add_layer(layer.digest, layer_tar_chunks(src, layer))
                writer.add_layer(config["rootfs"]["diff_ids"][-1], file_chunks(layer_path))
                writer.finish(config, self.opts.tag)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)

    # --- the summary -------------------------------------------------------------------------

    def _result(self, image: SavedImage, start: int, plan: MergePlan, written: WrittenLayer, *,
                new_id: str, loaded: bool) -> SquashResult:
        kept = image.layers[:start]
        before = sum(layer.content_bytes for layer in image.layers)
        after = sum(layer.content_bytes for layer in kept) + _planned_bytes(image.layers, plan)
        source_id = image.config_digest
        return SquashResult(
            source=self.ref or str(self.opts.archive), source_id=source_id, tag=self.opts.tag,
            image_id=new_id, layers_before=len(image.layers), layers_after=start + 1,
            squashed_layers=len(image.layers) - start, bytes_before=before, bytes_after=after,
            layer_bytes=written.size, markers=len(plan.markers),
            converted_hardlinks=sum(len(c.paths) for c in plan.conversions),
            verified=self.opts.verify, loaded=loaded,
            archive_out=str(self.opts.archive_out) if self.opts.archive_out else None,
            phases=Phases(**{k: round(v, 3) for k, v in self.times.items()}))


def _short_of_space(directory: Path, range_size: int) -> bool:
    """Too little room for what the spool keeps, the range's layers (tar headers add a little;
    the kept layers are dropped as they pass), plus the new layer, at most as large."""
    return shutil.disk_usage(directory).free < 2.2 * range_size


def _pick(archive: Archive, ref: str | None) -> SavedImage:
    if ref is None:
        if len(archive.images) != 1:
            raise UsageError(f"the archive holds {len(archive.images)} images: name one")
        return archive.images[0]
    for image in archive.images:
        if ref in image.refs or image.config_digest.startswith(ref) or \
                image.config_digest.removeprefix("sha256:").startswith(ref):
            return image
    raise NotFound(f"{ref} is not in the archive")


def _planned_bytes(layers: Sequence[Layer], plan: MergePlan) -> int:
    total = 0
    for index in range(plan.start, len(layers)):
        entries = layers[index].entries
        total += sum(entries[k].size for k in plan.kept_in(index))
    files = {(layer.index, e.path): e.size for layer in layers[plan.start:]
             for e in layer.entries if e.kind == "file"}
    return total + sum(files.get((c.layer, c.target), 0) for c in plan.conversions)
