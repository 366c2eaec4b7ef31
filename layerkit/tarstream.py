"""A minimal forward-only tar reader for the archive reader's hot loop, and stream plumbing.

The stdlib's stream mode (`tarfile.open(mode="r|")`) copies its whole buffer on every 512-byte
header read and skips data in small blocks; on a nested `docker save` stream that made reading
several times slower than the engine could write. This reader parses ustar, GNU (long names,
base-256 numbers) and pax headers (path, linkpath, size, uid, gid, mtime) and skips data with
`readinto` into one reused buffer. Writing tars is left to `tarfile`.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import zstandard

__all__ = [
    "BadHeader",
    "Bounded",
    "Counted",
    "GzipReader",
    "Header",
    "ZstdReader",
    "headers",
    "is_header",
    "iter_chunks_reader",
    "padded",
    "parse_number",
    "parse_pax",
    "parse_text",
    "ustar_name",
]

BLOCK = 512
_SKIP_BUFFER = 1 << 20
_TEXT = ("utf-8", "surrogateescape")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_INPUT = 128 << 10  # zstd input fed per step: decompressobj has no output limit
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # size fields of these are ignored, as tar does


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


class Counted:
    """A forward-only reader that knows its position and skips without keeping data."""

    def __init__(self, raw: IO[bytes], start: int = 0) -> None:
        self.raw = raw
        self.pos = start
        self._scratch = memoryview(bytearray(_SKIP_BUFFER))

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

    def skip(self, size: int) -> None:
        while size > 0:
            got = self.readinto(self._scratch[: min(size, _SKIP_BUFFER)])
            if not got:
                raise EOFError("the data ends early")
            size -= got

    def chunks(self, size: int) -> Iterator[memoryview]:
        """`size` bytes as views into a reused buffer (valid until the next step)."""
        while size > 0:
            got = self.readinto(self._scratch[: min(size, _SKIP_BUFFER)])
            if not got:
                raise EOFError("the data ends early")
            size -= got
            yield self._scratch[:got]


def headers(stream: Counted) -> Iterator[Header]:
    """The members of the tar on `stream`. The caller may read some of a member's data before
    asking for the next; whatever it leaves is skipped."""
    pax: dict[str, str] = {}
    gnu: dict[bytes, str] = {}
    while True:
        block = stream.raw.read(BLOCK)
        stream.pos += len(block)
        if not block or block == bytes(BLOCK):
            return  # end-of-archive marker (or a stream cut at a member boundary)
        if len(block) < BLOCK:
            raise EOFError("a tar header is cut short")
        header = _parse(block, stream.pos)
        if header.type in (b"x", b"g", b"L", b"K"):
            end = header.offset + padded(header.size)
            data = stream.read_exact(header.size)
            if header.type == b"x":
                pax.update(parse_pax(data))
            elif header.type in (b"L", b"K"):
                gnu[header.type] = data.split(b"\0", 1)[0].decode(*_TEXT)
            stream.skip(end - stream.pos)
            continue
        _apply(header, pax, gnu)
        pax, gnu = {}, {}
        end = header.offset + padded(header.size if header.type not in _NO_DATA else 0)
        yield header
        stream.skip(end - stream.pos)


def padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def ustar_name(block: bytes) -> str:
    """The name field of a header block, with the ustar prefix when there is one."""
    name = parse_text(block[0:100])
    if block[257:262] == b"ustar" and block[345] != 0:
        name = f"{parse_text(block[345:500])}/{name}"
    return name


def _parse(block: bytes, offset: int) -> Header:
    if not is_header(block):
        raise BadHeader("not a tar header (bad checksum)")
    name = ustar_name(block)
    kind = block[156:157]
    return Header(name=name, type=kind if kind != b"\0" else b"0",
                  size=parse_number(block[124:136]),
                  mode=parse_number(block[100:108]), uid=parse_number(block[108:116]),
                  gid=parse_number(block[116:124]), mtime=parse_number(block[136:148]),
                  linkname=parse_text(block[157:257]), offset=offset)


def is_header(block: bytes) -> bool:
    """Does the 512-byte `block` carry a valid tar checksum (unsigned, or signed as old tars)?"""
    try:
        stored = parse_number(block[148:156])
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)


def parse_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def parse_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode(*_TEXT)


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


# --- stream plumbing: bounded members, gunzip without seeking, engine chunks -----------------

class Bounded(io.RawIOBase):
    """The next `size` bytes of a stream; the stream ending sooner means a truncated archive."""

    def __init__(self, stream: Counted, size: int) -> None:
        self.stream = stream
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.left <= 0:
            return 0
        got = self.stream.readinto(memoryview(buf)[: self.left])
        if not got:
            raise EOFError("the archive ends inside a member")
        self.left -= got
        return got


class GzipReader(io.RawIOBase):
    """Streaming gunzip over a non-seekable reader (gzip.GzipFile wants to seek on errors)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self.pending:
            if self.inflate.eof:
                rest = self.inflate.unused_data or self.raw.read(_SKIP_BUFFER)
                if not rest.startswith(_GZIP_MAGIC):
                    return 0  # the end, or padding after the last gzip member
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                chunk = rest
            else:
                chunk = self.inflate.unconsumed_tail or self.raw.read(_SKIP_BUFFER)
                if not chunk:
                    raise EOFError("compressed layer ends early")
            self.pending = memoryview(self.inflate.decompress(chunk, _SKIP_BUFFER))
        size = min(len(buf), len(self.pending))
        buf[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class ZstdReader(io.RawIOBase):
    """Streaming zstd decompression that, unlike `ZstdDecompressor().stream_reader`, raises
    EOFError when the input ends inside a frame instead of ending quietly (a truncated layer
    would otherwise read as a shorter tar). Concatenated frames are read one after another."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.unpack = zstandard.ZstdDecompressor().decompressobj()
        self.pending = memoryview(b"")
        self.rest = b""       # input after the end of a frame
        self.between = False  # a frame has ended; `rest` holds what follows it

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self.pending:
            if self.between:
                while len(self.rest) < len(_ZSTD_MAGIC) and (more := self.raw.read(_ZSTD_INPUT)):
                    self.rest += more
                if not self.rest.startswith(_ZSTD_MAGIC):
                    return 0  # the end, or padding after the last frame
                self.unpack = zstandard.ZstdDecompressor().decompressobj()
                self.between, chunk, self.rest = False, self.rest, b""
            else:
                chunk = self.raw.read(_ZSTD_INPUT)
                if not chunk:
                    raise EOFError("compressed layer ends early")
            self.pending = memoryview(self.unpack.decompress(chunk))
            if self.unpack.eof:
                self.between, self.rest = True, self.unpack.unused_data
        size = min(len(buf), len(self.pending))
        buf[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class _ChunksReader(io.RawIOBase):
    """A raw reader over an iterator of byte chunks (the engine's save stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self.pending:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.pending = memoryview(chunk)
        size = min(len(buf), len(self.pending))
        buf[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def iter_chunks_reader(chunks: Iterable[bytes]) -> IO[bytes]:
    """A buffered binary reader over byte chunks, for `read_archive`."""
    return io.BufferedReader(_ChunksReader(chunks), _SKIP_BUFFER)
