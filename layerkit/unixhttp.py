"""One HTTP/1.1 GET over a unix socket, its body read in large pieces: `docker save`'s fast path.

The engine sends `docker save` as a chunked reply in 32 KiB chunks. Through requests and
http.client every chunk costs a few Python calls and one or two small `recv`s: about 0.65 s of
CPU for a 430 MB image, more than parsing the archive itself, and all of it under the GIL that
the parser needs too. Here the socket is read 1 MiB at a time and the chunk framing is cut out
with slices, a few microseconds per chunk.

Only what that one request needs: no redirects, no keep-alive (the connection closes with the
body), bodies framed by chunked encoding, Content-Length, or the end of the connection. Any
other engine address (tcp, TLS, ssh) takes the Docker SDK's path.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

__all__ = ["HTTPStatusError", "ProtocolError", "get"]

RECV_SIZE = 1 << 20
MAX_HEAD = 64 << 10  # status line and headers
MAX_ERROR_BODY = 64 << 10


class ProtocolError(ConnectionError):
    """The reply is not the HTTP we asked for, or the connection ended inside it."""


class HTTPStatusError(Exception):
    """A reply other than 200; `message` is the engine's explanation when it gave one."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def get(socket_path: str, target: str, *, chunk_size: int = RECV_SIZE,
        connect_timeout: float = 120.0) -> Iterator[bytes]:
    """The body of `GET target` at the unix socket `socket_path`, in pieces of about
    `chunk_size` bytes. Runs as it is iterated: the request is sent on the first `next()`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(connect_timeout)
        sock.connect(socket_path)
        sock.settimeout(None)  # a save may take minutes before its first byte
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: layerkit\r\n"
                     f"Accept-Encoding: identity\r\nConnection: close\r\n\r\n".encode("ascii"))
        reader = _Reader(sock)
        status, reason, headers = _head(reader)
        body = _body(reader, headers, chunk_size)
        if status != 200:
            raise HTTPStatusError(status, reason, _explanation(body))
        yield from body


class _Reader:
    """Bytes off the socket: one reused buffer filled by large `recv_into`s, and a window
    [start, end) of what is not consumed yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(2 * RECV_SIZE)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def fill(self) -> bool:
        """Read more; False at the end of the connection."""
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buf) - self.end < RECV_SIZE // 4:
            held = self.end - self.start
            if held > len(self.buf) // 2:
                raise ProtocolError("a line of the reply is too long")
            self.view[:held] = self.view[self.start:self.end]
            self.start, self.end = 0, held
        got = self.sock.recv_into(self.view[self.end:])
        self.end += got
        return got > 0

    def line(self, limit: int = MAX_HEAD) -> bytes:
        while (stop := self.buf.find(b"\r\n", self.start, self.end)) < 0:
            if self.end - self.start > limit:
                raise ProtocolError("a line of the reply is too long")
            if not self.fill():
                raise ProtocolError("the connection ended inside the reply's framing")
        line = bytes(self.view[self.start:stop])
        self.start = stop + 2
        return line

    def take(self, size: int) -> memoryview:
        """Up to `size` buffered bytes (reading if none are), empty at the end; the view is
        valid until the next call."""
        if self.start == self.end and not self.fill():
            return self.view[:0]
        stop = min(self.start + size, self.end)
        data = self.view[self.start:stop]
        self.start = stop
        return data


def _head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    parts = reader.line().decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {parts[0][:40]!r}")
    headers: dict[str, str] = {}
    size = 0
    while line := reader.line():
        size += len(line)
        if size > MAX_HEAD:
            raise ProtocolError("the reply's headers are too long")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"a header line without a colon: {name[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _body(reader: _Reader, headers: dict[str, str], chunk_size: int) -> Iterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader, chunk_size)
    if "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise ProtocolError(f"a bad Content-Length: {length[:40]!r}")
        return _sized(reader, int(length), chunk_size)
    return _until_close(reader, chunk_size)


def _chunked(reader: _Reader, chunk_size: int) -> Iterator[bytes]:
    out = bytearray(chunk_size)
    held = 0
    while True:
        size_text = reader.line().split(b";", 1)[0].strip()  # chunk extensions are ignored
        try:
            left = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"a bad chunk size: {size_text[:40]!r}") from None
        if left < 0:
            raise ProtocolError("a negative chunk size")
        if left == 0:
            while reader.line():  # trailer fields, up to the empty line
                pass
            break
        while left:
            data = reader.take(min(left, chunk_size - held))
            if not data:
                raise ProtocolError("the connection ended inside a chunk")
            size = len(data)
            out[held:held + size] = data
            held += size
            left -= size
            if held == chunk_size:
                yield bytes(out)
                held = 0
        if reader.line():
            raise ProtocolError("a chunk is not followed by CRLF")
    if held:
        yield bytes(out[:held])


def _sized(reader: _Reader, length: int, chunk_size: int) -> Iterator[bytes]:
    while length:
        data = reader.take(min(length, chunk_size))
        if not data:
            raise ProtocolError(f"the connection ended {length} bytes before the body's end")
        length -= len(data)
        yield bytes(data)


def _until_close(reader: _Reader, chunk_size: int) -> Iterator[bytes]:
    while data := reader.take(chunk_size):
        yield bytes(data)


def _explanation(body: Iterator[bytes]) -> str:
    """The engine's error message: `{"message": ...}`, else the body's first line."""
    data = b""
    for piece in body:
        data += piece
        if len(data) > MAX_ERROR_BODY:
            break
    text = data[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message.strip():
        return message.strip().splitlines()[0]
    return text.splitlines()[0] if text else "no explanation"
