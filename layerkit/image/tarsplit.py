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

The record is read as the layer tar with every member's data left out (`_Assembled`) by the
same header parser as a save (`tarstream.headers`). Whatever does not add up (a member line
where header bytes belong, a name or size the headers do not give, a member after the end
marker, a directory other than the one the image names) is `Unusable`: the caller walks the
directory instead.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

from layerkit.image.archive import (
    Entry,
    EntryKind,
    UnknownEntryType,
    entry_kind,
    header_entry,
)
from layerkit.image.manifests import norm
from layerkit.image.tarcopy import RawMember
from layerkit.image.tarstream import NO_DATA, BadHeader, Counted, Header, headers

__all__ = ["FILE_NAME", "Unusable", "chain_ids", "entries", "is_split", "members"]

FILE_NAME = "tar-split.json.gz"
_SEGMENT = b'{"type":2,"payload":"'  # how the engine's JSON encoder starts a segment line
_ZEROS = memoryview(bytes(1 << 20))
_TEXT = ("utf-8", "surrogateescape")


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
        with gzip.open(split, "rb") as fh:
            reader = _Assembled(iter(fh))
            for header in headers(Counted(cast(IO[bytes], reader)), keep_raw=keep_raw):
                reader.member_of(header)
                path = norm(header.name)
                if path:
                    yield header, path, entry_kind(header, path)
            reader.finish()
    except Unusable:
        raise
    except (OSError, EOFError, zlib.error, BadHeader, UnknownEntryType) as exc:
        raise Unusable(f"{split}: {exc}") from None
    except ValueError as exc:  # JSON, base64
        raise Unusable(f"{split}: not a tar-split record ({exc})") from None


class _Assembled:
    """The layer tar the record stands for, with each member's data left out: where data
    would be, `take` gives zeros (the header parser only skips data); a member line met
    where header bytes are wanted means the record and the tar disagree."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._buf = memoryview(b"")
        self._hole = 0

    def read(self, size: int) -> bytes:
        if len(self._buf) >= size:
            data = bytes(self._buf[:size])
            self._buf = self._buf[size:]
            return data
        if self._hole:
            raise Unusable("a header lies inside a member's data")
        parts = bytearray()
        while len(parts) < size and (self._buf or self._more()):
            part = self._buf[:size - len(parts)]
            parts += part
            self._buf = self._buf[len(part):]
        return bytes(parts)

    def take(self, size: int) -> memoryview:
        if self._hole:
            got = min(size, self._hole, len(_ZEROS))
            self._hole -= got
            return _ZEROS[:got]
        if not self._buf and not self._more():
            return _ZEROS[:0]
        view = self._buf[:size]
        self._buf = self._buf[len(view):]
        return view

    def member_of(self, header: Header) -> None:
        """The member line that must follow `header`'s blocks: its name and size are the
        header's, and its data comes next."""
        if self._buf or self._hole:
            raise Unusable(f"{header.name}: the record's member does not follow its header")
        record = self._next_line()
        if record is None or isinstance(record, bytes):
            raise Unusable(f"{header.name}: no member line after its header")
        name, size = record
        data = 0 if header.type in NO_DATA else header.size
        if name != header.name or size != data:
            raise Unusable(f"member {name!r} ({size} bytes) where the tar has {header.name!r} "
                           f"({data} bytes)")
        self._hole = size

    def finish(self) -> None:
        """After the end marker only raw bytes may follow, no member."""
        while (record := self._next_line()) is not None:
            if not isinstance(record, bytes):
                raise Unusable(f"member {record[0]!r} after the tar's end")

    def _more(self) -> bool:
        """The next segment into the buffer (False at the end); a member line here is one
        without its header."""
        while (record := self._next_line()) is not None:
            if not isinstance(record, bytes):
                raise Unusable(f"member {record[0]!r} without a header before it")
            if record:
                self._buf = memoryview(record)
                return True
        return False

    def _next_line(self) -> bytes | tuple[str, int] | None:
        """A segment's bytes, a member's (name, size), or None at the end."""
        for line in self._lines:
            if line.startswith(_SEGMENT):  # most lines: no JSON parse needed
                end = line.index(b'"', len(_SEGMENT))
                return binascii.a2b_base64(line[len(_SEGMENT):end])
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("type") == 2:
                return binascii.a2b_base64(item.get("payload") or "")
            if item.get("type") != 1:
                raise ValueError(f"line of type {item.get('type')!r}")
            raw = item.get("name_raw")
            name = binascii.a2b_base64(raw).decode(*_TEXT) if raw else str(item.get("name", ""))
            return name, int(item.get("size") or 0)
        return None
