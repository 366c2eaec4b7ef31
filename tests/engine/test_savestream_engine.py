"""`savestream.save_unix` (unixhttp on the engine's socket) against the real engine: the same
bytes as the SDK's paths, NotFound for a missing image, `image_exists`, and an early close that
ends the read-ahead thread and leaves the engine able to save again."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import threading
import time
from collections.abc import Iterable

import pytest

from layerkit.engine import save, unixhttp
from layerkit.engine import save as savestream
from layerkit.engine.client import DockerClient, engine_errors
from layerkit.engine.save import SaveStream
from layerkit.errors import NotFound

MISSING = "layerkit/no-such-image:never"
THREAD = "save-read-ahead"


def digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


@pytest.fixture(scope="module")
def engine_socket(docker_client: DockerClient) -> str:
    """The unix socket the session's client talks to (what `save.save_image` would use)."""
    api = docker_client.api
    path = getattr(api.get_adapter(api.base_url), "socket_path", None)
    if not isinstance(path, str):
        pytest.skip(f"the engine is not on a unix socket ({api.base_url})")
    return path


@pytest.fixture(scope="module")
def sdk_digest(docker_client: DockerClient, rootfs_image: str) -> tuple[str, int]:
    """`docker save` of the rootfs image through the SDK's own `get_image`."""
    return digest(docker_client.api.get_image(rootfs_image))


def save_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == THREAD}


def sockets_open() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def wait_ended(threads: set[threading.Thread], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], f"read-ahead still running after {seconds}s"


def test_socket_path_from_the_environment_names_the_clients_socket(engine_socket: str) -> None:
    assert savestream.socket_path(os.environ) == engine_socket


def test_three_paths_give_the_same_bytes(docker_client: DockerClient, rootfs_image: str,
                                         engine_socket: str,
                                         sdk_digest: tuple[str, int]) -> None:
    api_version = docker_client.api.api_version
    pieces: list[int] = []

    def counted(chunks: Iterable[bytes]) -> Iterable[bytes]:
        for chunk in chunks:
            pieces.append(len(chunk))
            yield chunk

    unix = digest(counted(savestream.save_unix(engine_socket, rootfs_image,
                                               api_version=api_version)))
    sdk = digest(savestream._sdk_chunks(docker_client, f"/v{api_version}/images/{rootfs_image}/get",
                                    1 << 20))
    assert sdk_digest[1] > 1 << 20
    assert unix == sdk == sdk_digest
    # unixhttp re-cuts the engine's 32 KiB chunks to pieces of its size (128 KiB); one is
    # handed on short only when the engine stalls for longer than PIECE_WAIT
    assert all(0 < size <= unixhttp.PIECE for size in pieces)
    assert unixhttp.PIECE in pieces


def test_save_image_takes_the_unix_path_and_gives_the_same_bytes(
        docker_client: DockerClient, rootfs_image: str, sdk_digest: tuple[str, int]) -> None:
    assert digest(save.save_image(docker_client, rootfs_image)) == sdk_digest


def test_save_unix_without_api_version(rootfs_image: str, engine_socket: str,
                                       sdk_digest: tuple[str, int]) -> None:
    assert digest(savestream.save_unix(engine_socket, rootfs_image, chunk_size=300_000,
                                       read_ahead=1)) == sdk_digest


def test_save_image_of_a_missing_image_raises_at_the_first_next(
        docker_client: DockerClient) -> None:
    stream = save.save_image(docker_client, MISSING)  # no error yet: the thread asks
    with pytest.raises(NotFound) as info:
        next(stream)
    assert info.value.exit_code == 2
    assert MISSING in info.value.message
    with pytest.raises(StopIteration):
        next(stream)


def test_sdk_path_of_a_missing_image_raises_not_found_too(docker_client: DockerClient) -> None:
    """The tcp/TLS/ssh path (`_sdk_chunks` under `engine_errors`) agrees with the unix one."""
    target = f"/v{docker_client.api.api_version}/images/{MISSING}/get"
    stream = SaveStream(savestream._sdk_chunks(docker_client, target, 1 << 20), 2,
                        errors=lambda: engine_errors(f"saving image {MISSING}"))
    with pytest.raises(NotFound):
        next(stream)


def test_image_exists(docker_client: DockerClient, rootfs_image: str,
                      engine_socket: str) -> None:
    assert savestream.image_exists(engine_socket, rootfs_image)
    image_id = docker_client.images.get(rootfs_image).id
    assert image_id is not None
    assert savestream.image_exists(engine_socket, image_id)
    assert not savestream.image_exists(engine_socket, MISSING)


@pytest.mark.parametrize("read_ahead", [0, 2])
def test_closing_early_ends_the_reading_and_a_second_save_works(
        rootfs_image: str, engine_socket: str, sdk_digest: tuple[str, int],
        read_ahead: int) -> None:
    sockets_before = sockets_open()
    before = save_threads()
    stream = savestream.save_unix(engine_socket, rootfs_image, read_ahead=read_ahead)
    ours = save_threads() - before
    if read_ahead:
        assert len(ours) == 1
    first = next(stream)
    assert 0 < len(first) <= unixhttp.PIECE
    assert sockets_open() > sockets_before  # its connection, still reading ahead
    stream.close()
    wait_ended(ours, 5)
    with pytest.raises(StopIteration):
        next(stream)
    assert sockets_open() <= sockets_before  # the connection went with the thread

    # the engine took the broken-off save in its stride
    assert digest(savestream.save_unix(engine_socket, rootfs_image)) == sdk_digest


def test_dropping_a_stream_ends_its_thread(rootfs_image: str, engine_socket: str) -> None:
    before = save_threads()
    stream = savestream.save_unix(engine_socket, rootfs_image, read_ahead=2)
    ours = save_threads() - before
    next(stream)
    del stream
    gc.collect()
    wait_ended(ours, 5)


def test_closing_before_the_first_chunk(rootfs_image: str, engine_socket: str,
                                        sdk_digest: tuple[str, int]) -> None:
    """Closed while the engine still prepares the export: the thread ends once the engine's
    first bytes arrive (it is blocked in recv until then), and the engine still works."""
    before = save_threads()
    stream = savestream.save_unix(engine_socket, rootfs_image, read_ahead=2)
    ours = save_threads() - before
    assert len(ours) == 1
    stream.close()
    wait_ended(ours, 60)
    assert digest(savestream.save_unix(engine_socket, rootfs_image)) == sdk_digest
