"""Stream plumbing under the tar reader: a member's bytes bounded, gzip and zstd decompression
that never seeks and tells a cut stream from an ended one, and a reader over the engine's
chunks that copies each byte once."""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterable
from typing import IO, Any

import zstandard

from layerkit.image.tarstream import Counted

__all__ = ["Bounded", "ChunkReader", "GzipReader", "ZstdReader", "iter_chunks_reader"]

_BUFFER = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_INPUT = 128 << 10  # zstd input fed per step: decompressobj has no output limit


class Bounded(io.RawIOBase):
    """The next `size` bytes of a stream; the stream ending sooner means a truncated archive.
    `head`, already taken off the stream, is served first (a peek that costs no buffer layer).
    Unbuffered on purpose: reads go straight to the stream, with no copy of their own. With
    `sha`, every byte taken off the stream (and `head`) also goes into that hash."""

    def __init__(self, stream: Counted, size: int, head: bytes = b"",
                 sha: hashlib._Hash | None = None) -> None:
        self.stream = stream
        self.head = head
        self.left = size - len(head)
        self.sha = sha
        if sha is not None:
            sha.update(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.head:
            size = min(len(buf), len(self.head))
            buf[:size] = self.head[:size]
            self.head = self.head[size:]
            return size
        if self.left <= 0:
            return 0
        view = memoryview(buf)[: self.left]
        got = self.stream.readinto(view)
        if not got:
            raise EOFError("the archive ends inside a member")
        if self.sha is not None:
            self.sha.update(view[:got])
        self.left -= got
        return got

    def take(self, size: int) -> memoryview:
        """As `Counted.take`: up to `size` bytes lent by the stream below."""
        if self.head:
            view = memoryview(self.head)[:size]
            self.head = self.head[len(view):]
            return view
        if self.left <= 0:
            return memoryview(b"")
        view = self.stream.take(min(size, self.left))
        if not view:
            raise EOFError("the archive ends inside a member")
        if self.sha is not None:
            self.sha.update(view)
        self.left -= len(view)
        return view

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            return data + (self.read(size - len(data)) if len(data) < size else b"")
        want = min(size, self.left)
        if want <= 0:
            return b""
        data = self.stream.raw.read(want)
        self.stream.pos += len(data)
        self.left -= len(data)
        if not data:
            raise EOFError("the archive ends inside a member")
        if self.sha is not None:
            self.sha.update(data)
        return data


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
                rest = self.inflate.unused_data or self.raw.read(_BUFFER)
                if not rest.startswith(_GZIP_MAGIC):
                    return 0  # the end, or padding after the last gzip member
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                chunk = rest
            else:
                chunk = self.inflate.unconsumed_tail or self.raw.read(_BUFFER)
                if not chunk:
                    raise EOFError("compressed layer ends early")
            self.pending = memoryview(self.inflate.decompress(chunk, _BUFFER))
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


class ChunkReader(io.RawIOBase):
    """An unbuffered reader over an iterator of byte chunks (the engine's save stream): each
    byte is copied once, from its chunk into the caller's buffer or the bytes `read` returns."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            return False
        self.pending = memoryview(chunk)
        return True

    def readinto(self, buf: Any) -> int:
        while not self.pending:
            if not self._next():
                return 0
        size = min(len(buf), len(self.pending))
        buf[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size

    def take(self, size: int) -> memoryview:
        """Up to `size` bytes as a view of the current chunk (no copy); empty at the end."""
        while not self.pending:
            if not self._next():
                return self.pending
        view = self.pending[:size]
        self.pending = self.pending[len(view):]
        return view

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if len(self.pending) >= size:
            data = bytes(self.pending[:size])
            self.pending = self.pending[size:]
            return data
        parts, have = [bytes(self.pending)], len(self.pending)
        self.pending = memoryview(b"")
        while have < size and self._next():
            piece = self.pending[:size - have]
            parts.append(bytes(piece))
            have += len(piece)
            self.pending = self.pending[len(piece):]
        return b"".join(parts)


def iter_chunks_reader(chunks: Iterable[bytes]) -> IO[bytes]:
    """A buffered binary reader over byte chunks (peek, readline and the rest)."""
    return io.BufferedReader(ChunkReader(chunks), _BUFFER)
