"""One HTTP GET over a unix socket, its body read in large pieces: `docker save`'s fast path.

Asked in HTTP/1.1 (as requests and the SDK do) the engine sends `docker save` in 32 KiB
chunks, and through requests and http.client each chunk costs a few Python calls and small
`recv`s, more CPU than parsing the archive itself, CPU that the engine writing the stream
needs too on a small machine (figures: docs/analyze.md, "How it reads images"). Asked in
HTTP/1.0, the engine (Go's net/http) sends the body unframed and closes the connection at its
end; here the body is then received straight into the buffers handed to the caller, 128 KiB at
a time (`PIECE`), so the kernel's copy is the only one; a part-filled one is handed on after
`PIECE_WAIT`, so that a reader that stops at the tar's end need not wait for the connection's.

Only what that one request needs: no redirects, no keep-alive, bodies ended by the connection's
end or framed by Content-Length or (should a proxy send it anyway) chunked encoding. Any other
engine address (tcp, TLS, ssh) takes the Docker SDK's path.
"""

from __future__ import annotations

# The socket module's C core, not `socket`: importing that takes milliseconds (selectors, enum,
# and its constants made IntEnums), and the early request (`entry`) waits for it. The C socket
# type has all this module calls: connect, sendall, recv_into, setsockopt, settimeout, close.
import _socket as socket

TYPE_CHECKING = False  # typing itself is not imported: see `image_target`
if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Mapping

__all__ = ["HTTPStatusError", "ProtocolError", "Request", "get", "image_target", "socket_path"]

LINE_RECV = 512  # framing is read this much at a time; body bytes go straight to their buffer
# The body is handed on in pieces of this size, each filled by one `recv` (MSG_WAITALL). Not
# larger: while the caller parses a piece, the engine can only write ahead as far as its socket
# buffer (about 200 KiB), and a piece full of small files takes longer to parse than the engine
# takes to fill that; it then waits (measured sizes: docs/analyze.md).
PIECE = 128 << 10
# A part-filled piece is handed on once this long passes with no more bytes (SO_RCVTIMEO
# under MSG_WAITALL). The tar inside ends with its end-of-archive blocks, and the reader stops
# there; without this it would wait for the connection's end, which an engine of Docker 20-24
# sends only after deleting its temporary copy of the image, tenths of a second later.
# Mid-stream the engine writes every few microseconds, so pieces stay whole unless it stalls
# for longer than this.
PIECE_WAIT = 0.005
MAX_HEAD = 64 << 10  # status line and headers
MAX_ERROR_BODY = 64 << 10
DEFAULT_SOCKET = "/var/run/docker.sock"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
# what a name:tag reference is made of: sent as it is; any other (name@digest) is quoted
_PLAIN_REF = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/")


def socket_path(environ: Mapping[str, str]) -> str | None:
    """The engine's unix socket that DOCKER_HOST names (or the default one); None for tcp, TLS
    and ssh engines, which go through the Docker SDK."""
    host = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    return host.removeprefix("unix://") if host.startswith("unix:///") else None


def image_target(ref: str, what: str, api_version: str | None = None) -> str:
    """`/images/{ref}/{what}`. This module imports nothing but `_socket`, so that `layerkit
    analyze` can send its request right after the interpreter starts (see `entry`); the
    usual reference needs no quoting, and urllib is imported only for an unusual one."""
    if not set(ref) <= _PLAIN_REF:
        from urllib.parse import quote  # noqa: PLC0415 - rare: see above

        ref = quote(ref, safe="/:")
    # unversioned paths get the engine's own API version, as the docker CLI's would
    prefix = f"/v{api_version}" if api_version else ""
    return f"{prefix}/images/{ref}/{what}"


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()  # isdigit alone takes "²"


def _is_hex(data: bytes) -> bool:
    # not int(, 16) alone: it would take "0x5", "+5", "0_5"
    return 0 < len(data) <= 16 and not data.strip(_HEX_DIGITS)


class ProtocolError(ConnectionError):
    """The reply is not the HTTP we asked for, or the connection ended inside it."""


class HTTPStatusError(Exception):
    """A reply other than 200; `message` is the engine's explanation when it gave one."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def get(socket_path: str, target: str, *, chunk_size: int = PIECE,
        connect_timeout: float = 120.0,
        wait: float | None = PIECE_WAIT) -> Generator[bytes, None, None]:
    """The body of `GET target` at the unix socket `socket_path`, in pieces of `chunk_size`
    bytes; a piece is shorter when `wait` seconds (at least 1 µs) pass with nothing more to
    fill it (None: only the last one; a chunked body, which only a proxy would send, always
    waits). The request is sent on the first `next()`."""
    yield from Request(socket_path, target, connect_timeout=connect_timeout).body(chunk_size,
                                                                                 wait)


class Request:
    """A GET sent at once, so the engine starts on it; `body()` reads the reply."""

    def __init__(self, socket_path: str, target: str, *, connect_timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(connect_timeout)
            self.sock.connect(socket_path)
            self.sock.settimeout(None)  # a save may take minutes before its first byte
            # HTTP/1.0: the engine (Go's net/http) then sends the body as it is, ended by
            # closing the connection, with no chunk framing to take apart
            self.sock.sendall(f"GET {target} HTTP/1.0\r\nHost: docker\r\n"
                              "User-Agent: layerkit\r\nAccept-Encoding: identity\r\n\r\n"
                              .encode("ascii"))
        except BaseException:
            self.sock.close()
            raise

    def body(self, chunk_size: int = PIECE,
             wait: float | None = PIECE_WAIT) -> Generator[bytes, None, None]:
        """The reply's body (pieces as `get` gives them); HTTPStatusError unless it is a 200.
        The socket is closed when the body ends, fails or is dropped."""
        try:
            if wait is not None and not wait >= 1e-6:  # 0 would mean no limit, < 0 a busy loop
                raise ValueError(f"wait must be at least 1 µs, or None: {wait!r}")
            reader = _Reader(self.sock)
            status, reason, headers = _head(reader)
            body = _body(reader, headers, chunk_size, wait)
            if status != 200:
                raise HTTPStatusError(status, reason, _explanation(body))
            yield from body
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()

    def shutdown(self) -> None:
        """End the connection without closing the socket: a `recv` in another thread returns
        at once (with what is queued, then the end), and that thread closes it as `body`
        ends. Closing it under that thread could hand its next `recv` a reused descriptor."""
        try:  # noqa: SIM105 - contextlib is not imported here: see `image_target`
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected any more, or already closed: nothing to wake
            pass


class _Reader:
    """The reply off the socket. Framing (status line, headers, chunk sizes) is read in small
    `recv`s into a small buffer; body bytes go from the socket straight into the caller's
    buffer, so the kernel's copy is the only one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(MAX_HEAD + LINE_RECV)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # the unread bytes are buf[start:end]

    def fill(self) -> bool:
        """Read a little more framing; False at the end of the connection."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end + LINE_RECV > len(self.buf):
            held = self.end - self.start
            self.view[:held] = self.view[self.start:self.end]
            self.start, self.end = 0, held
        got = self.sock.recv_into(self.view[self.end:self.end + LINE_RECV])
        self.end += got
        return got > 0

    def line(self) -> bytes:
        while (stop := self.buf.find(b"\r\n", self.start, self.end)) < 0:
            if self.end - self.start >= MAX_HEAD:
                raise ProtocolError("a line of the reply is too long")
            if not self.fill():
                raise ProtocolError("the connection ended inside the reply's framing")
        line = bytes(self.view[self.start:stop])
        self.start = stop + 2
        return line

    def readinto(self, dst: memoryview) -> int:
        """Some bytes into `dst`: what is buffered first, else straight from the socket; 0 at
        the end of the connection."""
        if self.start < self.end:
            size = min(len(dst), self.end - self.start)
            dst[:size] = self.view[self.start:self.start + size]
            self.start += size
            return size
        return self.sock.recv_into(dst)

    def wait(self, seconds: float) -> None:
        """From now on a `recv` returns what it has when `seconds` pass with no more bytes,
        or raises BlockingIOError if it has none (the socket's SO_RCVTIMEO)."""
        import struct  # noqa: PLC0415 - not before the request: see `image_target`

        whole = int(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("@ll", whole, int((seconds - whole) * 1e6)))

    def readinto_all(self, dst: memoryview) -> int:
        """As `readinto`, but from the socket it waits for all of `dst`: one wake-up and one
        system call per buffer, not one per write the engine made (it writes 32 KiB at a
        time). Fewer bytes at the end of the connection, or once the `wait` passes."""
        if self.start < self.end:
            return self.readinto(dst)
        return self.sock.recv_into(dst, 0, socket.MSG_WAITALL)


def _head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    parts = reader.line().decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _is_decimal(parts[1]):
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


def _body(reader: _Reader, headers: dict[str, str], chunk_size: int,
          wait: float | None) -> Iterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader, chunk_size)  # a proxy's framing: pieces wait to be whole
    if wait is not None:  # only now: the head itself may take minutes to come
        reader.wait(wait)
    if "content-length" in headers:
        length = headers["content-length"]
        if not _is_decimal(length):
            raise ProtocolError(f"a bad Content-Length: {length[:40]!r}")
        return _sized(reader, int(length), chunk_size)
    return _until_close(reader, chunk_size)


def _chunked(reader: _Reader, chunk_size: int) -> Iterator[bytes]:
    out = memoryview(bytearray(chunk_size))
    held = 0
    while True:
        size_text = reader.line().split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not _is_hex(size_text):
            raise ProtocolError(f"a bad chunk size: {size_text[:40]!r}")
        left = int(size_text, 16)
        if left == 0:
            while reader.line():  # trailer fields, up to the empty line
                pass
            break
        while left:
            got = reader.readinto(out[held:held + min(left, chunk_size - held)])
            if not got:
                raise ProtocolError("the connection ended inside a chunk")
            held += got
            left -= got
            if held == chunk_size:
                yield out.obj  # type: ignore[misc]  # a bytearray, handed over whole
                out, held = memoryview(bytearray(chunk_size)), 0
        if reader.line():
            raise ProtocolError("a chunk is not followed by CRLF")
    if held:
        yield bytes(out[:held])


def _sized(reader: _Reader, length: int, chunk_size: int) -> Iterator[bytes]:
    while length:
        piece = _fill(reader, min(length, chunk_size))
        if not piece:
            raise ProtocolError(f"the connection ended {length} bytes before the body's end")
        length -= len(piece)
        yield piece


def _until_close(reader: _Reader, chunk_size: int) -> Iterator[bytes]:
    while piece := _fill(reader, chunk_size):
        yield piece


def _fill(reader: _Reader, size: int) -> bytes:
    """Up to `size` bytes: fewer at the end of the connection, or when the reader's `wait`
    passed with some bytes held; b"" only at the end."""
    out = memoryview(bytearray(size))
    held = 0
    while held < size:
        want, buffered = size - held, reader.start < reader.end
        try:
            got = reader.readinto_all(out[held:])
        except BlockingIOError:  # the wait passed with no bytes at all
            if held:
                break
            continue
        held += got
        if got < want and not buffered:
            break  # the connection ended, or the wait passed: hand on what there is
    return bytes(out[:held]) if held < size else out.obj  # type: ignore[return-value]


def _explanation(body: Iterator[bytes]) -> str:
    """The engine's error message: `{"message": ...}`, else the body's first line."""
    data = b""
    for piece in body:
        data += piece
        if len(data) > MAX_ERROR_BODY:
            break
    text = data[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()
    import json  # noqa: PLC0415 - only errors need it: see `image_target`

    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message.strip():
        return message.strip().splitlines()[0]
    return text.splitlines()[0] if text else "no explanation"
