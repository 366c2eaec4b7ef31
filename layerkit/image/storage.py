"""Layers read where an overlay2 engine keeps them, as `docker save` would give them.

An engine with the overlay2 driver keeps each layer unpacked in a directory (`docker image
inspect`: `GraphDriver.Data.UpperDir`, then `LowerDir`, top first), and beside it, in its layer
store, the layer's tar-split record: the header bytes of the layer's tar, from which a save
re-assembles it. The entries come from that record (`tarsplit`): the save's, exactly, for every
layer. Where a record is missing or does not add up, the directory is walked instead (said
under `--verbose`). The layer tar the engine wrote for a layer it built is its tar writer's walk
of that directory, so walking it the same way gives the same entries (a layer it unpacked from
a tar keeps that tar's order and header fields in a save, which the walk cannot know):

- directories in pre-order, each directory's names in lexical order (moby's `pkg/archive`
  walks with Go's `filepath.Walk`); the layer's root itself is not an entry; sockets are skipped;
- a 0/0 character device is a whiteout: `dir/.wh.<name>`, a regular file, mode 0600, at the
  place of `<name>`; a directory whose `trusted.overlay.opaque` (`user.overlay.opaque` on
  rootless engines) is `y` is followed by `dir/.wh..wh..opq` (mode 0777 & the directory's, mtime 0);
- a regular file with more than one link whose inode was met before in the layer is a hardlink
  to the first path met (contents counted once).

Contents are read only when asked for (`add_digests`): the analysis needs them only to tell a
metadata-only copy-up from a rewrite of the same size. The image's config (digest, diff_ids,
history) is the engine's own file, checked against the image ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from layerkit.errors import SourceChanged
from layerkit.image import tarsplit
from layerkit.image.archive import (
    Entry,
    EntryKind,
    Layer,
    SavedImage,
    gc_paused,
    history_steps,
)
from layerkit.image.fsview import marked_path

__all__ = [
    "LayerDirs",
    "add_digests",
    "layer_dirs",
    "layer_entries",
    "read_image",
    "saved_refs",
    "unreadable_reason",
]

logger = logging.getLogger(__name__)

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
WHITEOUT_MODE = 0o600
HEAD = 64 << 10   # what is read first of same-sized versions: usually enough to tell them apart
_CHUNK = 1 << 20
_EMPTY = "xxh3:" + xxhash.xxh3_128_hexdigest(b"")


@dataclass(frozen=True)
class LayerDirs:
    """Where an image's layers are: `dirs` oldest first, `splits` their tar-split records;
    `config` is the engine's config file."""

    image_id: str
    dirs: tuple[Path, ...]
    config: Path
    splits: tuple[Path, ...] = ()


def layer_dirs(inspect: dict[str, Any]) -> LayerDirs | None:
    """The layer directories an overlay2 engine's inspect document names, or None when the
    document has another form (another driver, the containerd image store)."""
    driver = inspect.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    upper = data.get("UpperDir")
    if driver.get("Name") != "overlay2" or not upper:
        return None
    top_first = [upper, *(data.get("LowerDir") or "").split(":")]
    dirs = tuple(Path(p) for p in reversed(top_first) if p)
    layers = (inspect.get("RootFS") or {}).get("Layers") or []
    if len(dirs) != len(layers) or not all(d.name == "diff" for d in dirs):
        return None
    image_id = str(inspect.get("Id", ""))
    root = Path(upper).parents[2] / "image" / "overlay2"  # <root>/overlay2/<layer>/diff
    config = root / "imagedb" / "content" / "sha256" / image_id.removeprefix("sha256:")
    store = root / "layerdb" / "sha256"
    splits = tuple(store / chain.removeprefix("sha256:") / tarsplit.FILE_NAME
                   for chain in tarsplit.chain_ids([str(d) for d in layers]))
    return LayerDirs(image_id, dirs, config, splits)


def unreadable_reason(where: LayerDirs) -> str | None:
    """Why these directories cannot be read here (None: they can)."""
    for path in (*where.dirs, where.config):
        if not os.access(path, os.R_OK | (os.X_OK if path != where.config else 0)):
            return f"{path} is not readable here"
    return None


def read_image(ref: str, refs: tuple[str, ...], where: LayerDirs, *,
               visible_from: int | None = None) -> SavedImage:
    """The image as `archive.read_archive` gives it from a save: entries of every layer,
    digests of the contents `add_digests` finds needed (see there for `visible_from`)."""
    config = _config(ref, where)
    diff_ids = list(config["rootfs"]["diff_ids"])
    started = time.perf_counter()
    with _changed(ref), gc_paused():  # many small acyclic records: see archive.gc_paused
        read = [_layer(ref, where, index) for index in range(len(where.dirs))]
        layers = [entries for entries, _ in read]
        walked = time.perf_counter()
        add_digests(layers, where.dirs, visible_from)
    logger.debug("%s: %d layers (%d from tar-split records), %d entries read in %.3f s; %d "
                 "contents read in %.3f s", ref, len(layers),
                 sum(tarsplit.is_split(member) for _, member in read), sum(map(len, layers)),
                 walked - started, sum(e.digest is not None for entries in layers for e in entries),
                 time.perf_counter() - walked)
    history, steps = history_steps(config.get("history") or [], len(layers))
    seen: set[str] = set()
    built = []
    for index, entries in enumerate(layers):
        step = steps[index] if index < len(steps) else None
        built.append(Layer(
            index=index, digest=diff_ids[index], member=read[index][1],
            compression="none", stored_size=0, data_offset=0, entries=tuple(entries),
            created_by=history[step].created_by if step is not None else "",
            history_index=step,
            # a save of this engine (Docker 20-24) stores a repeated layer as a link
            repeat_link=diff_ids[index] in seen))
        seen.add(diff_ids[index])
    if not all(d.is_dir() for d in where.dirs):
        raise SourceChanged(f"image {ref} changed or was removed while it was being read")
    return SavedImage(refs, where.image_id, config, tuple(built), tuple(history))


def _layer(ref: str, where: LayerDirs, index: int) -> tuple[list[Entry], str]:
    """A layer's entries and where they were read: its tar-split record, or else (said why)
    its directory. `Layer.member` keeps which, so a squash writes the layer the same way."""
    root = where.dirs[index]
    if index < len(where.splits):
        split = where.splits[index]
        try:
            return tarsplit.entries(split, root.parent.name), str(split)
        except tarsplit.Unusable as exc:
            reason = str(exc)
    else:
        reason = "no record named"
    logger.debug("%s: layer %d: walking %s (its tar-split record: %s)", ref, index, root, reason)
    return list(layer_entries(root)), str(root)


def _config(ref: str, where: LayerDirs) -> dict[str, Any]:
    with _changed(ref):
        data = where.config.read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != where.image_id:
        raise SourceChanged(f"image {ref}: the engine's config file does not match its ID")
    config: dict[str, Any] = json.loads(data)
    if len((config.get("rootfs") or {}).get("diff_ids") or []) != len(where.dirs):
        raise SourceChanged(f"image {ref}: its config names other layers than its storage")
    return config


@contextlib.contextmanager
def _changed(ref: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise SourceChanged(f"image {ref} changed or was removed while it was being read "
                            "(a layer directory went away)") from None


def layer_entries(root: Path) -> Iterator[Entry]:
    """The entries of the layer tar the engine writes for the layer directory `root`."""
    inodes: dict[int, str] = {}
    shared: dict[int, int] = {}  # one int object per distinct mode/owner/mtime: less memory
    share = shared.setdefault
    stack: list[tuple[str, str]] = [(name, path) for name, path in _children("", str(root))]
    while stack:
        path, full = stack.pop()
        st = os.lstat(full)
        mode = st.st_mode
        seconds = st.st_mtime_ns // 1_000_000_000  # not int(st_mtime): a float rounds up
        uid, gid, mtime = share(st.st_uid, st.st_uid), share(st.st_gid, st.st_gid), \
            share(seconds, seconds)
        perm = share(stat.S_IMODE(mode), stat.S_IMODE(mode))
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                first = inodes.setdefault(st.st_ino, path)
                if first != path:
                    yield Entry(path, "hardlink", 0, perm, uid, gid, first, mtime)
                    continue
            yield Entry(path, "file", st.st_size, perm, uid, gid, "", mtime)
        elif stat.S_ISDIR(mode):
            yield Entry(path, "dir", 0, perm, uid, gid, "", mtime)
            if _opaque(full):
                yield Entry(f"{path}/.wh..wh..opq", "file", 0, perm & 0o777, uid, gid, "", 0)
            stack.extend(_children(path + "/", full))
        elif stat.S_ISLNK(mode):
            yield Entry(path, "symlink", 0, perm, uid, gid, os.readlink(full), mtime)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            head, _, name = path.rpartition("/")
            yield Entry(f"{head}/.wh.{name}".lstrip("/"), "file", 0, WHITEOUT_MODE, uid, gid, "",
                        mtime)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            kind: EntryKind = "char" if stat.S_ISCHR(mode) else \
                "block" if stat.S_ISBLK(mode) else "fifo"
            yield Entry(path, kind, 0, perm, uid, gid, "", mtime)
        # sockets: the engine's tar writer skips them too


def _children(prefix: str, full: str) -> list[tuple[str, str]]:
    """A directory's children, last name first (the stack pops them in lexical order; Go sorts
    the names' bytes, which for UTF-8 names is the order of their code points)."""
    names = sorted(os.listdir(full), reverse=True)
    return [(prefix + name, f"{full}/{name}") for name in names]


def _opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
    return False


def add_digests(layers: Sequence[list[Entry]], dirs: Sequence[Path],
                visible_from: int | None = None) -> None:
    """Fill in the content digests that are needed. With `visible_from` (a squash's range,
    whose verification compares merged trees): every file of those layers that the merged tree
    can show, the ones no newer layer replaces at their path, and every hardlink's target.
    Otherwise (the analysis) the files whose path holds a file of the same size in another
    layer, the only case where it compares contents (metadata-only copy-up against a rewrite):
    there a file whose first `HEAD` bytes no other version shares gets a digest of those alone
    (its contents differ from all of theirs); the others are hashed whole."""
    if visible_from is not None:
        _hash_visible(layers, dirs, visible_from)
        return
    versions: dict[str, list[tuple[int, int]]] = {}  # path -> (layer, position), content kinds
    for index, entries in enumerate(layers):
        for k, entry in enumerate(entries):
            if entry.kind in ("file", "hardlink"):
                versions.setdefault(entry.path, []).append((index, k))
    for held in versions.values():
        if len(held) > 1:
            for group in _same_sized(layers, held):
                _tell_apart(layers, dirs, group)


def _hash_visible(layers: Sequence[list[Entry]], dirs: Sequence[Path], start: int) -> None:
    newer: set[str] = set()  # paths the layers above this one put something at
    for index in range(len(layers) - 1, start - 1, -1):
        entries, root = layers[index], str(dirs[index])
        targets = {e.linkname for e in entries if e.kind == "hardlink"}
        for k, entry in enumerate(entries):
            if entry.kind == "file" and (entry.path not in newer or entry.path in targets):
                entries[k] = entry._replace(digest=_digest(f"{root}/{entry.path}", entry.size))
        newer.update(marked_path(entry) for entry in entries)


def _tell_apart(layers: Sequence[list[Entry]], dirs: Sequence[Path],
                group: list[tuple[int, int]]) -> None:
    """Digests for a group of same-sized files, reading as little as tells them apart."""
    todo = [(i, k) for i, k in group if layers[i][k].digest is None]
    if len(todo) < len(group):  # some were hashed whole: compare whole with them
        heads = dict.fromkeys(todo, "")
    else:
        heads = {(i, k): _digest(f"{dirs[i]}/{layers[i][k].path}", layers[i][k].size, HEAD)
                 for i, k in todo}
    shared = Counter(heads.values())
    for (i, k), head in heads.items():
        entry = layers[i][k]
        if entry.size <= HEAD and head:
            digest = head  # the head is the whole file
        elif head and shared[head] == 1:
            digest = f"head:{head}"  # differs from every other version: no need to read on
        else:
            digest = _digest(f"{dirs[i]}/{entry.path}", entry.size)
        layers[i][k] = entry._replace(digest=digest)


def _same_sized(layers: Sequence[list[Entry]],
                versions: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """Groups of the files holding the contents of versions that share a size."""
    def holder(index: int, k: int) -> tuple[int, int] | None:
        entry = layers[index][k]
        if entry.kind == "file":
            return index, k
        for j, other in enumerate(layers[index]):  # a hardlink's target, in its own layer
            if other.path == entry.linkname and other.kind == "file":
                return index, j
        return None

    by_size: dict[int, set[tuple[int, int]]] = {}
    for found in (holder(i, k) for i, k in versions):
        if found is not None:
            by_size.setdefault(layers[found[0]][found[1]].size, set()).add(found)
    for group in by_size.values():
        if len(group) > 1:
            yield sorted(group)


def _digest(path: str, size: int, limit: int | None = None) -> str:
    """"xxh3:<hex>" of the file's contents (of its first `limit` bytes, if given). An empty
    entry is not opened: whiteouts and opaque markers are not files in the directory."""
    if not size:
        return _EMPTY
    digest = xxhash.xxh3_128()
    left = limit
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(_CHUNK if left is None else min(_CHUNK, left)):
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
                if not left:
                    break
    return "xxh3:" + digest.hexdigest()


def saved_refs(ref: str, repo_tags: Sequence[str]) -> tuple[str, ...]:
    """The names a `docker save ref` manifest gives the image (its RepoTags): `ref` with
    `:latest` added when it has no tag, in its short form, if the image has that tag; none when
    `ref` is an ID or a digest."""
    if "@" in ref:
        return ()
    name = ref.removeprefix("docker.io/").removeprefix("library/")
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return (name,) if name in repo_tags else ()
