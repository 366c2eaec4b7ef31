"""The merged layer written straight from the engine's layer directories (the storage source).

`merge.plan_merge` decides from the entries which ones the new layer holds, as for a save; here
each planned entry's member is made from its layer directory: a header from the entry (with the
device numbers and the one xattr the engine's tar writer keeps, `security.capability`, read from
the file) and, for a regular file, its bytes. Markers and hardlinks made regular files follow the
same rules as `merge.write_layer`. A file that no longer has the size it had when the layer was
walked means the image changed underneath: an error, never a wrong layer.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from layerkit.errors import SourceChanged
from layerkit.image.archive import Entry, Layer
from layerkit.squash.merge import MergePlan, WrittenLayer, _finish, _Hashing, _write_markers

__all__ = ["write_layer_from_dirs"]

CAPABILITY = "security.capability"  # the only xattr Docker 20.10's tar writer stores
_CHUNK = 1 << 20
_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def write_layer_from_dirs(ref: str, dirs: Sequence[Path], layers: Sequence[Layer],
                          plan: MergePlan, out: IO[bytes]) -> WrittenLayer:
    """The new layer of `plan` into `out`, from the layer directories `dirs` (oldest first)."""
    sink = _Hashing(out)
    count = _write_markers(plan, sink)
    for layer in layers[plan.start:]:
        root = dirs[layer.index]
        converted = {c.target: c.paths for c in plan.conversions if c.layer == layer.index}
        as_links = {path for paths in converted.values() for path in paths}
        by_path = {e.path: e for e in layer.entries}
        for k in sorted(plan.kept_in(layer.index)):
            entry = layer.entries[k]
            if entry.path not in as_links:
                count += _write(ref, sink, root, entry)
        for target, paths in converted.items():
            first, *others = paths
            source = by_path[target]
            count += _write(ref, sink, root, by_path[first]._replace(
                kind="file", size=source.size, linkname=""), data_from=target)
            for path in others:
                count += _write(ref, sink, root, by_path[path]._replace(linkname=first))
    return _finish(sink, count)


def _write(ref: str, sink: _Hashing, root: Path, entry: Entry, data_from: str = "") -> int:
    full = root / (data_from or entry.path)
    try:
        sink.write(_header(entry, full))
        if entry.kind == "file" and entry.size:
            _copy(full, entry.size, sink)
    except FileNotFoundError:
        raise SourceChanged(f"image {ref} changed or was removed while it was being read "
                            f"({entry.path} went away)") from None
    except _Resized:
        raise SourceChanged(f"image {ref} changed while it was being read "
                            f"({entry.path} changed size)") from None
    return 1


def _header(entry: Entry, full: Path) -> bytes:
    info = tarfile.TarInfo(entry.path + "/" if entry.kind == "dir" else entry.path)
    info.type = _TYPES[entry.kind]
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    info.size = entry.size if entry.kind == "file" else 0
    info.linkname = entry.linkname
    if entry.kind in ("char", "block"):
        rdev = os.lstat(full).st_rdev
        info.devmajor, info.devminor = os.major(rdev), os.minor(rdev)
    if entry.kind in ("file", "dir"):
        try:
            value = os.getxattr(full, CAPABILITY, follow_symlinks=False)
        except OSError:
            value = None
        if value is not None:
            info.pax_headers = {f"SCHILY.xattr.{CAPABILITY}": value.decode("utf-8",
                                                                          "surrogateescape")}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _Resized(Exception):
    pass


def _copy(path: Path, size: int, sink: _Hashing) -> None:
    left = size
    with open(path, "rb", buffering=0) as fh:
        while left > 0:
            chunk = fh.read(min(left, _CHUNK))
            if not chunk:
                raise _Resized
            sink.write(chunk)
            left -= len(chunk)
        if fh.read(1):
            raise _Resized
    if size % tarfile.BLOCKSIZE:
        sink.write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))
