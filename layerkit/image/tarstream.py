"""A minimal forward-only tar reader for the archive reader's hot loop (its stream plumbing:
`streams`).

The stdlib's stream mode (`tarfile.open(mode="r|")`) copies its whole buffer on every 512-byte
header read and skips data in small blocks; on a nested `docker save` stream that made reading
several times slower than the engine could write. This reader parses ustar, GNU (long names,
base-256 numbers) and pax headers (path, linkpath, size, uid, gid, mtime) and skips data with
`readinto` into one reused buffer. Writing tars is left to `tarfile`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from zlib import adler32

__all__ = [
    "EXTENDED",
    "NO_DATA",
    "BadHeader",
    "Counted",
    "Header",
    "byte_sum",
    "headers",
    "is_header",
    "padded",
    "parse_header",
    "parse_number",
]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
# name, mode, uid, gid, size, mtime, checksum, type, linkname, magic, ustar prefix
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s6s82x155s")
# POSIX ustar/pax magic; GNU's "ustar " keeps atime and ctime where ustar has the name prefix
_USTAR = b"ustar\0"
_PAD = b"\0 "  # what ends an octal number field
EXTENDED = frozenset((b"x", b"g", b"L", b"K"))  # types of headers for the next member
_SKIP_BUFFER = 1 << 20
_TEXT = ("utf-8", "surrogateescape")
NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # size fields of these are ignored, as tar does


class BadHeader(ValueError):
    """A 512-byte block that is not a tar header (wrong checksum)."""


@dataclass(slots=True)
class Header:
    name: str
    type: bytes          # the tar type flag, e.g. b"0", b"5", b"2"
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str
    offset: int          # position of the member's data in the stream
    raw: bytes = b""     # every header block of the member as read (with `keep_raw`)
    pax: dict[str, str] | None = None  # its PAX records (with `keep_raw`)


class Counted:
    """A forward-only reader that knows its position and skips without keeping data."""

    def __init__(self, raw: IO[bytes], start: int = 0) -> None:
        self.raw = raw
        self.pos = start
        self._scratch = memoryview(bytearray(_SKIP_BUFFER))
        self._take = getattr(raw, "take", None)  # a source that can lend its own buffer

    def read_exact(self, size: int) -> bytes:
        data = self.raw.read(size)
        self.pos += len(data)
        if len(data) != size:
            raise EOFError(f"wanted {size} bytes, got {len(data)}")
        return data

    def readinto(self, view: memoryview) -> int:
        got = self.raw.readinto(view)  # type: ignore[attr-defined]
        self.pos += got
        return int(got)

    def take(self, size: int) -> memoryview:
        """Up to `size` (> 0) of the next bytes as a view, valid until the next step; empty at
        the end. Lent straight from the source when it can (`ChunkReader`, `Bounded` over
        one), so skipping and hashing copy nothing; else read into a reused buffer."""
        if self._take is not None:
            view: memoryview = self._take(size)
        else:
            view = self._scratch[: self.raw.readinto(  # type: ignore[attr-defined]
                self._scratch[: min(size, _SKIP_BUFFER)])]
        self.pos += len(view)
        return view

    def skip(self, size: int) -> None:
        while size > 0:
            got = len(self.take(size))
            if not got:
                raise EOFError("the data ends early")
            size -= got

    def chunks(self, size: int) -> Iterator[memoryview]:
        """`size` bytes as views (each valid until the next step)."""
        while size > 0:
            view = self.take(size)
            if not view:
                raise EOFError("the data ends early")
            size -= len(view)
            yield view


def headers(stream: Counted, *, keep_raw: bool = False) -> Iterator[Header]:
    """The members of the tar on `stream`. The caller may read some of a member's data before
    asking for the next; whatever it leaves is skipped. `keep_raw`: each member's header
    blocks (extension headers and their data included) and PAX records come with it, for a
    verbatim copy (`tarcopy`)."""
    pax: dict[str, str] = {}
    gnu: dict[bytes, str] = {}
    raw = bytearray()
    read = stream.raw.read
    while True:
        block = read(BLOCK)
        stream.pos += len(block)
        if not block or block == _ZERO_BLOCK:
            return  # end-of-archive marker (or a stream cut at a member boundary)
        if len(block) < BLOCK:
            raise EOFError("a tar header is cut short")
        header = _parse(block, stream.pos)
        kind = header.type
        if keep_raw:
            raw += block
        if kind in EXTENDED:
            end = header.offset + padded(header.size)
            data = stream.read_exact(header.size)
            if kind == b"x":
                pax.update(parse_pax(data))
            elif kind in (b"L", b"K"):
                gnu[kind] = data.split(b"\0", 1)[0].decode(*_TEXT)
            if keep_raw:
                raw += data + stream.read_exact(end - stream.pos)
            stream.skip(end - stream.pos)
            continue
        if keep_raw:
            header.raw, header.pax = bytes(raw), pax
            raw.clear()
        if pax or gnu:
            _apply(header, pax, gnu)
            pax, gnu = {}, {}
        end = header.offset + padded(header.size if kind not in NO_DATA else 0)
        yield header
        if end > stream.pos:
            stream.skip(end - stream.pos)


def padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _path(name: bytes, magic: bytes, prefix: bytes) -> str:
    """A header's name field, behind the ustar prefix when there is one: POSIX magic only, as
    GNU headers keep atime and ctime in those bytes."""
    text = name.split(b"\0", 1)[0].decode(*_TEXT)
    if magic == _USTAR and prefix[0]:
        text = prefix.split(b"\0", 1)[0].decode(*_TEXT) + "/" + text
    return text


def parse_header(block: bytes, offset: int) -> Header:
    """One header block; `offset` is where the member's data starts."""
    return _parse(block, offset)


def _parse(block: bytes, offset: int) -> Header:
    (name, mode, uid, gid, size, mtime, checksum, kind, linkname, magic,
     prefix) = _FIELDS.unpack_from(block)
    try:  # the usual: every number octal digits ended by NUL or space, the checksum unsigned
        stored = int(checksum.rstrip(_PAD), 8)
        numbers = (int(size.rstrip(_PAD), 8), int(mode.rstrip(_PAD), 8),
                   int(uid.rstrip(_PAD), 8), int(gid.rstrip(_PAD), 8),
                   int(mtime.rstrip(_PAD), 8))
        ok = stored == ((adler32(block[:256], 0) & 0xFFFF) + (adler32(block[256:], 0) & 0xFFFF)
                        - (adler32(checksum, 0) & 0xFFFF) + 8 * 32)  # byte_sum, unrolled
    except ValueError:  # base-256, an empty field, bytes after a NUL; or not a header
        ok = False
    if not ok:
        if not _checksum_ok(block, checksum):  # which also knows old signed checksums
            raise BadHeader("not a tar header (bad checksum)")
        numbers = (parse_number(size), parse_number(mode), parse_number(uid),
                   parse_number(gid), parse_number(mtime))
    link = linkname.split(b"\0", 1)[0].decode(*_TEXT) if linkname[0] else ""
    return Header(_path(name, magic, prefix), kind if kind != b"\0" else b"0", *numbers, link,
                  offset)


def byte_sum(data: bytes) -> int:
    """The sum of the bytes of `data`, in C: Adler-32 started at 0 keeps the sum of the bytes
    modulo 65521 in its low half, and 256 bytes sum to at most 65280, so each 256-byte piece's
    sum is exact. (A Python `sum(block)` walks 512 int objects: most of a header's cost.)"""
    view = memoryview(data)
    return sum(adler32(view[i:i + 256], 0) & 0xFFFF for i in range(0, len(view), 256))


def _checksum_ok(block: bytes, field: bytes) -> bool:
    try:
        stored = parse_number(field)
    except ValueError:
        return False
    unsigned = byte_sum(block) - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)


def is_header(block: bytes) -> bool:
    """Does the 512-byte `block` carry a valid tar checksum (unsigned, or signed as old tars)?"""
    return _checksum_ok(block, block[148:156])


def parse_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.rstrip(_PAD), 8)  # the usual: octal digits, then NUL or space
    except ValueError:
        digits = field.split(b"\0", 1)[0].strip()  # empty, or bytes after a NUL
        return int(digits, 8) if digits else 0


def parse_pax(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header (`<length> <key>=<value>\\n` each)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1: pos + length - 1].partition(b"=")
        records[key.decode(*_TEXT)] = value.decode(*_TEXT)
        pos += length
    return records


def _apply(header: Header, pax: dict[str, str], gnu: dict[bytes, str]) -> None:
    """Extended headers override the fields of the member they precede."""
    header.name = pax.get("path") or gnu.get(b"L") or header.name
    header.linkname = pax.get("linkpath") or gnu.get(b"K") or header.linkname
    if "size" in pax:
        header.size = int(pax["size"])
    for key in ("uid", "gid"):
        if key in pax:
            setattr(header, key, int(pax[key]))
    if "mtime" in pax:
        header.mtime = int(float(pax["mtime"]))
