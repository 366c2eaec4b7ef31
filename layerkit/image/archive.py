"""Streaming reader of saved images: `docker save` output or a saved .tar, in one pass.

Formats: the legacy layout (`manifest.json`, `<id>/layer.tar`, `<id>.json`) and the OCI image
layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`, as Docker 25+ writes, usually with a
`manifest.json` too). Layers may be plain, gzip or zstd tars.

A `docker save` stream is not seekable and the order of its members is not guaranteed (the
manifest usually comes *after* the layers), so the reader parses every layer tar as it passes and
keeps only its entries' metadata (`Entry`), never file contents; small JSON members are kept whole.
Memory is therefore constant in bytes and linear in entries. Once the stream ends the manifests
tie blobs to images, layers to config `diff_ids` and to history (empty-layer entries skipped).

Public API:

- `read_archive(source, *, hash_content=False) -> Archive`: `source` is a path, a binary file
  object or an iterable of byte chunks (`engine.save_image`). `hash_content` adds a content
  digest of every regular file to its `Entry` (needed for content fingerprints and exact
  copy-up causes). It is XXH3-128, not sha256: it only tells equal contents from different ones
  within one run, and at about 7 GB/s against sha256's 1.5 GB/s here it no longer takes the CPU
  the engine needs while it writes the stream.
- `Archive.images: tuple[SavedImage, ...]`, each with `layers: tuple[Layer, ...]` (oldest first),
  `history`, `config` and `refs`. `Layer.entries` are the layer tar's entries, whiteouts included
  and uninterpreted (`fsview` interprets them).
- `layer_tar_chunks(fileobj, layer)`: for a *seekable* saved archive (a squash's spool): the
  layer's tar, decompressed, in chunks. `decompressed(raw, compression)`: the one way a layer's
  stored bytes are decompressed.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import posixpath
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

import xxhash
import zstandard
from xxhash import xxh3_128_hexdigest

from layerkit.errors import ArchiveError, MissingLayer, NotATar, TruncatedArchive
from layerkit.image.tarstream import (
    BLOCK,
    BadHeader,
    Bounded,
    ChunkReader,
    Counted,
    GzipReader,
    Header,
    ZstdReader,
    headers,
    is_header,
)

__all__ = [
    "Archive",
    "Entry",
    "EntryKind",
    "HistoryItem",
    "Layer",
    "SavedImage",
    "decompressed",
    "gc_paused",
    "history_steps",
    "layer_tar_chunks",
    "read_archive",
]

EntryKind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
Compression = Literal["none", "gzip", "zstd"]

BUFSIZE = 1 << 20                # tarfile's stream buffer; large reads keep Python overhead low
FILE_BUFSIZE = 1 << 18           # an archive file's buffer (see read_archive)
JSON_LIMIT = 16 << 20            # bigger non-tar members are not configs or manifests: skipped
MAX_INDEX_DEPTH = 8              # OCI image indexes nested deeper than this are refused
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_EMPTY_DIGEST = "xxh3:" + xxh3_128_hexdigest(b"")
_ODD_START = ("", ".", "/")  # names that may need normalising; the rest are checked below
_KINDS: dict[bytes, EntryKind] = {
    b"0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink",
    b"3": "char", b"4": "block", b"6": "fifo",
}


class Entry(NamedTuple):
    """One member of a layer tar. `path` is normalised (no leading `./` or `/`, no trailing `/`);
    `linkname` is the symlink target as stored, or the normalised path a hardlink points to.
    (A named tuple, not a frozen dataclass: made once per tar member, it is built 3x faster.)"""

    path: str
    kind: EntryKind
    size: int            # tar header size: 0 for everything but regular files
    mode: int            # permission and set-id bits
    uid: int
    gid: int
    linkname: str = ""
    mtime: int = 0
    digest: str | None = None   # "xxh3:<hex>" of the contents, regular files, when hashed


@dataclass(frozen=True)
class HistoryItem:
    created_by: str
    created: str
    comment: str
    empty_layer: bool
    layer_index: int | None      # the layer this step made; None for metadata-only steps


@dataclass(frozen=True)
class Layer:
    index: int
    digest: str                  # diff_id: sha256 of the uncompressed tar (from the config)
    member: str                  # where it is stored in the archive
    compression: Compression
    stored_size: int             # bytes in the archive (compressed size if compressed)
    data_offset: int             # offset of the stored bytes in the archive
    entries: tuple[Entry, ...]
    created_by: str
    history_index: int | None    # position in `SavedImage.history`
    repeat_link: bool = False    # stored as a link, repeating an earlier layer of this image
                                 # (how a legacy `docker save` stores a repeated layer)

    @property
    def content_bytes(self) -> int:
        """Sum of regular file sizes in this layer's tar (hardlink entries count 0)."""
        return sum(e.size for e in self.entries if e.kind == "file")


@dataclass(frozen=True)
class SavedImage:
    refs: tuple[str, ...]
    config_digest: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]
    history: tuple[HistoryItem, ...]


@dataclass(frozen=True)
class Archive:
    images: tuple[SavedImage, ...]
    layout: Literal["legacy", "oci"]


@dataclass(frozen=True)
class _Blob:
    """A layer tar as found in the stream, before any manifest has named it."""

    compression: Compression
    stored_size: int
    data_offset: int
    entries: tuple[Entry, ...]


@dataclass
class _Pass:
    """Everything one pass keeps: layer blobs' entries, small JSON members, member aliases."""

    blobs: dict[str, _Blob] = field(default_factory=dict)
    docs: dict[str, bytes] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


# --- the one pass -----------------------------------------------------------------------------

@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while many small acyclic records are made (a tar's
    members, a replay's fates): its passes would walk them again and again, 10-20% of the
    time, and find nothing to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_archive(source: str | Path | IO[bytes] | Iterable[bytes], *,
                 hash_content: bool = False) -> Archive:
    """Read a saved image archive in one pass; see the module docstring."""
    with gc_paused():
        return _read_archive(source, hash_content)


def _read_archive(source: str | Path | IO[bytes] | Iterable[bytes],
                  hash_content: bool) -> Archive:
    if isinstance(source, str | Path):
        # a buffer smaller than the 1 MiB reads of file data: those go straight to their
        # destination, and only headers and small files pass through the buffer
        with open(source, "rb", buffering=FILE_BUFSIZE) as fh:
            return _read_archive(fh, hash_content)
    stream = source if isinstance(source, io.IOBase) else ChunkReader(source)
    found = _Pass()
    counted = Counted(cast(IO[bytes], stream))
    with _archive_errors("archive"):
        for member in headers(counted):
            _take(counted, member, found, hash_content)
    return _assemble(found)


def _take(stream: Counted, member: Header, found: _Pass, hashing: bool) -> None:
    name = _norm(member.name)
    found.names.add(name)
    if member.type in (b"1", b"2"):
        # docker save stores a layer that occurs twice once, and links the second place to it
        base = posixpath.dirname(name) if member.type == b"2" else ""
        found.aliases[name] = _norm(posixpath.join(base, member.linkname))
        return
    if _KINDS.get(member.type, "file") != "file":
        return
    head = stream.read_exact(min(BLOCK, member.size))
    compression = _compression(head)
    if compression is not None:
        data = cast(IO[bytes], Bounded(stream, member.size, head))
        with _archive_errors(f"layer {name}"):
            entries = tuple(_layer_entries(decompressed(data, compression), hashing))
        found.blobs[name] = _Blob(compression, member.size, member.offset, entries)
    elif member.size <= JSON_LIMIT and head[:1] in (b"{", b"["):
        found.docs[name] = head + stream.read_exact(member.size - len(head))


def _compression(head: bytes) -> Compression | None:
    """What kind of layer `head` starts, or None if it is not a layer (JSON, VERSION, ...)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) == BLOCK and (head == bytes(BLOCK) or is_header(head)):
        return "none"  # an all-zero block is an empty tar (an empty RUN layer)
    return None


def decompressed(raw: IO[bytes], compression: Compression) -> IO[bytes]:
    if compression == "gzip":
        return cast(IO[bytes], io.BufferedReader(GzipReader(raw), BUFSIZE))
    if compression == "zstd":
        # not stream_reader: it ends quietly on a cut frame, and a cut layer would read as short
        return cast(IO[bytes], io.BufferedReader(ZstdReader(raw), BUFSIZE))
    return raw


def _layer_entries(raw: IO[bytes], hashing: bool) -> Iterator[Entry]:
    inner = Counted(raw)
    shared: dict[int, int] = {}  # one int object per distinct mode/owner/mtime: less memory
    share = shared.setdefault
    kinds = _KINDS.get
    for member in headers(inner):
        path = _norm(member.name)
        if not path:
            continue  # the layer's root directory itself
        kind = kinds(member.type, "file")
        if kind == "file":
            size = member.size
            digest = _content_digest(inner, size) if hashing else None
            link = member.linkname
        else:
            size, digest = 0, None
            link = _norm(member.linkname) if kind == "hardlink" else member.linkname
        mode, uid, gid, mtime = member.mode & 0o7777, member.uid, member.gid, member.mtime
        yield Entry(path, kind, size, share(mode, mode), share(uid, uid), share(gid, gid),
                    link, share(mtime, mtime), digest)


def _content_digest(stream: Counted, size: int) -> str:
    if not size:
        return _EMPTY_DIGEST
    first = stream.take(size)  # most files lie whole in the buffer at hand: one call, no copy
    if len(first) == size:
        return "xxh3:" + xxh3_128_hexdigest(first)
    if not first:
        raise EOFError("the data ends early")
    digest = xxhash.xxh3_128(first)
    for chunk in stream.chunks(size - len(first)):
        digest.update(chunk)
    return "xxh3:" + digest.hexdigest()


def _norm(name: str) -> str:
    """`name` without `./`, `/`, `..` steps, doubled or trailing slashes ("" for the root)."""
    if name[:1] not in _ODD_START and "//" not in name and "/." not in name:
        return name.rstrip("/")  # already plain, as most names in a layer are
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


@contextlib.contextmanager
def _archive_errors(what: str) -> Iterator[None]:
    """Tar, gzip and zstd failures become ArchiveErrors naming what was being read."""
    try:
        yield
    except ArchiveError:
        raise
    except EOFError:
        raise TruncatedArchive(f"{what}: truncated (the data ends early)") from None
    except BadHeader:
        raise NotATar(f"{what}: not a tar archive (bad header checksum)") from None
    except (zlib.error, zstandard.ZstdError) as exc:
        raise ArchiveError(f"{what}: corrupt compressed data ({exc})") from None


# --- after the pass: manifests tie it together --------------------------------------------------

def _assemble(found: _Pass) -> Archive:
    if "manifest.json" in found.docs:
        with _manifest_errors("manifest.json"):
            manifest = _json(found, "manifest.json")
            if not isinstance(manifest, list):
                raise ArchiveError("archive: malformed manifest.json (not a list of images)")
            images = tuple(_legacy_image(found, item) for item in manifest)
        return Archive(images, "oci" if "oci-layout" in found.names else "legacy")
    if "index.json" in found.docs:
        with _manifest_errors("index.json"):
            return Archive(tuple(_oci_images(found)), "oci")
    if not found.names:
        raise NotATar("archive: empty or not a tar archive")
    raise TruncatedArchive("archive: no manifest.json or index.json (truncated, or not an image)")


@contextlib.contextmanager
def _manifest_errors(name: str) -> Iterator[None]:
    """A manifest, index or config of the wrong shape (a key missing, a list where an object
    belongs, ...) becomes one ArchiveError line instead of a traceback."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ArchiveError(f"archive: malformed {name} or a manifest it names ({detail}); "
                           "not a saved image?") from None


def _json(found: _Pass, name: str) -> Any:
    name = found.aliases.get(name, name)
    if name not in found.docs:
        raise MissingLayer(f"archive: {name} is named by the manifest but not in the archive")
    try:
        return json.loads(found.docs[name])
    except ValueError:
        raise ArchiveError(f"archive: {name} is not valid JSON") from None


def _legacy_image(found: _Pass, item: dict[str, Any]) -> SavedImage:
    config_name = _norm(item["Config"])
    config = _json(found, config_name)
    digest = "sha256:" + posixpath.basename(config_name).removesuffix(".json")
    members = [_norm(p) for p in item.get("Layers") or []]
    return _image(found, tuple(item.get("RepoTags") or ()), digest, config, members)


def _oci_images(found: _Pass) -> Iterator[SavedImage]:
    for desc in _json(found, "index.json").get("manifests", []):
        yield from _oci_manifest(found, desc, ())


def _oci_manifest(found: _Pass, desc: dict[str, Any],
                  within: tuple[str, ...]) -> Iterator[SavedImage]:
    """The images `desc` names; `within` are the digests of the indexes that led here."""
    digest = desc["digest"]
    if digest in within or len(within) >= MAX_INDEX_DEPTH:
        raise ArchiveError(f"archive: image index {digest} refers to itself or nests more than "
                           f"{MAX_INDEX_DEPTH} levels deep")
    body = _json(found, _blob_path(digest))
    if "manifests" in body:  # a nested image index: one level down
        for inner in body["manifests"]:
            if "attestation-manifest" not in (inner.get("annotations") or {}).values():
                yield from _oci_manifest(found, inner, (*within, digest))
        return
    annotations = desc.get("annotations") or {}
    ref = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name")
    config = _json(found, _blob_path(body["config"]["digest"]))
    members = [_blob_path(layer["digest"]) for layer in body.get("layers", [])]
    yield _image(found, (ref,) if ref else (), body["config"]["digest"], config, members)


def _blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def _image(found: _Pass, refs: tuple[str, ...], config_digest: str, config: dict[str, Any],
           members: list[str]) -> SavedImage:
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    history, steps = history_steps(config.get("history") or [], len(members))
    layers = []
    named: set[str] = set()  # the members this image's layers resolved to so far
    for index, member in enumerate(members):
        stored, blob = _layer_blob(found, member)
        repeat = stored in named
        named.add(stored)
        step = steps[index] if index < len(steps) else None
        layers.append(Layer(
            index=index, digest=diff_ids[index] if index < len(diff_ids) else "",
            member=member, compression=blob.compression, stored_size=blob.stored_size,
            data_offset=blob.data_offset, entries=blob.entries,
            created_by=history[step].created_by if step is not None else "",
            history_index=step, repeat_link=repeat and member in found.aliases))
    return SavedImage(refs, config_digest, config, tuple(layers), tuple(history))


def _layer_blob(found: _Pass, member: str) -> tuple[str, _Blob]:
    """The member that holds `member`'s data (through links) and its blob."""
    seen = set()
    while member in found.aliases and member not in seen:
        seen.add(member)
        member = found.aliases[member]
    if member in found.names and member not in found.blobs:
        raise NotATar(f"archive: layer {member} is not a tar (plain, gzip or zstd)")
    if member not in found.blobs:
        raise MissingLayer(f"archive: layer {member} is named by the manifest but not in the "
                           "archive")
    return member, found.blobs[member]


def history_steps(raw: list[dict[str, Any]],
                  n_layers: int) -> tuple[list[HistoryItem], list[int]]:
    """History items, and for each layer the index of the history item that made it.

    Items marked `empty_layer` made no layer; the others map to layers in order. An imported
    image may have fewer non-empty items than layers: the unmatched layers get none."""
    items: list[HistoryItem] = []
    steps: list[int] = []
    for position, item in enumerate(raw):
        empty = bool(item.get("empty_layer"))
        layer_index = None if empty or len(steps) >= n_layers else len(steps)
        if layer_index is not None:
            steps.append(position)
        items.append(HistoryItem(str(item.get("created_by", "")), str(item.get("created", "")),
                                 str(item.get("comment", "")), empty, layer_index))
    return items, steps


# --- random access for seekable archives, and stream adapters ------------------------------------

def layer_tar_chunks(fh: IO[bytes], layer: Layer) -> Iterator[bytes]:
    """The uncompressed tar of `layer` from a seekable saved archive, in chunks."""
    fh.seek(layer.data_offset)
    raw = cast(IO[bytes], Bounded(Counted(fh), layer.stored_size))
    data = decompressed(raw, layer.compression)
    while chunk := data.read(BUFSIZE):
        yield chunk
