"""A layer's entries as the engine's tar-split record gives them: what `docker save` sends.

For every layer an overlay2 engine keeps `image/overlay2/layerdb/sha256/<chain ID>/` with
`cache-id` (the layer's overlay2 directory) and `tar-split.json.gz`: gzip'd JSON lines in
vbatts/tar-split's format. A line of type 2 holds raw bytes of the layer tar (`payload`, base64:
header blocks, PAX and GNU records, padding, the end marker); a line of type 1 stands for one
member (`name`, or `name_raw` in base64 when it is not UTF-8, and `size`), whose data is the
file of that name in the layer directory. A save re-assembles the layer tar from them: the
segments verbatim, each member's data read from the directory. So the headers read here are the
save's, byte for byte and in its order, also for a layer the engine unpacked from a tar (pulled,
loaded, imported): the walk of such a directory gives lexical order, and a whiteout's time
there is when it was unpacked.

A member's header blocks are the record's bytes between the padding of the member before and
the member's line, parsed as a save's are (`tarstream`). Whatever does not add up (bytes there
that are not one header, a name or size the header does not give, a header after the last
member, a directory other than the one the image names) is `Unusable`: the caller walks the
directory instead.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from layerkit.image.archive import (
    Entry,
    EntryKind,
    UnknownEntryType,
    entry_kind,
    header_entry,
)
from layerkit.image.manifests import norm
from layerkit.image.tarcopy import RawMember
from layerkit.image.tarstream import (
    BLOCK,
    EXTENDED,
    NO_DATA,
    BadHeader,
    Counted,
    Header,
    headers,
    parse_header,
)

__all__ = ["FILE_NAME", "Unusable", "chain_ids", "entries", "is_split", "members"]

FILE_NAME = "tar-split.json.gz"
_SEGMENT = b'{"type":2,"payload":"'  # how the engine's JSON encoder starts a segment line
_MEMBER = re.compile(rb'\{"type":1,"name":"([^"\\]*)",(?:"size":(\d+),)?"payload":')
_TEXT = ("utf-8", "surrogateescape")
_CHUNK = 1 << 16


class Unusable(Exception):
    """The record is missing, unreadable or does not add up (the message says which)."""


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The layers' chain IDs (the layer store's keys): the first diff_id, then each the sha256
    of `<chain ID below> <diff_id>`."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else "sha256:" + hashlib.sha256(
            f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def is_split(member: str) -> bool:
    """Does a storage layer's `member` name a tar-split record (else: its directory)?"""
    return member.endswith("/" + FILE_NAME)


def entries(split: Path, cache_id: str) -> list[Entry]:
    """The entries of the layer tar the record `split` stands for; `cache_id` is the overlay2
    directory the image names for it, which the record's layer must be."""
    _check_cache_id(split, cache_id)
    shared: dict[int, int] = {}
    share = shared.setdefault
    return [header_entry(header, path, kind, share)
            for header, path, kind in _members(split, keep_raw=False)]


def members(split: Path) -> Iterator[tuple[Entry, RawMember]]:
    """Each entry with its member's header blocks, as the save has them (for a verbatim copy;
    the data is the file of the entry's path)."""
    shared: dict[int, int] = {}
    share = shared.setdefault
    for header, path, kind in _members(split, keep_raw=True):
        size = 0 if header.type in NO_DATA else header.size
        yield (header_entry(header, path, kind, share),
               RawMember(header.name, header.type, header.linkname, size, header.raw,
                         header.pax or {}))


def _check_cache_id(split: Path, cache_id: str) -> None:
    try:
        found = (split.parent / "cache-id").read_text().strip()
    except FileNotFoundError:
        raise Unusable(f"{split.parent}: the layer store has no such layer") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Unusable(f"{split.parent}/cache-id: {exc}") from None
    if found != cache_id:
        raise Unusable(f"{split.parent} is the record of directory {found}, not {cache_id}")


def _members(split: Path, *, keep_raw: bool) -> Iterator[tuple[Header, str, EntryKind]]:
    """The record's members (the root directory's left out) with their normalised paths and
    kinds; Unusable when it does not add up."""
    try:
        with open(split, "rb") as fh:
            pending = bytearray()  # the raw bytes since the last member's data
            pad = 0  # that data's padding: the first bytes of them
            for record in _records(_lines(fh)):
                if isinstance(record, bytes):
                    pending += record
                    continue
                header = _header(pending, pad, record, keep_raw=keep_raw)
                pad = -record[1] % BLOCK
                pending.clear()
                path = norm(header.name)
                if path:
                    yield header, path, entry_kind(header, path)
            if bytes(pending[pad:pad + BLOCK]).strip(b"\0"):
                raise Unusable("a header after the last member")
    except Unusable:
        raise
    except (OSError, EOFError, zlib.error, BadHeader, UnknownEntryType) as exc:
        raise Unusable(f"{split}: {exc}") from None
    except ValueError as exc:  # JSON, base64
        raise Unusable(f"{split}: not a tar-split record ({exc})") from None


def _header(pending: bytearray, pad: int, member: tuple[str, int], *,
            keep_raw: bool) -> Header:
    """The header whose blocks, after `pad` bytes of padding, are all of `pending`; its name
    and data size must be the member line's."""
    name, size = member
    if len(pending) < pad + BLOCK:
        raise Unusable(f"member {name!r} without a header before it")
    blocks = bytes(pending[pad:])
    if len(blocks) == BLOCK and blocks[156:157] not in EXTENDED:  # the usual: one ustar block
        header = parse_header(blocks, BLOCK)
        header.raw, header.pax = (blocks, {}) if keep_raw else (b"", None)
    else:
        found = next(headers(Counted(io.BytesIO(blocks)), keep_raw=keep_raw), None)
        if found is None or found.offset != len(blocks):
            raise Unusable(f"member {name!r}: the record's bytes before it are not one header")
        header = found
    data = 0 if header.type in NO_DATA else header.size
    if name != header.name or size != data:
        raise Unusable(f"member {name!r} ({size} bytes) where the tar has {header.name!r} "
                       f"({data} bytes)")
    return header


def _lines(fh: IO[bytes]) -> Iterator[bytes]:
    """The gzip'd file's lines (faster than `gzip.open`'s line by line reads)."""
    unzip = zlib.decompressobj(wbits=31)
    rest = b""
    while chunk := fh.read(_CHUNK):
        while chunk:
            lines = (rest + unzip.decompress(chunk)).split(b"\n")
            rest = lines.pop()
            yield from lines
            chunk = unzip.unused_data  # a next gzip member, if any
            if chunk:
                unzip = zlib.decompressobj(wbits=31)
    if not unzip.eof:
        raise EOFError("the record is cut short")
    if rest:
        yield rest


def _records(lines: Iterable[bytes]) -> Iterator[bytes | tuple[str, int]]:
    """Each line's segment bytes, or member (name, size)."""
    for line in lines:
        if line.startswith(_SEGMENT):  # most lines: no JSON parse needed
            yield binascii.a2b_base64(line[len(_SEGMENT):line.index(b'"', len(_SEGMENT))])
            continue
        plain = _MEMBER.match(line)  # a name without escapes: no JSON parse either
        if plain is not None:
            yield plain[1].decode(), int(plain[2] or 0)
            continue
        if not line.strip():
            continue
        item = json.loads(line)
        if item.get("type") == 2:
            yield binascii.a2b_base64(item.get("payload") or "")
        elif item.get("type") == 1:
            raw = item.get("name_raw")
            name = binascii.a2b_base64(raw).decode(*_TEXT) if raw else str(item.get("name", ""))
            yield name, int(item.get("size") or 0)
        else:
            raise ValueError(f"line of type {item.get('type')!r}")
