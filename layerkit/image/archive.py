"""Streaming reader of saved images: `docker save` output or a saved .tar, in one pass.

Formats: the legacy layout (`manifest.json`, `<id>/layer.tar`, `<id>.json`) and the OCI image
layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`, as Docker 25+ writes, usually with a
`manifest.json` too). Layers may be plain, gzip or zstd tars.

A `docker save` stream is not seekable and the order of its members is not guaranteed (the
manifest usually comes *after* the layers), so the reader parses every layer tar as it passes and
keeps only its entries' metadata (`Entry`), never file contents; small JSON members are kept whole.
Memory is therefore constant in bytes and linear in entries. Once the stream ends the manifests
tie blobs to images, layers to config `diff_ids` and to history (`manifests`); the records are
in `records`, re-exported here.

Public API:

- `read_archive(source, *, hash_content=False) -> Archive`: `source` is a path, a binary file
  object or an iterable of byte chunks (`engine.save_image`). `hash_content` adds a content
  digest of every regular file to its `Entry` (needed for content fingerprints and exact
  copy-up causes). It is XXH3-128, not sha256: it only tells equal contents from different ones
  within one run, and it is several times faster, CPU the engine needs while it writes the
  stream (docs/analyze.md). `on_layer(start, end, digest)`, if given, hears of every
  uncompressed layer tar once it has passed: the stream offsets of its first header byte and of
  its end, and its sha256 (its diff_id), so a tee of the stream can drop it again (squash's spool).
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
import hashlib
import io
import posixpath
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, cast

import xxhash
import zstandard
from xxhash import xxh3_128_hexdigest

from layerkit.errors import ArchiveError, NotATar, TruncatedArchive
from layerkit.image.manifests import Blob, Found, assemble, history_steps, norm
from layerkit.image.records import (
    Archive,
    Compression,
    Entry,
    EntryKind,
    HistoryItem,
    Layer,
    SavedImage,
)
from layerkit.image.streams import Bounded, ChunkReader, GzipReader, ZstdReader
from layerkit.image.tarstream import (
    BLOCK,
    NO_DATA,
    BadHeader,
    Counted,
    Header,
    headers,
    is_header,
    padded,
)

__all__ = [
    "Archive",
    "Entry",
    "EntryKind",
    "HistoryItem",
    "Layer",
    "SavedImage",
    "UnknownEntryType",
    "decompressed",
    "entry_kind",
    "gc_paused",
    "header_entry",
    "history_steps",
    "layer_tar_chunks",
    "read_archive",
]

BUFSIZE = 1 << 20                # tarfile's stream buffer; large reads keep Python overhead low
FILE_BUFSIZE = 1 << 18           # an archive file's buffer (see read_archive)
JSON_LIMIT = 16 << 20            # bigger non-tar members are not configs or manifests: skipped
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_EMPTY_DIGEST = "xxh3:" + xxh3_128_hexdigest(b"")
Passed = Callable[[int, int, str], None]  # see `on_layer`
_KINDS: dict[bytes, EntryKind] = {
    b"0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink",
    b"3": "char", b"4": "block", b"6": "fifo",
}


class UnknownEntryType(ValueError):
    """A tar member of a type the reader does not know (see `_kind`)."""


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
                 hash_content: bool = False, on_layer: Passed | None = None) -> Archive:
    """Read a saved image archive in one pass; see the module docstring."""
    with gc_paused():
        return _read_archive(source, hash_content, on_layer)


def _read_archive(source: str | Path | IO[bytes] | Iterable[bytes],
                  hash_content: bool, on_layer: Passed | None) -> Archive:
    if isinstance(source, str | Path):
        # a buffer smaller than the 1 MiB reads of file data: those go straight to their
        # destination, and only headers and small files pass through the buffer
        with open(source, "rb", buffering=FILE_BUFSIZE) as fh:
            return _read_archive(fh, hash_content, on_layer)
    stream = source if isinstance(source, io.IOBase) else ChunkReader(source)
    found = Found()
    counted = Counted(cast(IO[bytes], stream))
    with _archive_errors("archive"):
        start = 0  # where the member's first header block (extension headers included) is
        for member in headers(counted):
            digest = _take(counted, member, found, hash_content, on_layer is not None)
            end = member.offset + padded(member.size if member.type not in NO_DATA else 0)
            if on_layer is not None and digest is not None:
                counted.skip(end - counted.pos)  # its padding: the member has wholly passed
                on_layer(start, end, digest)
            start = end
    return assemble(found)


def _take(stream: Counted, member: Header, found: Found, hashing: bool,
          layer_sha: bool) -> str | None:
    """Note `member` in `found`; with `layer_sha`, the sha256 of an uncompressed layer tar
    (read to its last byte), else None."""
    name = norm(member.name)
    found.names.add(name)
    if member.type in (b"1", b"2"):
        # docker save stores a layer that occurs twice once, and links the second place to it
        base = posixpath.dirname(name) if member.type == b"2" else ""
        found.aliases[name] = norm(posixpath.join(base, member.linkname))
        return None
    if _kind(member, name) != "file":
        return None
    head = stream.read_exact(min(BLOCK, member.size))
    compression = _compression(head)
    if compression is not None:
        sha = hashlib.sha256() if layer_sha and compression == "none" else None
        data = Bounded(stream, member.size, head, sha)
        with _archive_errors(f"layer {name}"):
            raw = decompressed(cast(IO[bytes], data), compression)
            entries = tuple(_layer_entries(raw, hashing))
            while sha is not None and data.take(BUFSIZE):
                pass  # what follows the tar's end marker counts for the digest too
        found.blobs[name] = Blob(compression, member.size, member.offset, entries)
        return None if sha is None else f"sha256:{sha.hexdigest()}"
    if member.size <= JSON_LIMIT and head[:1] in (b"{", b"["):
        found.docs[name] = head + stream.read_exact(member.size - len(head))
    return None


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


def _kind(member: Header, path: str) -> EntryKind:
    """The kind of a tar member; a type this reader does not know (GNU sparse files, volume
    headers, ...) is an error naming the member, never taken for a plain file."""
    kind = _KINDS.get(member.type)
    if kind is None:
        raise UnknownEntryType(f"entry {path or member.name!r} has tar type "
                               f"{member.type.decode('latin-1')!r}, which layerkit cannot read")
    return kind


def _layer_entries(raw: IO[bytes], hashing: bool) -> Iterator[Entry]:
    inner = Counted(raw)
    shared: dict[int, int] = {}  # one int object per distinct mode/owner/mtime: less memory
    share = shared.setdefault
    kinds = _KINDS.get
    for member in headers(inner):
        path = norm(member.name)
        if not path:
            continue  # the layer's root directory itself
        kind = kinds(member.type) or _kind(member, path)
        digest = _content_digest(inner, member.size) if hashing and kind == "file" else None
        yield header_entry(member, path, kind, share, digest)


def header_entry(member: Header, path: str, kind: EntryKind,
                 share: Callable[[int, int], int], digest: str | None = None) -> Entry:
    """The entry of a layer tar's member at normalised `path` (not the root). `share` keeps
    one int object per distinct mode, owner or time (dict.setdefault): less memory."""
    if kind == "file":
        size, link = member.size, member.linkname
    else:
        size = 0
        link = norm(member.linkname) if kind == "hardlink" else member.linkname
    mode, uid, gid, mtime = member.mode & 0o7777, member.uid, member.gid, member.mtime
    return Entry(path, kind, size, share(mode, mode), share(uid, uid), share(gid, gid),
                 link, share(mtime, mtime), digest)


def entry_kind(member: Header, path: str) -> EntryKind:
    """The kind of a tar member; UnknownEntryType for a type layerkit cannot read."""
    return _KINDS.get(member.type) or _kind(member, path)


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


@contextlib.contextmanager
def _archive_errors(what: str) -> Iterator[None]:
    """Tar, gzip and zstd failures become ArchiveErrors naming what was being read."""
    try:
        yield
    except UnknownEntryType as exc:
        raise ArchiveError(f"{what}: {exc}") from None
    except ArchiveError:
        raise
    except EOFError:
        raise TruncatedArchive(f"{what}: truncated (the data ends early)") from None
    except BadHeader:
        raise NotATar(f"{what}: not a tar archive (bad header checksum)") from None
    except (zlib.error, zstandard.ZstdError) as exc:
        raise ArchiveError(f"{what}: corrupt compressed data ({exc})") from None


# --- random access for seekable archives, and stream adapters ------------------------------------

def layer_tar_chunks(fh: IO[bytes], layer: Layer) -> Iterator[bytes]:
    """The uncompressed tar of `layer` from a seekable saved archive, in chunks."""
    fh.seek(layer.data_offset)
    raw = cast(IO[bytes], Bounded(Counted(fh), layer.stored_size))
    data = decompressed(raw, layer.compression)
    while chunk := data.read(BUFSIZE):
        yield chunk
