"""The merged layer written straight from the engine's layer directories (the storage source).

`merge.plan_merge` decides from the entries which ones the new layer holds, as for a save. A
layer whose entries came from its tar-split record (`image.tarsplit`) is read from the record
again: each planned member's header blocks verbatim, as `merge.write_layer` copies them from a
save, in the same order, and the data from the file at its path; so the new layer is the one a
squash of the save writes. A layer that was walked has each planned member made from its
directory: a header from the entry (with the device numbers and the one xattr the engine's tar
writer keeps, `security.capability`, read from the file) and, for a regular file, its bytes.
Markers and hardlinks made regular files follow the same rules as `merge.write_layer`. A file
that no longer has the size it had when the layer was read, or a record that no longer gives
the entries read, means the image changed underneath: an error, never a wrong layer.
"""

from __future__ import annotations

import os
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple

from layerkit.errors import SourceChanged
from layerkit.image import tarsplit
from layerkit.image.archive import Entry, Layer
from layerkit.image.tarcopy import RawMember
from layerkit.image.tarstream import Counted, byte_sum
from layerkit.squash.merge import (
    Conversion,
    MergePlan,
    WrittenLayer,
    _finish,
    _Hashing,
    _write_conversion,
    _write_markers,
)

__all__ = ["write_layer_from_dirs"]

CAPABILITY = "security.capability"  # the only xattr Docker 20.10's tar writer stores
_CHUNK = 1 << 20
# name, mode, uid, gid, size, mtime, checksum, type, linkname, magic, version, uname, gname,
# devmajor, devminor, prefix (and 12 bytes of padding): a ustar header block
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def write_layer_from_dirs(ref: str, dirs: Sequence[Path], layers: Sequence[Layer],
                          plan: MergePlan, out: IO[bytes]) -> WrittenLayer:
    """The new layer of `plan` into `out`, from the layer directories `dirs` (oldest first)."""
    sink = _Hashing(out)
    count = _write_markers(plan, sink)
    done: set[int] = set()
    for layer in layers[plan.start:]:
        if layer.index in done:
            continue
        if tarsplit.is_split(layer.member):
            # a save stores a layer repeated in the range once, and the merge copies each of
            # its members for every place of it at once: so here too
            group = [lay for lay in layers[layer.index:]
                     if lay.digest == layer.digest and tarsplit.is_split(lay.member)]
            done.update(lay.index for lay in group)
            count += _write_recorded(ref, sink, dirs, group, plan)
        else:
            count += _write_walked(ref, sink, str(dirs[layer.index]), layer, plan)
    return _finish(sink, count)


def _write_walked(ref: str, sink: _Hashing, root: str, layer: Layer, plan: MergePlan) -> int:
    """The planned members of a layer read by walking its directory, built from the entries."""
    count = 0
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
    return count


class _Job(NamedTuple):
    """One place of a recorded layer in the range, and what the plan keeps of it there."""

    layer: Layer
    root: str
    kept: frozenset[int]
    converted: dict[str, Conversion]
    done: set[str]


def _write_recorded(ref: str, sink: _Hashing, dirs: Sequence[Path], group: list[Layer],
                    plan: MergePlan) -> int:
    """The planned members of the layers of `group` (one layer, repeated), read from its
    tar-split record, as `merge._copy_layers` writes them from a save: record order, header
    blocks verbatim, a hidden hardlink target converted where the target passes."""
    jobs = []
    for layer in group:
        converted = {c.target: c for c in plan.conversions if c.layer == layer.index}
        jobs.append(_Job(layer, str(dirs[layer.index]), plan.kept_in(layer.index), converted,
                         {path for c in converted.values() for path in c.paths}))
    first = group[0]
    count = 0
    try:
        for position, (entry, member) in enumerate(tarsplit.members(Path(first.member))):
            if position >= len(first.entries) or first.entries[position].path != entry.path:
                raise SourceChanged(f"image {ref} changed while it was being read (layer "
                                    f"{first.index}'s record differs at {entry.path})")
            for job in jobs:
                count += _write_member(job, position, entry.path, member, sink)
    except (FileNotFoundError, EOFError):
        raise SourceChanged(f"image {ref} changed or was removed while it was being read "
                            f"(a file of layer {first.index} went away or shrank)") from None
    except _Resized:
        raise SourceChanged(f"image {ref} changed while it was being read (a file of layer "
                            f"{first.index} changed size)") from None
    except tarsplit.Unusable as exc:
        raise SourceChanged(f"image {ref} changed while it was being read ({exc})") from None
    return count


def _write_member(job: _Job, position: int, path: str, member: RawMember,
                  sink: _Hashing) -> int:
    if path in job.converted:
        with open(f"{job.root}/{path}", "rb") as fh:
            return _write_conversion(Counted(fh), member, job.converted[path], job.layer, sink)
    if position not in job.kept or path in job.done:
        return 0
    sink.write(member.header)  # verbatim, as the merge copies it from a save
    if member.size:
        _copy(f"{job.root}/{path}", member.size, sink)
    return 1


def _write(ref: str, sink: _Hashing, root: str, entry: Entry, data_from: str = "") -> int:
    full = f"{root}/{data_from or entry.path}"
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


def _header(entry: Entry, full: str) -> bytes:
    """The member's header: plain ustar where the entry fits it (most do), else PAX through
    `tarfile` (long names, large numbers, the capability xattr)."""
    major = minor = 0
    if entry.kind in ("char", "block"):
        rdev = os.lstat(full).st_rdev
        major, minor = os.major(rdev), os.minor(rdev)
    pax: dict[str, str] = {}
    if entry.kind in ("file", "dir"):
        try:
            value = os.getxattr(full, CAPABILITY, follow_symlinks=False)
        except OSError:
            value = None
        if value is not None:
            pax[f"SCHILY.xattr.{CAPABILITY}"] = value.decode("utf-8", "surrogateescape")
    name = entry.path + "/" if entry.kind == "dir" else entry.path
    size = entry.size if entry.kind == "file" else 0
    block = None if pax else _ustar(name, entry, size, major, minor)
    if block is not None:
        return block
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = _TYPES[entry.kind], size, entry.linkname
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    info.devmajor, info.devminor, info.pax_headers = major, minor, pax
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _ustar(name: str, entry: Entry, size: int, major: int, minor: int) -> bytes | None:
    """A ustar header block (as `tarfile` writes one, without its per-field overhead: most of
    the merge's time on many small files), or None when the entry does not fit one."""
    path = name.encode("utf-8", "surrogateescape")
    link = entry.linkname.encode("utf-8", "surrogateescape")
    prefix = b""
    if len(path) > 100:
        cut = path.find(b"/", len(path) - 101)  # the rest after the cut must fit 100 bytes
        if cut <= 0 or cut > 155:
            return None
        prefix, path = path[:cut], path[cut + 1:]
    small = (entry.mode, entry.uid, entry.gid, major, minor)
    if len(link) > 100 or max(small) >= 8 ** 7 or max(size, entry.mtime) >= 8 ** 11 or \
            min(*small, entry.mtime) < 0:
        return None
    devices = (b"%07o\0" % major, b"%07o\0" % minor) if entry.kind in ("char", "block") \
        else (b"", b"")  # as tarfile: empty for other kinds
    block = _USTAR.pack(path, b"%07o\0" % entry.mode, b"%07o\0" % entry.uid,
                        b"%07o\0" % entry.gid, b"%011o\0" % size, b"%011o\0" % entry.mtime,
                        b" " * 8, _TYPES[entry.kind], link, b"ustar\0", b"00", b"", b"",
                        *devices, prefix)
    return block[:148] + b"%06o\0 " % byte_sum(block) + block[156:]


class _Resized(Exception):
    pass


def _copy(path: str, size: int, sink: _Hashing) -> None:
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
