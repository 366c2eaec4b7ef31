"""`unixhttp.get` against a tiny real server on a unix socket (scripted raw bytes, split across
sends), and `savestream`'s socket choice and error translation.

Every server is a thread that accepts one connection, reads the request, sends its script and
closes; all of its socket operations have timeouts and the fixture joins it, so no test hangs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerkit.engine import save as savestream
from layerkit.engine import unixhttp
from layerkit.engine.save import SaveStream, unix_errors
from layerkit.engine.unixhttp import HTTPStatusError, ProtocolError
from layerkit.errors import FIX_HINT, EngineError, EngineUnavailable, NotFound
from layerkit.image.archive import read_archive
from tests.imagetar import Image, file, layer, legacy_archive, whiteout

TIMEOUT = 5.0
GAP = 0.01  # between scripted sends, so that each one reaches the client as its own recv

OK_CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")


class Server:
    """One connection on a unix socket: read the request head, send `script`, close.

    With `linger`, the connection stays open after the script until the client closes it (so a
    client that waits for the end of the connection instead of the body's framing is caught).
    """

    def __init__(self, path: str, script: list[bytes], *, gap: float = GAP,
                 linger: bool = False, linger_for: float = TIMEOUT) -> None:
        self.path = path
        self.script = script
        self.gap = gap
        self.linger = linger
        self.linger_for = linger_for
        self.request = b""
        self.client_closed_first: bool | None = None
        self.error: BaseException | None = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.settimeout(TIMEOUT)
        self.listener.bind(path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._run, name="unixhttp-test-server",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                while b"\r\n\r\n" not in self.request:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.request += data
                for i, piece in enumerate(self.script):
                    if i and self.gap:
                        time.sleep(self.gap)
                    conn.sendall(piece)
                if self.linger:
                    conn.settimeout(self.linger_for)
                    try:
                        self.client_closed_first = conn.recv(1) == b""
                    except TimeoutError:
                        self.client_closed_first = False
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading early, as some tests mean it to
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(timeout=3 * TIMEOUT)
        assert not self.thread.is_alive(), "the test server did not finish"
        if self.error is not None:
            raise self.error


class Servers:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Server] = []

    def path(self, name: str = "s.sock") -> str:
        return str(self.directory / name)

    def __call__(self, script: list[bytes] | bytes, **options: object) -> Server:
        pieces = [script] if isinstance(script, bytes) else script
        server = Server(self.path(f"s{len(self.started)}.sock"), pieces, **options)
        self.started.append(server)
        return server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Servers]:
    directory = tmp_path
    short = None
    if len(str(tmp_path)) > 80:  # AF_UNIX paths are limited to 107 bytes
        short = tempfile.TemporaryDirectory(prefix="lk-uh-")
        directory = Path(short.name)
    servers = Servers(directory)
    try:
        yield servers
    finally:
        try:
            for server in servers.started:
                server.join()
        finally:
            if short is not None:
                short.cleanup()


def fetch(server: Server, target: str = "/images/x/get", **options: object) -> list[bytes]:
    pieces = list(unixhttp.get(server.path, target, **options))
    server.join()
    return pieces


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def cut(data: bytes, *at: int) -> list[bytes]:
    bounds = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- bodies ---------------------------------------------------------------------------------

def test_request_line_and_headers(serve: Servers) -> None:
    server = serve(OK_CHUNKED + chunked(b"hi"))
    assert b"".join(fetch(server, "/v1.41/images/a%20b:1/get")) == b"hi"
    head = server.request.decode("ascii")
    assert head.endswith("\r\n\r\n")
    lines = head[:-4].split("\r\n")
    method, target, version = lines[0].split(" ")
    assert (method, target) == ("GET", "/v1.41/images/a%20b:1/get")
    fields = {k.strip().lower(): v.strip()
              for k, _, v in (line.partition(":") for line in lines[1:])}
    assert "host" in fields
    # the engine must close the connection after the reply: HTTP/1.1 says so with
    # `Connection: close`; HTTP/1.0 closes by default, so it must not ask for keep-alive
    assert version in ("HTTP/1.1", "HTTP/1.0")
    if version == "HTTP/1.1":
        assert fields.get("connection", "").lower() == "close"
    else:
        assert "keep-alive" not in fields.get("connection", "").lower()


def test_nothing_is_sent_before_the_first_next(serve: Servers) -> None:
    path = serve.path("nobody.sock")
    pieces = unixhttp.get(path, "/images/x/get")  # no socket there: only next() finds out
    with pytest.raises(FileNotFoundError):
        next(pieces)


def test_connection_refused(serve: Servers) -> None:
    path = serve.path("dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)  # bound, never listening
        with pytest.raises(ConnectionRefusedError):
            next(unixhttp.get(path, "/images/x/get"))


def test_chunked_body_in_one_send(serve: Servers) -> None:
    body = [b"hello", b" ", b"world" * 100]
    server = serve(OK_CHUNKED + chunked(*body))
    assert b"".join(fetch(server)) == b"".join(body)


@pytest.mark.parametrize("where", ["size-line", "size-crlf", "data", "data-crlf", "last-chunk",
                                   "final-crlf"])
def test_chunked_framing_split_across_sends(serve: Servers, where: str) -> None:
    #       0         1         2         3
    #       0123456789012345678901234567890123456
    raw = b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\nxyz\r\n0\r\n\r\n"
    at = {
        "size-line": [1],            # "1" | "A\r\n"
        "size-crlf": [3],            # "1A\r" | "\n..."
        "data": [4, 10, 30],         # data cut three times, the last right before its CRLF
        "data-crlf": [31],           # "...z\r" | "\n3..."
        "last-chunk": [40],          # "0" | "\r\n\r\n"
        "final-crlf": [44],          # "0\r\n\r" | "\n"
    }[where]
    assert raw[40:41] == b"0"
    server = serve([OK_CHUNKED, *cut(raw, *at)])
    assert b"".join(fetch(server)) == b"abcdefghijklmnopqrstuvwxyzxyz"


def test_chunked_byte_by_byte_including_the_head(serve: Servers) -> None:
    raw = OK_CHUNKED + b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"
    server = serve([raw[i:i + 1] for i in range(len(raw))], gap=0.002)
    assert b"".join(fetch(server)) == b"hello0123456789"


def test_chunk_extensions_are_ignored(serve: Servers) -> None:
    raw = b'5;ext=1\r\nhello\r\n6 ; name="a;b"\r\n world\r\n0;last\r\n\r\n'
    server = serve([OK_CHUNKED, raw])
    assert b"".join(fetch(server)) == b"hello world"


def test_trailers_after_the_last_chunk(serve: Servers) -> None:
    raw = b"3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Other: yes\r\n\r\n"
    server = serve([OK_CHUNKED, raw], linger=True)
    assert b"".join(fetch(server)) == b"abc"
    assert server.client_closed_first  # the empty line after the trailers ended the body


def test_hex_sizes_in_either_case(serve: Servers) -> None:
    data = bytes(i % 251 for i in range(0xAB + 0x1FE))
    raw = b"AB\r\n" + data[:0xAB] + b"\r\n1fE\r\n" + data[0xAB:] + b"\r\n0\r\n\r\n"
    server = serve([OK_CHUNKED, raw])
    assert b"".join(fetch(server)) == data


def test_pieces_are_recut_to_chunk_size(serve: Servers) -> None:
    sizes = [3, 10, 1, 20, 5, 7, 14, 2]
    chunks = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    server = serve([OK_CHUNKED, *[chunked(c)[:-5] for c in chunks], b"0\r\n\r\n"])
    pieces = fetch(server, chunk_size=7)
    assert b"".join(pieces) == b"".join(chunks)
    assert [len(p) for p in pieces[:-1]] == [7] * (len(pieces) - 1)
    assert 0 < len(pieces[-1]) <= 7
    assert len(pieces) == -(-sum(sizes) // 7)


def test_a_large_chunked_body_like_the_engines(serve: Servers) -> None:
    """32 KiB chunks, as the engine sends a save, sent in sends that do not line up with them."""
    data = os.urandom(5 << 20) + b"tail"
    raw = chunked(*[data[i:i + (32 << 10)] for i in range(0, len(data), 32 << 10)])
    server = serve([OK_CHUNKED, *[raw[i:i + 100_003] for i in range(0, len(raw), 100_003)]],
                   gap=0)
    pieces = fetch(server, chunk_size=1 << 20)
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces] == [1 << 20] * 5 + [4]


def test_content_length_body(serve: Servers) -> None:
    data = b"0123456789" * 5
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
    server = serve([head, data[:13], data[13:40], data[40:]], linger=True)
    pieces = fetch(server, chunk_size=16)
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 16 for p in pieces)
    assert server.client_closed_first  # Content-Length, not the end of the connection, ended it


def test_content_length_zero(serve: Servers) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", linger=True)
    assert fetch(server) == []
    assert server.client_closed_first


def test_body_ended_by_close(serve: Servers) -> None:
    data = os.urandom(300_000)
    server = serve([b"HTTP/1.0 200 OK\r\nContent-Type: application/x-tar\r\n\r\n",
                    data[:1000], data[1000:]])
    pieces = fetch(server, chunk_size=65536)
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 65536 for p in pieces)


def _until(pieces: Iterator[bytes], size: int) -> bytes:
    """The first `size` bytes of `pieces`, then the rest left unread (as the archive reader
    stops at a tar's end-of-archive blocks)."""
    data = b""
    for piece in pieces:
        data += piece
        if len(data) >= size:
            break
    return data


def test_the_last_piece_comes_before_the_connection_ends(serve: Servers) -> None:
    """An unframed body's last, part-filled piece is handed on once PIECE_WAIT passes with no
    more bytes: a reader that has all it needs need not wait for the connection to end (an
    engine ends it only after deleting its temporary copy of the image)."""
    data = os.urandom(100_000)
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n", data], linger=True)
    with contextlib.closing(unixhttp.get(server.path, "/images/x/get",
                                         chunk_size=65536)) as pieces:
        assert _until(pieces, len(data)) == data
    server.join()
    assert server.client_closed_first


def test_without_a_wait_the_last_piece_waits_for_the_end(serve: Servers) -> None:
    """The control for the test above: pieces kept whole until the connection ends."""
    data = os.urandom(100_000)
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n", data], linger=True, linger_for=0.5)
    pieces = unixhttp.get(server.path, "/images/x/get", chunk_size=65536, wait=None)
    with contextlib.closing(pieces):
        assert _until(pieces, len(data)) == data
    server.join()
    assert server.client_closed_first is False


def test_a_body_that_stalls_comes_in_part_pieces_and_whole(serve: Servers) -> None:
    data = os.urandom(200_000)
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n", *cut(data, 10, 70_000, 70_001, 150_000)],
                   gap=0.05)
    pieces = fetch(server, chunk_size=65536)
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 65536 for p in pieces)
    assert 65536 in map(len, pieces)  # whole where the bytes kept coming...
    assert len(pieces) > -(-len(data) // 65536)  # ...and cut short by the stalls


def test_body_bytes_read_with_the_head_are_handed_on_at_a_stall(serve: Servers) -> None:
    """The first body bytes come in the same recv as the head; when nothing follows within
    the wait, they are a piece of their own."""
    data = os.urandom(100_000)
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n" + data[:100], data[100:]], gap=0.2)
    pieces = fetch(server, chunk_size=65536)
    assert pieces[0] == data[:100]
    assert b"".join(pieces) == data


@pytest.mark.parametrize("wait", [0, -1.0, 1e-9])
def test_a_wait_below_a_microsecond_is_refused(serve: Servers, wait: float) -> None:
    server = serve(b"HTTP/1.0 200 OK\r\n\r\nbody")
    with pytest.raises(ValueError, match="at least 1"):
        fetch(server, wait=wait)


def test_the_head_may_take_longer_than_the_wait(serve: Servers) -> None:
    """PIECE_WAIT applies to the body only: an engine of Docker 20-24 sends nothing at all
    until it has written the whole image to its temporary directory."""
    data = os.urandom(1000)
    server = serve([b"", b"HTTP/1.0 200 OK\r\n", b"\r\n", data], gap=0.05)
    assert b"".join(fetch(server)) == data


def test_header_names_and_values_are_case_insensitive(serve: Servers) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n" + chunked(b"ab"))
    assert fetch(server) == [b"ab"]


# --- status errors --------------------------------------------------------------------------

def test_404_carries_the_engines_message(serve: Servers) -> None:
    body = json.dumps({"message": "No such image: nope:latest"}).encode()
    server = serve(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with pytest.raises(HTTPStatusError) as info:
        fetch(server)
    assert info.value.status == 404
    assert info.value.reason == "Not Found"
    assert info.value.message == "No such image: nope:latest"


def test_error_status_with_a_chunked_json_body(serve: Servers) -> None:
    body = b'{"message":"first line\\nsecond line"}\n'
    server = serve([b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n",
                    chunked(body[:10], body[10:])])
    with pytest.raises(HTTPStatusError) as info:
        fetch(server)
    assert (info.value.status, info.value.message) == (409, "first line")


def test_500_with_a_body_that_is_not_json(serve: Servers) -> None:
    body = b"engine exploded\nda\xffta\n"
    server = serve(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
    with pytest.raises(HTTPStatusError) as info:
        fetch(server)
    assert info.value.status == 500
    assert info.value.reason == "Internal Server Error"
    assert info.value.message == "engine exploded"


@pytest.mark.parametrize(("body", "message"), [
    (b"", "no explanation"),
    (b'{"error": "x"}', '{"error": "x"}'),
    (b"[1, 2]", "[1, 2]"),
    (b'{"message": ""}', '{"message": ""}'),
])
def test_error_bodies_without_a_message(serve: Servers, body: bytes, message: str) -> None:
    server = serve(b"HTTP/1.1 503 Service Unavailable\r\n\r\n" + body)  # ended by close
    with pytest.raises(HTTPStatusError) as info:
        fetch(server)
    assert (info.value.status, info.value.message) == (503, message)


def test_a_status_line_without_a_reason(serve: Servers) -> None:
    server = serve(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HTTPStatusError) as info:
        fetch(server)
    assert (info.value.status, info.value.reason) == (404, "")


# --- broken framing -------------------------------------------------------------------------

@pytest.mark.parametrize(("script", "match"), [
    pytest.param([b""], "ended", id="nothing-at-all"),
    pytest.param([b"HTTP/1.1 200 OK\r\nTransfer-Enc"], "ended", id="mid-headers"),
    pytest.param([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"], "ended", id="before-empty-line"),
    pytest.param([b"HTTP/1.1 20"], "ended", id="mid-status-line"),
    pytest.param([OK_CHUNKED, b"a\r\nhello"], "inside a chunk", id="mid-chunk"),
    pytest.param([OK_CHUNKED, b"5\r\nhello"], "ended", id="before-chunk-crlf"),
    pytest.param([OK_CHUNKED, b"5\r\nhello\r\n"], "ended", id="before-last-chunk"),
    pytest.param([OK_CHUNKED, b"5\r\nhello\r\n1"], "ended", id="mid-size-line"),
    pytest.param([OK_CHUNKED, b"5\r\nhello\r\n0\r\n"], "ended", id="before-final-crlf"),
    pytest.param([OK_CHUNKED, b"5\r\nhello\r\n0\r\nX-T: 1\r\n"], "ended", id="mid-trailers"),
    pytest.param([OK_CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"], "bad chunk size", id="bad-size"),
    pytest.param([OK_CHUNKED, b"\r\nhello\r\n0\r\n\r\n"], "bad chunk size", id="empty-size"),
    pytest.param([OK_CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"], "bad chunk size", id="negative-size"),
    pytest.param([OK_CHUNKED, b"5\r\nhelloXX\r\n0\r\n\r\n"], "CRLF", id="data-overruns"),
    pytest.param([OK_CHUNKED, b"5\r\nhello0\r\n\r\n"], "CRLF", id="no-crlf-after-data"),
    pytest.param([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"], "5 bytes before",
                 id="short-content-length"),
    pytest.param([b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"], "Content-Length",
                 id="bad-content-length"),
    pytest.param([b"SSH-2.0-OpenSSH_9.2\r\n"], "status line", id="ssh-banner"),
    pytest.param([b"HTTP/2 200\r\n\r\n"], "status line", id="http2"),
    pytest.param([b"HTTP/1.1 OK 200\r\n\r\n"], "status line", id="no-status-code"),
    pytest.param([b"\r\n"], "status line", id="empty-status-line"),
    pytest.param([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"], "colon", id="header-no-colon"),
])
def test_broken_framing_is_a_protocol_error(serve: Servers, script: list[bytes],
                                            match: str) -> None:
    server = serve(script)
    with pytest.raises(ProtocolError, match=match):
        fetch(server)


def test_broken_framing_after_good_pieces(serve: Servers) -> None:
    """The pieces before the break arrive; the error comes where the break is."""
    server = serve([OK_CHUNKED, b"7\r\nabcdefg\r\n", b"5\r\nab"])
    pieces = unixhttp.get(server.path, "/images/x/get", chunk_size=7)
    assert next(pieces) == b"abcdefg"
    with pytest.raises(ProtocolError):
        next(pieces)
    server.join()


def test_an_endless_header_line(serve: Servers) -> None:
    server = serve([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (unixhttp.MAX_HEAD + 10)])
    with pytest.raises(ProtocolError, match="too long"):
        fetch(server)


@pytest.mark.parametrize("head", [
    pytest.param(b"HTTP/1.1 \xb200 OK\r\n\r\n", id="status-code"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx", id="content-length"),
])
def test_non_ascii_digits_are_a_protocol_error(serve: Servers, head: bytes) -> None:
    server = serve(head)
    with pytest.raises(ProtocolError):
        fetch(server)


@pytest.mark.parametrize("size", [b"0x5", b"+5", b"0_5"])
def test_chunk_sizes_are_hex_digits_only(serve: Servers, size: bytes) -> None:
    server = serve([OK_CHUNKED, size + b"\r\nhello\r\n0\r\n\r\n"])
    with pytest.raises(ProtocolError):
        fetch(server)


# --- every split of one reply, deterministically (a scripted socket instead of a server) ----

class ScriptedSocket:
    """What `unixhttp.get` uses of a socket; each `recv_into` returns (what fits of) the next
    scripted piece, never more than one."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.sent = b""

    def __enter__(self) -> ScriptedSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        pass

    def connect(self, path: str) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        pass

    def recv_into(self, view: memoryview) -> int:
        if not self.pieces:
            return 0
        piece = self.pieces.pop(0)
        size = min(len(piece), len(view))
        assert size > 0
        view[:size] = piece[:size]
        if size < len(piece):  # as a socket does: the rest is there for the next recv
            self.pieces.insert(0, piece[size:])
        return size


@contextlib.contextmanager
def scripted(monkeypatch: pytest.MonkeyPatch, pieces: list[bytes]) -> Iterator[ScriptedSocket]:
    sock = ScriptedSocket(pieces)
    fake = types.SimpleNamespace(AF_UNIX=socket.AF_UNIX, SOCK_STREAM=socket.SOCK_STREAM,
                                 socket=lambda *args: sock)
    with monkeypatch.context() as patch:
        patch.setattr(unixhttp, "socket", fake)
        yield sock


REPLY = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n")
REPLY_BODY = b"helloabcdefghijklmnopqrstuvwxyz!"


@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20])
def test_every_two_and_three_way_split(monkeypatch: pytest.MonkeyPatch, chunk_size: int) -> None:
    splits = [cut(REPLY, i) for i in range(1, len(REPLY))]
    splits += [cut(REPLY, i, j) for i in range(1, len(REPLY), 3) for j in range(i + 1, len(REPLY))]
    splits.append([REPLY[i:i + 1] for i in range(len(REPLY))])
    for pieces in splits:
        with scripted(monkeypatch, pieces):
            got = list(unixhttp.get("/nowhere", "/images/x/get", chunk_size=chunk_size))
        assert b"".join(got) == REPLY_BODY, pieces
        assert all(len(p) == chunk_size for p in got[:-1]), pieces


def test_every_truncation_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for end in range(len(REPLY)):
        with scripted(monkeypatch, [REPLY[:end]] if end else []), \
                pytest.raises(ProtocolError):
            list(unixhttp.get("/nowhere", "/images/x/get"))


# --- savestream: which socket, and errors as LayerkitErrors ---------------------------------

@pytest.mark.parametrize(("environ", "expected"), [
    ({}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": ""}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "unix:///x/y.sock"}, "/x/y.sock"),
    ({"DOCKER_HOST": "unix:///var/run/docker.sock"}, "/var/run/docker.sock"),
    ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, None),
    ({"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1"}, None),
    ({"DOCKER_HOST": "ssh://me@build-host"}, None),
    ({"DOCKER_HOST": "npipe:////./pipe/docker_engine"}, None),
])
def test_socket_path(environ: dict[str, str], expected: str | None) -> None:
    assert savestream.socket_path(environ) == expected


def translated(exc: BaseException) -> BaseException:
    with pytest.raises(BaseException) as info, unix_errors("saving image x:1", "/run/d.sock"):
        raise exc
    return info.value


def test_404_becomes_not_found() -> None:
    err = translated(HTTPStatusError(404, "Not Found", "No such image: x:1"))
    assert type(err) is NotFound
    assert err.exit_code == 2
    assert "saving image x:1" in err.message
    assert "No such image: x:1" in err.message
    assert err.__cause__ is None
    assert err.__suppress_context__


@pytest.mark.parametrize("status", [400, 409, 500, 503])
def test_other_statuses_become_engine_errors(status: int) -> None:
    err = translated(HTTPStatusError(status, "Whatever", "it broke"))
    assert type(err) is EngineError
    assert err.exit_code == 1
    assert f"engine said {status}: it broke" in err.message


@pytest.mark.parametrize("exc", [ProtocolError("the connection ended inside a chunk"),
                                 ConnectionResetError(), BrokenPipeError()])
def test_broken_replies_become_engine_errors(exc: BaseException) -> None:
    err = translated(exc)
    assert type(err) is EngineError
    assert "broke off" in err.message


@pytest.mark.parametrize("exc", [FileNotFoundError(2, "No such file"),
                                 ConnectionRefusedError(111, "Connection refused"),
                                 PermissionError(13, "Permission denied")])
def test_no_engine_becomes_engine_unavailable(exc: BaseException) -> None:
    err = translated(exc)
    assert type(err) is EngineUnavailable
    assert "unix:///run/d.sock" in err.message
    assert type(exc).__name__ in err.message
    assert err.hint == FIX_HINT


def test_other_exceptions_pass_through() -> None:
    err = translated(ValueError("a bug"))
    assert type(err) is ValueError


@pytest.mark.parametrize("depth", [0, 2])
def test_savestream_raises_the_translated_error(depth: int) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first"
        raise HTTPStatusError(404, "Not Found", "No such image: x:1")

    stream = SaveStream(chunks(), depth, errors=lambda: unix_errors("saving image x:1", "/p"))
    assert next(stream) == b"first"
    with pytest.raises(NotFound, match="No such image: x:1"):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize(("exc", "kind"), [
    (ProtocolError("a bad chunk size"), EngineError),
    (ConnectionRefusedError(111, "refused"), EngineUnavailable),
    (HTTPStatusError(500, "Internal Server Error", "boom"), EngineError),
])
def test_savestream_translates_at_the_first_next(exc: BaseException, kind: type[Exception],
                                                 depth: int) -> None:
    def chunks() -> Iterator[bytes]:
        raise exc
        yield b""  # a generator

    stream = SaveStream(chunks(), depth, errors=lambda: unix_errors("saving image x:1", "/p"))
    with pytest.raises(kind) as info:
        next(stream)
    assert type(info.value) is kind


# --- save_unix and image_exists against the test server -------------------------------------

def test_save_unix_end_to_end(serve: Servers) -> None:
    data = os.urandom(100_000)
    server = serve([OK_CHUNKED, chunked(data[:40_000], data[40_000:])])
    stream = savestream.save_unix(server.path, "lk/img@sha256:ab", api_version="1.41",
                                  chunk_size=30_000, read_ahead=2)
    pieces = list(stream)
    server.join()
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces] == [30_000] * 3 + [10_000]
    assert server.request.startswith(b"GET /v1.41/images/lk/img%40sha256:ab/get HTTP/1.")


def test_an_archive_read_from_save_unix_needs_no_end_of_connection(serve: Servers) -> None:
    """`read_archive` stops at the tar's end-of-archive blocks, and the stream is closed then
    (as `layerkit analyze` and `squash` do) while the engine still holds the connection."""
    archive = legacy_archive(Image([layer(file("a", b"x" * 5000)), layer(whiteout("a"))]))
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n", archive], linger=True)
    with savestream.save_unix(server.path, "x:1") as stream:  # closed as the block ends
        image = read_archive(stream, hash_content=True).images[0]
    server.join()
    assert [layer.content_bytes for layer in image.layers] == [5000, 0]
    assert server.client_closed_first


def test_closing_a_read_ahead_stream_wakes_its_thread_which_closes_the_socket(
        serve: Servers) -> None:
    """With a reading thread, `close` shuts the connection down (Request.shutdown): the
    thread's recv returns at once, and the thread itself closes the socket as it ends."""
    archive = legacy_archive(Image([layer(file("a", b"x" * 5000))]))
    server = serve([b"HTTP/1.0 200 OK\r\n\r\n", archive], linger=True)
    before = {t for t in threading.enumerate() if t.name == "save-read-ahead"}
    stream = savestream.save_unix(server.path, "x:1", read_ahead=2)
    reader = ({t for t in threading.enumerate() if t.name == "save-read-ahead"} - before).pop()
    with stream:
        read_archive(stream)
    reader.join(timeout=TIMEOUT)
    assert not reader.is_alive()
    server.join()
    assert server.client_closed_first


def test_save_unix_missing_image_is_not_found(serve: Servers) -> None:
    server = serve(b'HTTP/1.1 404 Not Found\r\nContent-Length: 35\r\n\r\n'
                   b'{"message":"No such image: nope:1"}')
    stream = savestream.save_unix(server.path, "nope:1")
    with pytest.raises(NotFound, match="No such image: nope:1"):
        next(stream)
    server.join()
    assert server.request.startswith(b"GET /images/nope:1/get HTTP/1.")


def test_save_unix_without_an_engine(serve: Servers) -> None:
    with pytest.raises(EngineUnavailable) as info:  # at once, or at the first next() at the latest
        next(savestream.save_unix(serve.path("nobody.sock"), "x:1"))
    assert info.value.hint == FIX_HINT


def test_save_unix_broken_reply(serve: Servers) -> None:
    server = serve([OK_CHUNKED, b"5\r\nhel"])
    stream = savestream.save_unix(server.path, "x:1")
    with pytest.raises(EngineError, match="broke off"):
        list(stream)
    server.join()


@pytest.mark.parametrize(("reply", "expected"), [
    (b'HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{"Id":"sha:"}', True),
    (b'HTTP/1.1 404 Not Found\r\nContent-Length: 35\r\n\r\n{"message":"No such image: nope:1"}',
     False),
])
def test_image_exists(serve: Servers, reply: bytes, expected: bool) -> None:
    server = serve(reply)
    assert savestream.image_exists(server.path, "nope:1") is expected
    server.join()
    assert server.request.startswith(b"GET /images/nope:1/json HTTP/1.")


def test_image_exists_other_errors(serve: Servers) -> None:
    server = serve(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
    with pytest.raises(EngineError, match="500: boom"):
        savestream.image_exists(server.path, "x:1")
    server.join()
    with pytest.raises(EngineUnavailable):
        savestream.image_exists(serve.path("nobody.sock"), "x:1")
