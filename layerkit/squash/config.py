"""The squashed image's config and history, and the tars that carry it to the engine or a file.

The config is the source's, whole (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts,
Volumes, StopSignal, Healthcheck, OnBuild and anything newer); only `created`, `rootfs.diff_ids`
and `history` change. History keeps the steps below the range and adds one step naming the squash,
whose comment lists the squashed steps' `created_by`, so `docker history` still tells what the
layer holds. The image ID is the sha256 of the config bytes, which are written canonically: with a
fixed `created` (`--reproducible` or `SOURCE_DATE_EPOCH`) the same source gives the same ID.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from layerkit.errors import UsageError
from layerkit.image.archive import SavedImage

__all__ = [
    "LOAD_LAYER_NAME",
    "ArchiveWriter",
    "config_bytes",
    "created_time",
    "file_chunks",
    "history_cut",
    "image_id",
    "load_stream",
    "squashed_config",
]

CHUNK = 256 << 10
LOAD_LAYER_NAME = "squashed/layer.tar"
SQUASH_STEP = "layerkit squash"


def created_time(*, reproducible: bool, environ: Mapping[str, str],
                 source_config: Mapping[str, Any]) -> str:
    """`created` for the new image: SOURCE_DATE_EPOCH, else the source's own time when
    reproducible, else now (UTC, RFC 3339 as the engine writes it)."""
    epoch = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in seconds") \
                from None
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if reproducible:
        return str(source_config.get("created") or "1970-01-01T00:00:00Z")
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def history_cut(image: SavedImage, start: int) -> int:
    """Position in the raw history of the first step squashed: the step of layer `start`."""
    raw = image.config.get("history") or []
    if start >= len(image.layers):
        return len(raw)
    step = image.layers[start].history_index
    if step is not None:
        return step
    made = sum(1 for item in raw if not item.get("empty_layer"))
    return len(raw) if made <= start else 0


def squashed_config(image: SavedImage, start: int, diff_id: str, created: str) -> dict[str, Any]:
    """The source config with the range replaced by one layer `diff_id`."""
    config = copy.deepcopy(image.config)
    raw: list[dict[str, Any]] = list(config.get("history") or [])
    cut = history_cut(image, start)
    squashed = raw[cut:]
    steps = [str(item.get("created_by", "")).strip() for item in squashed]
    layers = len(image.layers) - start
    config["history"] = [*raw[:cut], {
        "created": created,
        "created_by": f"{SQUASH_STEP}: {layers} layers ({len(squashed)} steps) into one",
        "comment": "\n".join(step for step in steps if step),
    }]
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])[:start]
    config["rootfs"] = {"type": "layers", "diff_ids": [*diff_ids, diff_id]}
    config["created"] = created
    config.pop("container", None)  # the build container of the last step: not this image's
    return config


def config_bytes(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_id(config: Mapping[str, Any]) -> str:
    return f"sha256:{hashlib.sha256(config_bytes(config)).hexdigest()}"


def file_chunks(path: Path, size: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        left = size
        while left is None or left > 0:
            chunk = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


# --- the tar for `docker load`: new layer, config, manifest ------------------------------------

def load_stream(layer: Path, config: Mapping[str, Any], kept_layers: int) -> Iterator[bytes]:
    """A legacy `docker save` tar holding only the new layer: the engine finds the kept layers
    by their chain IDs and does not read their files, so they are named but not sent."""
    body = config_bytes(config)
    config_name = f"{hashlib.sha256(body).hexdigest()}.json"
    layers = [f"kept/{i}/layer.tar" for i in range(kept_layers)] + [LOAD_LAYER_NAME]
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": layers}]).encode()
    size = layer.stat().st_size
    yield _header(LOAD_LAYER_NAME, size)
    yield from file_chunks(layer, size)
    yield _padding(size)
    for name, data in ((config_name, body), ("manifest.json", manifest)):
        yield _header(name, len(data)) + data + _padding(len(data))
    yield bytes(2 * tarfile.BLOCKSIZE)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return bytes(-size % tarfile.BLOCKSIZE)


# --- --archive-out: a loadable archive with gzip layers ----------------------------------------

class ArchiveWriter:
    """Writes a legacy-layout image archive to a seekable file. A gzip member's size is known
    only at its end, so its header is written as a placeholder and rewritten after."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.layers: list[str] = []

    def add_layer(self, diff_id: str, tar_chunks: Iterable[bytes]) -> None:
        """Gzip a layer's (uncompressed) tar into the archive."""
        name = f"{diff_id.removeprefix('sha256:')}/layer.tar.gz"
        start = self.fh.tell()
        self.fh.write(_header(name, 0))
        # level 1: measured 2.8x faster than the default 6 on a Debian root filesystem, 9% larger
        packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        size = 0
        for chunk in tar_chunks:
            size += self._put(packer.compress(chunk))
        size += self._put(packer.flush())
        end = self.fh.tell()
        self.fh.seek(start)
        self.fh.write(_header(name, size))  # same length: the name and fields fit ustar
        self.fh.seek(end)
        self.fh.write(_padding(size))
        self.layers.append(name)

    def _put(self, data: bytes) -> int:
        self.fh.write(data)
        return len(data)

    def finish(self, config: Mapping[str, Any], tag: str | None) -> None:
        body = config_bytes(config)
        config_name = f"{hashlib.sha256(body).hexdigest()}.json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [tag] if tag else None,
                                "Layers": self.layers}]).encode()
        for name, data in ((config_name, body), ("manifest.json", manifest)):
            self.fh.write(_header(name, len(data)) + data + _padding(len(data)))
        self.fh.write(bytes(2 * tarfile.BLOCKSIZE))
