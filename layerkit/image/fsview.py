"""Replaying image layers into the merged filesystem, the way overlayfs shows it.

Layer tars follow the OCI/overlay rules: `dir/.wh.<name>` deletes `dir/<name>` (and its subtree)
from the layers below; `dir/.wh..wh..opq` makes `dir` opaque, hiding everything the layers below
had under it; a non-directory replacing a directory hides the directory's subtree; a directory over
a directory only changes its metadata. Hardlink entries (tar type `1`) point at a path earlier in
the *same* layer and share its contents.

Every entry of every layer gets a fate: visible in the final filesystem, or `Hidden` by a newer
layer, with the layer and path that hid it and the cause (overwritten, deleted, metadata-only
copy-up, hardlink copy-up, opaque directory). The hider named is the *nearest* newer layer: the
instruction that actually replaced or removed this version.

Public API (entries are `archive.Entry`):

- `Hider`: feed it layers **newest first** (`feed(index, entries) -> list[Hidden | None]`, one fate
  per entry, `None` = visible); it keeps only path-keyed state, so `squash` can decide per entry,
  layer by layer, what to copy. Whiteout and opaque markers get fates too: a marker that a newer
  layer supersedes is hidden, one that still matters is visible (squash keeps it only when layers
  below the squashed range remain). A whiteout stays visible when a newer layer re-creates its
  path as a directory (in the same layer too): the directory then has to be opaque for the layers
  below. `hides_below(path)` tells whether any layer fed hid the older subtree under `path`.
  `link_targets(entries)` maps a layer's hardlink targets to the entries holding the data, so a
  visible hardlink whose target is hidden can be written as a regular file.
- `replay(layers) -> View`: the whole image (oldest layer first). `View.fates`, `View.final`
  (path -> `Node`: kind, mode, uid, gid, size, link target, content digest, layer, inode),
  `View.final_bytes`, `View.history(path)` (every `Version` of a path, oldest first),
  `View.reclaimable()` (the hidden files whose bytes no visible hardlink keeps: layer, entry, fate),
  and `View.fingerprint()` (sha256 over the final tree; contents included when entries were read
  with `hash_content=True`), which a squash result must reproduce.
- Helpers: `whiteout_target(path)`, `is_opaque_marker(path)`, `marked_path(entry)`.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

from layerkit.image.archive import Entry, EntryKind

__all__ = [
    "Cause",
    "Hidden",
    "Hider",
    "Node",
    "Version",
    "View",
    "is_opaque_marker",
    "link_targets",
    "marked_path",
    "replay",
    "whiteout_target",
]

Cause = Literal["overwritten", "deleted", "metadata_only", "hardlink_copy_up", "opaque_dir"]
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CONTENT_KINDS = ("file", "hardlink")


class Hidden(NamedTuple):
    """Why an entry is not in the final filesystem: `by_layer` at `by_path` hid it."""

    by_layer: int
    by_path: str
    cause: Cause


@dataclass(frozen=True, slots=True)
class Version:
    layer: int
    entry: Entry
    hidden: Hidden | None


class Node(NamedTuple):
    """A path of the merged tree. Hardlinked paths show as `file` and share `inode`."""

    path: str
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str           # symlink target; "" for everything else
    digest: str | None
    layer: int
    data_path: str          # the path holding the contents in `layer`'s tar (hardlink target)

    @property
    def inode(self) -> tuple[int, str]:
        """Hardlinked paths share it: (layer, first path of the contents in that layer's tar)."""
        return self.layer, self.data_path


def whiteout_target(path: str) -> str | None:
    """The path that `path` deletes if it is a whiteout (`.wh.<name>`), else None."""
    if WHITEOUT_PREFIX not in path:
        return None  # the common case, decided without splitting
    head, _, name = path.rpartition("/")
    if not name.startswith(WHITEOUT_PREFIX) or name == OPAQUE_MARKER:
        return None
    target = name[len(WHITEOUT_PREFIX):]
    return f"{head}/{target}" if head else target


def is_opaque_marker(path: str) -> bool:
    return path.endswith(OPAQUE_MARKER) and path.rpartition("/")[2] == OPAQUE_MARKER


def marked_path(entry: Entry) -> str:
    """The path an entry speaks for: a whiteout speaks for the path it deletes."""
    return whiteout_target(entry.path) or entry.path


def link_targets(entries: Sequence[Entry]) -> dict[str, Entry]:
    """For a layer with hardlinks: target path -> the regular file entry that holds the data."""
    if not any(e.kind == "hardlink" for e in entries):
        return {}
    return {e.path: e for e in entries if e.kind == "file"}


class _Seen(NamedTuple):
    """The nearest newer version at a path, with its contents resolved through hardlinks."""

    layer: int
    entry: Entry
    size: int
    digest: str | None
    linked: bool  # shares its inode with another path of its layer


class Hider:
    """Decides, layer by layer from the newest, which entries newer layers hide."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self._marks: dict[str, Hidden] = {}   # hides everything strictly below the key

    def feed(self, layer: int, entries: Sequence[Entry], *,
             last: bool = False) -> list[Hidden | None]:
        """Fates of one layer's entries; call with layers in decreasing index order. With
        `last` (no older layer follows) the entries are not remembered: nothing would ask."""
        targets = link_targets(entries)
        linked = {e.linkname for e in entries if e.kind == "hardlink"} if targets else set()
        above: dict[str, Hidden | None] = {}  # per directory: the mark over it (marks are
        fates = [self._fate(e, targets, above) for e in entries]  # fixed until _remember)
        at: dict[str, int] = {}
        for i, entry in enumerate(entries):  # within a tar, a later entry replaces an earlier one
            path = entry.path
            if WHITEOUT_PREFIX in path:  # marked_path, inline
                path = whiteout_target(path) or path
            earlier = at.get(path)
            # ...except a directory after a whiteout of its path (`.wh.d`, `d/`, as kaniko writes
            # a re-created directory): as across layers (`_fate`), the whiteout still hides the
            # layers below, so it stays visible and a squash writes it as an opaque marker
            if earlier is not None and fates[earlier] is None and not (
                    entry.kind == "dir" and entries[earlier].path != path):
                fates[earlier] = Hidden(layer, path, "overwritten")
            at[path] = i
        if not last:
            for entry in entries:
                self._remember(layer, entry, targets, linked)
        return fates

    def hides_below(self, path: str) -> bool:
        """Did any layer fed so far hide the older layers' subtree under `path` (a whiteout of
        `path`, an opaque marker in it, a non-directory at it), even if a newer entry then hid
        that entry? A squash over kept layers needs the effect when `path` ends up a directory."""
        return path in self._marks

    def _fate(self, entry: Entry, targets: dict[str, Entry],
              above: dict[str, Hidden | None]) -> Hidden | None:
        path = entry.path
        if WHITEOUT_PREFIX in path:  # marked_path, inline: this runs once per entry
            path = whiteout_target(path) or path
        best = self._mark_above(path, above) if self._marks else None
        seen = self._seen.get(path)
        if seen is not None and seen.entry.kind == "dir" and path != entry.path:
            return best  # a whiteout under a re-created directory still hides the layers below
        if seen is not None and (best is None or seen.layer < best.by_layer):
            best = Hidden(seen.layer, seen.entry.path, _cause(entry, targets, seen))
        return best

    def _mark_above(self, path: str, above: dict[str, Hidden | None]) -> Hidden | None:
        """The mark of the oldest layer on a strict ancestor of `path` (the nearest ancestor
        among equals), memoised per directory in `above`: a tar lists a directory's entries
        together, so most entries cost one look-up instead of one per ancestor."""
        cut = path.rfind("/")
        if cut <= 0:
            return None
        parent = directory = path[:cut]
        missing: list[str] = []
        best: Hidden | None = None
        while True:
            if directory in above:
                best = above[directory]
                break
            missing.append(directory)
            cut = directory.rfind("/")
            if cut <= 0:
                break
            directory = directory[:cut]
        for directory in reversed(missing):  # from the outermost down
            mark = self._marks.get(directory)
            if mark is not None and (best is None or mark.by_layer <= best.by_layer):
                best = mark
            above[directory] = best
        return above[parent]

    def _remember(self, layer: int, entry: Entry, targets: dict[str, Entry],
                  linked: set[str]) -> None:
        path = marked_path(entry)
        size, digest = _contents(entry, targets)
        self._seen[path] = _Seen(layer, entry, size, digest,
                                 entry.kind == "hardlink" or entry.path in linked)
        if path != entry.path:
            self._marks[path] = Hidden(layer, entry.path, "deleted")
        elif is_opaque_marker(path):
            self._marks[posixpath.dirname(path)] = Hidden(layer, path, "opaque_dir")
        elif entry.kind != "dir":
            self._marks[path] = Hidden(layer, path, "overwritten")


def _contents(entry: Entry, targets: dict[str, Entry]) -> tuple[int, str | None]:
    if entry.kind == "hardlink":
        target = targets.get(entry.linkname)
        return (target.size, target.digest) if target else (0, None)
    return entry.size, entry.digest


def _cause(older: Entry, targets: dict[str, Entry], newer: _Seen) -> Cause:
    if whiteout_target(newer.entry.path) is not None:
        return "deleted"
    if older.kind not in _CONTENT_KINDS or newer.entry.kind not in _CONTENT_KINDS:
        return "overwritten"
    size, digest = _contents(older, targets)
    if size != newer.size:
        return "overwritten"
    if digest is not None and newer.digest is not None:
        same = digest == newer.digest
    else:  # contents unknown: equal sizes count as equal only when the metadata changed
        same = newer.linked or (older.mode, older.uid, older.gid) != (
            newer.entry.mode, newer.entry.uid, newer.entry.gid)
    if not same:
        return "overwritten"
    return "hardlink_copy_up" if newer.linked else "metadata_only"


# --- the whole image -----------------------------------------------------------------------------

def replay(layers: Sequence[Sequence[Entry]]) -> View:
    """Replay an image's layers (oldest first) into its merged view."""
    hider = Hider()
    fates: list[tuple[Hidden | None, ...]] = [()] * len(layers)
    for index in range(len(layers) - 1, -1, -1):
        fates[index] = tuple(hider.feed(index, layers[index], last=index == 0))
    return View(tuple(tuple(entries) for entries in layers), tuple(fates))


@dataclass(frozen=True)
class View:
    layers: tuple[tuple[Entry, ...], ...]
    fates: tuple[tuple[Hidden | None, ...], ...]

    @cached_property
    def final(self) -> dict[str, Node]:
        """The merged tree: visible entries, without whiteouts and opaque markers."""
        tree: dict[str, Node] = {}
        for layer, entries in enumerate(self.layers):
            targets = link_targets(entries)
            for entry, fate in zip(entries, self.fates[layer], strict=True):
                if fate is not None:
                    continue
                path, kind, size, mode, uid, gid, link, _, digest = entry  # Entry's fields
                if WHITEOUT_PREFIX in path and (
                        marked_path(entry) != path or is_opaque_marker(path)):
                    continue
                if kind == "hardlink":
                    tree[path] = _node(layer, entry, targets)
                else:  # _node's other case, inline (keep the two alike): most paths take it
                    tree[path] = Node(path, kind, mode, uid, gid, size,
                                      link if kind == "symlink" else "", digest, layer, path)
        return tree

    @cached_property
    def live_inodes(self) -> frozenset[tuple[int, str]]:
        return frozenset((node.layer, node.data_path) for node in self.final.values()
                         if node.kind == "file")

    @cached_property
    def final_bytes(self) -> int:
        """Content bytes of the merged tree; hardlinked paths count once."""
        sizes = {node.inode: node.size for node in self.final.values() if node.kind == "file"}
        return sum(sizes.values())

    @property
    def content_bytes(self) -> int:
        return sum(e.size for entries in self.layers for e in entries if e.kind == "file")

    @property
    def reclaimable_bytes(self) -> int:
        return self.content_bytes - self.final_bytes

    def reclaimable(self) -> Iterator[tuple[int, Entry, Hidden]]:
        """Every hidden regular file whose bytes no visible path uses, as (layer, entry, fate):
        their sizes add up to `reclaimable_bytes`."""
        live = self.live_inodes
        for layer, entries in enumerate(self.layers):
            for entry, hidden in zip(entries, self.fates[layer], strict=True):
                if hidden is not None and entry.kind == "file" and (layer, entry.path) not in live:
                    yield layer, entry, hidden

    def history(self, path: str) -> tuple[Version, ...]:
        """Every version of `path` (whiteouts included), oldest first."""
        return tuple(Version(layer, self.layers[layer][i], self.fates[layer][i])
                     for layer, i in self._by_path.get(path, ()))

    @cached_property
    def _by_path(self) -> dict[str, list[tuple[int, int]]]:
        index: dict[str, list[tuple[int, int]]] = {}
        for layer, entries in enumerate(self.layers):
            for i, entry in enumerate(entries):
                index.setdefault(marked_path(entry), []).append((layer, i))
        return index

    def fingerprint(self) -> str:
        """sha256 over the merged tree: paths, kinds, modes, owners, link targets, contents."""
        digest = hashlib.sha256()
        for path in sorted(self.final):
            n = self.final[path]
            content = n.digest or f"size:{n.size}"
            digest.update(f"{path}\0{n.kind}\0{n.mode:o}\0{n.uid}\0{n.gid}\0{n.linkname}\0"
                          f"{content}\n".encode("utf-8", "surrogateescape"))
        return f"sha256:{digest.hexdigest()}"


def _node(layer: int, entry: Entry, targets: dict[str, Entry]) -> Node:
    if entry.kind == "hardlink":
        target = targets.get(entry.linkname)
        size, digest = (target.size, target.digest) if target else (0, None)
        return Node(entry.path, "file", entry.mode, entry.uid, entry.gid, size, "", digest,
                    layer, entry.linkname)
    link = entry.linkname if entry.kind == "symlink" else ""
    return Node(entry.path, entry.kind, entry.mode, entry.uid, entry.gid, entry.size, link,
                entry.digest, layer, entry.path)
