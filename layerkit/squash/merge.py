"""Merging a range of layers into one layer tar: the plan from metadata, then one copy pass.

`plan_merge` decides from entry metadata alone (`archive.Entry`, newest layer first through
`fsview.Hider`, sets and dicts: linear in entries) what the new layer holds:

- every entry of the range that is visible in the final filesystem, copied as it was (modes,
  owners, times, link targets, PAX records such as xattrs);
- a visible hardlink whose target is hidden becomes a regular file with the target's contents
  (further links to the same hidden target link to that file);
- whiteout and opaque markers only where they hide something in the kept layers below the range
  (none for a full squash); a whiteout under a directory re-created later becomes an opaque marker,
  and so does a directory the range re-created after hiding its kept subtree with an entry that
  is itself hidden now (`.wh.d` then `d/` in one layer; a file `d`, then `d/` in a newer layer).

`write_layer` then reads the archive once more as a stream (a spool file, a second `docker save`
or the user's archive: layers in any order) and copies the planned members into a tar. Entries
whose names or hardlink targets would escape the root are refused there, where the raw names are
seen. Memory holds metadata only; file contents are copied in bounded chunks.
"""

from __future__ import annotations

import copy
import hashlib
import io
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from layerkit.errors import SquashError, UnsafeEntry
from layerkit.image.archive import Entry, Layer, decompressed
from layerkit.image.fsview import OPAQUE_MARKER, Hider, is_opaque_marker, replay, whiteout_target
from layerkit.image.streams import Bounded
from layerkit.image.tarcopy import RawMember, copy_data, raw_members
from layerkit.image.tarstream import Counted, headers

__all__ = ["Conversion", "MergePlan", "WrittenLayer", "plan_merge", "write_layer"]

# Large enough that Python's per-call cost vanishes, small enough that freed buffers do not
# grow the heap (glibc serves repeated 1 MB requests from the heap once it has freed one).
BUFSIZE = 256 << 10


@dataclass(frozen=True)
class Conversion:
    """Visible hardlinks of `layer` whose target `target` is hidden: the first path gets the
    contents as a regular file, the others link to it."""

    layer: int
    target: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class MergePlan:
    start: int                                  # first layer of the range; below it are kept
    keep: tuple[frozenset[int], ...]            # per range layer: positions of entries to copy
    markers: tuple[Entry, ...]                  # whiteout/opaque markers, written first
    conversions: tuple[Conversion, ...]
    dropped_markers: int                        # visible markers with nothing below to hide

    def kept_in(self, layer: int) -> frozenset[int]:
        return self.keep[layer - self.start]


@dataclass(frozen=True)
class WrittenLayer:
    diff_id: str          # sha256 of the tar written
    size: int
    members: int


def plan_merge(layers: Sequence[Sequence[Entry]], start: int) -> MergePlan:
    """Plan the merge of `layers[start:]` (oldest first) over the kept `layers[:start]`."""
    hider = Hider()
    fates = {i: hider.feed(i, layers[i]) for i in range(len(layers) - 1, start - 1, -1)}
    visible = {i: [k for k, f in enumerate(fates[i]) if f is None] for i in fates}
    final_dirs = {layers[i][k].path: layers[i][k] for i in visible for k in visible[i]
                  if layers[i][k].kind == "dir"}
    below = _paths_below(layers[:start])
    keep: dict[int, set[int]] = {i: set() for i in visible}
    markers: dict[str, Entry] = {}
    dropped = 0
    for i in sorted(visible, reverse=True):
        for k in visible[i]:
            entry = layers[i][k]
            marker = _marker(entry, final_dirs, below)
            if marker is None:
                keep[i].add(k)
            elif marker:
                markers.setdefault(marker, _as_marker(entry, marker))
            else:
                dropped += 1
    # A range entry that hid the kept subtree under a path (a whiteout, an opaque marker, a file
    # replacing a directory) may itself be hidden by a directory re-created there, in a newer
    # layer or later in the same one. Its effect is lost with it unless that directory is opaque.
    parents = {posixpath.dirname(path) for path in below}
    for path, directory in final_dirs.items():
        if path in parents and hider.hides_below(path):
            opq = f"{path}/{OPAQUE_MARKER}"
            markers.setdefault(opq, Entry(opq, "file", 0, 0o644, directory.uid, directory.gid,
                                          "", directory.mtime))
    _drop_under_opaque(markers)
    conversions = tuple(c for i in sorted(visible) for c in _conversions(i, layers[i], keep[i]))
    return MergePlan(start, tuple(frozenset(keep[i]) for i in sorted(keep)),
                     tuple(markers[p] for p in sorted(markers)), conversions, dropped)


def _drop_under_opaque(markers: dict[str, Entry]) -> None:
    """Under a directory the new layer makes opaque nothing of the kept layers shows, so a
    whiteout there, or an opaque marker deeper down, would hide nothing more: drop them."""
    opaque = {posixpath.dirname(path) for path in markers if is_opaque_marker(path)}
    if not opaque:
        return
    for path in list(markers):
        scope = posixpath.dirname(path)  # what a whiteout hides lies in its directory
        if is_opaque_marker(path):
            scope = posixpath.dirname(scope)  # an opaque marker's own directory does not count
        while scope:
            if scope in opaque:
                del markers[path]
                break
            scope = posixpath.dirname(scope)


def _paths_below(layers: Sequence[Sequence[Entry]]) -> frozenset[str]:
    """Every path of the kept layers' merged tree, and every directory above one."""
    if not layers:
        return frozenset()
    paths = set(replay(layers).final)
    for path in list(paths):
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in paths:
            path = path[:cut]
            paths.add(path)
            cut = path.rfind("/")
    return frozenset(paths)


def _marker(entry: Entry, final_dirs: dict[str, Entry], below: frozenset[str]) -> str | None:
    """None: not a marker, copy it. Else the marker path to write, or "" to drop it."""
    target = whiteout_target(entry.path)
    if target is not None:
        if target not in below:
            return ""
        if target in final_dirs:  # deleted, then re-created as a directory by a newer layer
            return f"{target}/{OPAQUE_MARKER}"
        return entry.path
    if is_opaque_marker(entry.path):
        return entry.path if posixpath.dirname(entry.path) in below else ""
    return None


def _as_marker(entry: Entry, path: str) -> Entry:
    return Entry(path, "file", 0, entry.mode, entry.uid, entry.gid, "", entry.mtime)


def _conversions(layer: int, entries: Sequence[Entry], kept: set[int]) -> Iterator[Conversion]:
    kept_paths = {entries[k].path for k in kept if entries[k].kind == "file"}
    files = {e.path for e in entries if e.kind == "file"}
    hidden_targets: dict[str, list[str]] = {}
    for k in sorted(kept):
        entry = entries[k]
        if entry.kind == "hardlink" and entry.linkname not in files:
            raise SquashError(f"layer {layer}: hardlink {entry.path} points at {entry.linkname}, "
                              "which is not a regular file of its layer")
        if entry.kind == "hardlink" and entry.linkname not in kept_paths:
            hidden_targets.setdefault(entry.linkname, []).append(entry.path)
    for target, paths in hidden_targets.items():
        yield Conversion(layer, target, tuple(paths))


# --- the copy pass ----------------------------------------------------------------------------

class _Hashing:
    """Counts and hashes what is written through it (the new layer's diff_id). Small writes
    (headers, tiny files) are gathered first: one hash update and one write per megabyte."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0
        self.pending = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        self.pending += data
        self.size += len(data)
        if len(self.pending) >= BUFSIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        self.sha.update(self.pending)
        self.sink.write(self.pending)
        self.pending.clear()

    def tell(self) -> int:
        return self.size


def write_layer(stream: IO[bytes], layers: Sequence[Layer], plan: MergePlan,
                out: IO[bytes]) -> WrittenLayer:
    """Copy the planned members from the archive on `stream` (read once, forward) into `out`."""
    blobs = _blobs(layers, plan)
    sink = _Hashing(out)
    count = _write_markers(plan, sink)
    counted = Counted(stream)
    for member in headers(counted):
        group = blobs.pop(member.offset, None) if member.type not in (b"1", b"2") else None
        if group is not None:
            raw = io.BufferedReader(Bounded(counted, member.size), BUFSIZE)
            count += _copy_layers(_layer_stream(raw, group[0]), group, plan, sink)
    if blobs:
        missing = ", ".join(g[0].member for g in blobs.values())
        raise SquashError(f"the second read of the image lacks layer(s) {missing}")
    return _finish(sink, count)


def write_layer_seekable(fileobj: IO[bytes], layers: Sequence[Layer], plan: MergePlan,
                         out: IO[bytes]) -> WrittenLayer:
    """As `write_layer`, for a seekable archive: only the range's layers are read, oldest
    first. (A save stores layers in an order of its own, a legacy save by v1 layer ID, an OCI
    layout by digest; layer order gives the layer a squash of the engine's layer directories
    writes. `write_layer`, reading forward, has to take the stream's order.)"""
    sink = _Hashing(out)
    count = _write_markers(plan, sink)
    for offset, group in _blobs(layers, plan).items():  # by first place in the range
        fileobj.seek(offset)
        raw = io.BufferedReader(Bounded(Counted(fileobj), group[0].stored_size), BUFSIZE)
        count += _copy_layers(_layer_stream(raw, group[0]), group, plan, sink)
    return _finish(sink, count)


def _write_markers(plan: MergePlan, sink: _Hashing) -> int:
    for marker in plan.markers:
        sink.write(_marker_info(marker).tobuf(tarfile.PAX_FORMAT))
    return len(plan.markers)


def _finish(sink: _Hashing, count: int) -> WrittenLayer:
    sink.write(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive
    sink.flush()
    return WrittenLayer(f"sha256:{sink.sha.hexdigest()}", sink.size, count)


def _blobs(layers: Sequence[Layer], plan: MergePlan) -> dict[int, list[Layer]]:
    """Range layers by where their data is stored: an archive stores a repeated layer once."""
    blobs: dict[int, list[Layer]] = {}
    for layer in layers[plan.start:]:
        blobs.setdefault(layer.data_offset, []).append(layer)
    return blobs


def _layer_stream(raw: IO[bytes], layer: Layer) -> Counted:
    return Counted(decompressed(raw, layer.compression))


@dataclass
class _Copy:
    """One range layer's decisions while its blob streams past."""

    layer: Layer
    kept: frozenset[int]
    converted: dict[str, Conversion]
    done: set[str]


def _copy_layers(stream: Counted, group: list[Layer], plan: MergePlan, sink: _Hashing) -> int:
    copies = []
    for layer in group:
        converted = {c.target: c for c in plan.conversions if c.layer == layer.index}
        copies.append(_Copy(layer, plan.kept_in(layer.index), converted,
                            {p for c in converted.values() for p in c.paths}))
    position, written = -1, 0
    for member in raw_members(stream):
        path = _checked(member, group[0])
        if not path:
            continue
        position += 1
        _same_entry(group[0], position, path)
        for job in copies:
            written += _copy_member(stream, member, path, position, job=job, sink=sink)
    return written


def _copy_member(stream: Counted, member: RawMember, path: str, position: int, *,
                 job: _Copy, sink: _Hashing) -> int:
    if path in job.converted:
        return _write_conversion(stream, member, job.converted[path], job.layer, sink)
    if position not in job.kept or path in job.done:
        return 0
    sink.write(member.header)  # verbatim: every field as the engine wrote it
    if member.size:
        copy_data(stream, member, sink)
    return 1


def _write_conversion(stream: Counted, member: RawMember, conversion: Conversion,
                      layer: Layer, sink: _Hashing) -> int:
    """The hidden target's data under the first link's path; other links point at that path."""
    if member.type not in (b"0", b"7"):
        raise SquashError(f"layer {layer.index}: hardlink target {conversion.target} is not a "
                          "regular file")
    entries = {e.path: e for e in layer.entries if e.kind == "hardlink"}
    base = tarfile.TarInfo.frombuf(member.header[-tarfile.BLOCKSIZE:], tarfile.ENCODING,
                                   "surrogateescape")
    base.pax_headers = {k: v for k, v in member.pax.items()
                        if k not in ("path", "linkpath", "size")}
    first, *others = conversion.paths
    as_file = _with_owner(copy.copy(base), entries[first])
    as_file.name, as_file.type, as_file.size, as_file.linkname = first, tarfile.REGTYPE, \
        member.size, ""
    sink.write(as_file.tobuf(tarfile.PAX_FORMAT))
    copy_data(stream, member, sink)
    for path in others:
        link = _with_owner(copy.copy(base), entries[path])
        link.name, link.type, link.linkname, link.size = path, tarfile.LNKTYPE, first, 0
        sink.write(link.tobuf(tarfile.PAX_FORMAT))
    return len(conversion.paths)


def _with_owner(info: tarfile.TarInfo, entry: Entry) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
    return info


def _checked(member: RawMember, layer: Layer) -> str:
    """The member's normalised path; entries escaping the root are refused."""
    if _escapes(member.name):
        raise UnsafeEntry(f"layer {layer.index}: entry {member.name!r} escapes the image root")
    if member.type == b"1" and (member.linkname.startswith("/") or _escapes(member.linkname)):
        raise UnsafeEntry(f"layer {layer.index}: hardlink {member.name!r} points outside the "
                          f"layer ({member.linkname!r})")
    return _norm(member.name)


def _escapes(name: str) -> bool:
    if ".." not in name:
        return False
    path = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    return path == ".." or path.startswith("../")


def _same_entry(layer: Layer, position: int, path: str) -> None:
    """The copy pass must see the entries the plan was made from, in the same order."""
    if position >= len(layer.entries) or layer.entries[position].path != path:
        raise SquashError(f"layer {layer.index} changed between reads (at {path}); retry")


def _marker_info(marker: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(marker.path)
    info.type, info.size = tarfile.REGTYPE, 0
    info.mode, info.uid, info.gid, info.mtime = marker.mode, marker.uid, marker.gid, marker.mtime
    return info


def _norm(name: str) -> str:
    """As archive normalises entry paths; the common clean name skips normpath."""
    if "." not in name and "//" not in name:
        return name.strip("/")
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path
