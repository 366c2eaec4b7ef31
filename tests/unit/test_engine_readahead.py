"""The read-ahead under `engine.save_image` (`savestream.SaveStream`): order, errors, early stop;
and the SDK path's pieces (`save._sdk_chunks`) against a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import types
from collections.abc import Iterator

import docker
import pytest

from layerkit.engine import save
from layerkit.engine.save import SaveStream
from layerkit.image.archive import read_archive
from tests.imagetar import Image, file, layer, legacy_archive, whiteout


def test_chunks_arrive_in_order() -> None:
    chunks = [bytes([i]) * 10 for i in range(100)]
    assert list(SaveStream(iter(chunks), 4)) == chunks


def test_an_error_in_the_stream_reaches_the_consumer() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a"
        raise ConnectionError("engine went away")

    stream = SaveStream(broken(), 2)
    assert next(stream) == b"a"
    with pytest.raises(ConnectionError, match="went away"):
        next(stream)


def test_reading_stops_when_the_consumer_stops() -> None:
    produced = []

    def endless() -> Iterator[bytes]:
        i = 0
        while True:
            produced.append(i)
            yield b"x"
            i += 1

    before = threading.active_count()
    stream = SaveStream(endless(), 3)
    assert next(stream) == b"x"
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    assert len(produced) <= 3 + 3  # bounded by the read-ahead depth, not endless


def test_the_sdk_path_reads_an_archive_without_waiting_for_the_connections_end() -> None:
    """`save._sdk_chunks` (tcp, TLS and ssh engines) against a server on 127.0.0.1 that sends
    a save in 32 KiB chunks, as the engine does, and then holds the connection open (an engine
    of Docker 20-24 deletes its temporary copy of the image before it sends the last chunk):
    the archive is read whole, and the reader closes first."""
    archive = legacy_archive(Image([layer(file("a", b"x" * 100_000)), layer(whiteout("a"))]))
    body = b"".join(b"%x\r\n%s\r\n" % (len(archive[i:i + 32768]), archive[i:i + 32768])
                    for i in range(0, len(archive), 32768))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    closed_first: list[bool] = []

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + body)
            try:
                closed_first.append(conn.recv(1) == b"")
            except ConnectionResetError:  # closed with the tar's padding unread
                closed_first.append(True)
            except TimeoutError:
                closed_first.append(False)
            with contextlib.suppress(OSError):
                conn.sendall(b"0\r\n\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    port = listener.getsockname()[1]
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41")
    client.api.trust_env = False  # no HTTP(S)_PROXY from the environment for 127.0.0.1
    try:
        chunks = save._sdk_chunks(client, "/v1.41/images/x:1/get", 1 << 20)
        with contextlib.closing(SaveStream(chunks, 0)) as stream:
            image = read_archive(stream, hash_content=True).images[0]
            assert closed_first == []  # read while the server still holds the connection
    finally:
        client.close()
    server.join(timeout=20)
    assert [layer.content_bytes for layer in image.layers] == [100_000, 0]
    assert closed_first == [True]


def test_the_sdk_path_reads_whole_pieces_where_the_connection_has_no_read1() -> None:
    """http.client's read1 calls its connection file's read1, which paramiko's channel file
    (ssh:// engines) does not have: there `read` is taken."""
    class Without:
        def read(self, size: int) -> bytes:
            return b""

    class With(Without):
        def read1(self, size: int) -> bytes:
            return b""

    class Raw:
        def __init__(self, connection_file: object) -> None:
            self._fp = types.SimpleNamespace(fp=connection_file)

        def read(self, size: int) -> bytes:
            return b"read"

        def read1(self, size: int) -> bytes:
            return b"read1"

    assert save._piece_reader(Raw(With()))(10) == b"read1"
    assert save._piece_reader(Raw(Without()))(10) == b"read"
    assert save._piece_reader(types.SimpleNamespace(read=lambda size: b"old"))(10) == b"old"
