"""Reproducible images from the classic builder: the same specs and package versions, built
from scratch twice, give the same image IDs.

The builder stamps every file a step writes, and the image's config, with the time of the
build, and some programs leave files that differ from run to run. So after an image is built,
its own layers (those above its parent) are rewritten as `squash --reproducible` writes its
layer: file times clamped to SOURCE_DATE_EPOCH (or a fixed default), owner names dropped (the
ids stay), logs, ldconfig's aux-cache and caches removed; the config gets that time for
`created` and every history step, and loses the build container's id and hostname. The image
is loaded with the new layers (the parent's are found by their digests, not sent again).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fnmatch
import hashlib
import io
import json
import logging
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from layerkit.engine.client import DockerClient
from layerkit.engine.images import find_image, load_image, remove_image
from layerkit.engine.save import save_image
from layerkit.errors import UsageError

__all__ = ["DEFAULT_EPOCH", "DROPPED", "Rewritten", "epoch_of", "rewrite_image"]

logger = logging.getLogger(__name__)
DEFAULT_EPOCH = 1_700_000_000  # the build context's file times: used when no epoch is given
# files that differ between two runs of the same step, and that nothing in the image needs
DROPPED = ("var/log/*", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old",
           "var/lib/dpkg/*-old", "root/.cache/*", "tmp/*", "var/tmp/*")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Rewritten:
    image_id: str
    layers_rewritten: int
    dropped_files: int


def epoch_of(environ: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH when set (checked), else DEFAULT_EPOCH."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return DEFAULT_EPOCH
    if not text.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={text!r} is not a Unix time in seconds")
    return int(text)


def rewrite_image(client: DockerClient, image_id: str, parent_layers: int, epoch: int
                  ) -> Rewritten:
    """Rewrite the layers of `image_id` above its first `parent_layers` and load the result."""
    with tempfile.TemporaryDirectory(prefix="layerkit-reproducible-") as tmp:
        saved = Path(tmp) / "image.tar"
        with save_image(client, image_id) as stream, saved.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
        with tarfile.open(saved) as archive:
            manifest = json.load(_member(archive, "manifest.json"))[0]
            config = json.load(_member(archive, manifest["Config"]))
            layer_names = list(manifest["Layers"])
            new_ids, dropped = [], 0
            for i, name in enumerate(layer_names[parent_layers:], start=parent_layers):
                target = Path(tmp) / f"layer{i}.tar"
                with target.open("wb") as out:
                    dropped += _rewrite_layer(_member(archive, name), out, epoch)
                new_ids.append(_sha256(target))
        body = _canonical(_config(config, parent_layers, new_ids, epoch))
        new_id = f"sha256:{hashlib.sha256(body).hexdigest()}"
        existed = find_image(client, new_id) is not None
        try:
            load_image(client, _load_tar(Path(tmp), body, len(layer_names), parent_layers))
        except BaseException:  # even mid-load: no untagged image of ours is left
            if not existed:
                with contextlib.suppress(Exception):
                    remove_image(client, new_id)
            raise
    logger.debug("reproducible: %s -> %s (%d layers, %d files dropped)", image_id[:19],
                 new_id[:19], len(new_ids), dropped)
    return Rewritten(new_id, len(new_ids), dropped)


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = archive.extractfile(name)
    if handle is None:
        raise UsageError(f"the saved image has no file {name}")
    return handle


def _dropped(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in DROPPED)


def _rewrite_layer(source: IO[bytes], out: IO[bytes], epoch: int) -> int:
    """Copy a layer tar with times clamped and the dropped files left out; returns how many
    files were left out. A file that a hardlink of the layer points to is kept."""
    dropped = 0
    with tarfile.open(fileobj=source, mode="r:") as layer:
        members = layer.getmembers()
        linked = {m.linkname.lstrip("./") for m in members if m.islnk()}
        with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dest:
            for member in members:
                path = member.name.lstrip("./").rstrip("/")
                if member.isfile() and _dropped(path) and path not in linked:
                    dropped += 1
                    continue
                dest.addfile(_clean(member, epoch),
                             layer.extractfile(member) if member.isfile() else None)
    return dropped


def _clean(member: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info = copy.copy(member)
    info.mtime = min(int(member.mtime), epoch)
    info.uname = info.gname = ""
    # keep extended attributes (file capabilities); drop access/change times and the like
    info.pax_headers = {k: v for k, v in member.pax_headers.items()
                        if k.startswith("SCHILY.xattr.")}
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _config(config: dict[str, Any], parent_layers: int, new_ids: list[str],
            epoch: int) -> dict[str, Any]:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = copy.deepcopy(config)
    diff_ids = list(result["rootfs"]["diff_ids"])[:parent_layers]
    result["rootfs"] = {"type": "layers", "diff_ids": [*diff_ids, *new_ids]}
    result["created"] = stamp
    result["history"] = [{**step, "created": stamp} for step in result.get("history") or []]
    result.pop("container", None)  # the id of the build's last step container
    for key in ("config", "container_config"):
        if isinstance(result.get(key), dict):
            # the classic builder puts the step container's id and the image before the
            # last step here: neither is the image's own
            result[key]["Hostname"] = ""
            result[key]["Image"] = ""
    return result


def _canonical(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _load_tar(tmp: Path, config: bytes, layers: int, parent_layers: int) -> Iterator[bytes]:
    """A legacy archive for `docker load` holding the new layers and the config; the parent's
    layers are named but not sent: the engine has them and finds them by digest."""
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    names = [f"{i}/layer.tar" for i in range(layers)]
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": names}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for i in range(parent_layers, layers):
            tar.add(tmp / f"layer{i}.tar", arcname=names[i])
            yield _drain(buffer)
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    yield _drain(buffer)


def _drain(buffer: io.BytesIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data
