"""`docker save` as a stream of chunks read ahead by a thread, and its fast path on a unix
socket that needs no Docker SDK.

- `SaveStream(chunks, depth, errors=...)`: iterates `chunks` in the caller's thread (`depth`
  0) or in a thread reading `depth` chunks ahead.
- `save_unix(socket_path, ref, ..., sent=None) -> SaveStream`: GET /images/{ref}/get through
  `unixhttp`, or the reply to that request already `sent`.
- `socket_path(environ) -> str | None`: the engine's unix socket that DOCKER_HOST names (or
  the default one); None for tcp, TLS and ssh engines, which go through `engine.save_image`.
- `image_exists(socket_path, ref) -> bool`.

`layerkit analyze IMAGE` sends its request through `unixhttp` alone before anything else is
imported (`entry`), and hands it to `save_unix` here: on an engine of Docker 20-24, which writes
the whole image to a temporary directory before its first byte, start-up overlaps that work.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from layerkit.engine import unixhttp
from layerkit.errors import FIX_HINT, EngineError, EngineUnavailable, NotFound, no_such_image

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["SaveStream", "image_exists", "info_unix", "inspect_unix", "save_image", "save_unix",
           "socket_path"]

logger = logging.getLogger(__name__)

socket_path = unixhttp.socket_path


def save_unix(path: str, ref: str, *, api_version: str | None = None,
              chunk_size: int = unixhttp.PIECE, read_ahead: int = 0,
              sent: unixhttp.Request | None = None) -> SaveStream:
    """`docker save ref` from the engine at the unix socket `path`: the request is sent now,
    the reply read as the stream is iterated. By default in the caller's thread: with the
    body received straight into the caller's buffers there is too little Python left in the
    reading for a thread to overlap (it was no faster), and the socket's buffer
    already lets the engine write ahead. `sent`: that request, already sent (see `entry`)."""
    def errors() -> AbstractContextManager[None]:
        return unix_errors(f"saving image {ref}", path)

    logger.debug("saving %s through unix://%s%s", ref, path,
                 " (asked for at start-up)" if sent is not None else "")
    if sent is None:
        with errors():
            sent = unixhttp.Request(path, unixhttp.image_target(ref, "get", api_version))
    # a reading thread closes the socket itself once woken (see Request.shutdown)
    return SaveStream(sent.body(chunk_size), read_ahead, errors=errors,
                      on_close=sent.shutdown if read_ahead else sent.close)


def image_exists(path: str, ref: str) -> bool:
    """Whether the engine at `path` has `ref` (its inspect document, read and dropped)."""
    try:
        inspect_unix(path, ref)
    except NotFound:
        return False
    return True


def inspect_unix(path: str, ref: str) -> dict[str, Any]:
    """`docker image inspect ref` from the engine at the unix socket `path`; NotFound if it
    has no such image."""
    with unix_errors(f"inspecting image {ref}", path):
        return _json(path, unixhttp.image_target(ref, "json"))


def info_unix(path: str) -> dict[str, Any]:
    """`docker info` (storage driver and its status among it) from the engine at `path`."""
    with unix_errors("reading engine information", path):
        return _json(path, "/info")


def _json(path: str, target: str) -> dict[str, Any]:
    body = b"".join(unixhttp.get(path, target, wait=None))
    try:
        document = json.loads(body)
    except ValueError:
        raise unixhttp.ProtocolError(f"{target}: the reply is not JSON") from None
    if not isinstance(document, dict):
        raise unixhttp.ProtocolError(f"{target}: the reply is not a JSON object")
    return document


@contextlib.contextmanager
def unix_errors(what: str, path: str) -> Iterator[None]:
    """`unixhttp`'s and the socket's exceptions as LayerkitErrors, as `engine.engine_errors`
    does for the SDK's."""
    try:
        yield
    except unixhttp.HTTPStatusError as exc:
        if exc.status == 404:
            raise NotFound(no_such_image(what, exc.message)) from None
        raise EngineError(f"{what}: engine said {exc.status}: {exc.message}") from None
    except unixhttp.ProtocolError as exc:
        raise EngineError(f"{what}: the engine's reply broke off ({exc})") from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise EngineError(f"{what}: the engine's reply broke off ({type(exc).__name__})") from None
    except (FileNotFoundError, ConnectionError, PermissionError) as exc:
        raise EngineUnavailable(
            f"no Docker engine answers at unix://{path} ({type(exc).__name__})",
            hint=FIX_HINT) from None


_DONE = object()


class SaveStream(Iterator[bytes]):
    """Chunks of a save, read in the caller's thread (`depth` 0) or up to `depth` chunks ahead
    by a thread. Exceptions from `chunks` pass through `errors` (a context manager that turns
    them into LayerkitErrors). `close()`, leaving a `with` block, or dropping the stream ends
    the reading: a reader that stops at the tar's end closes it then, instead of waiting for
    the connection's end (see unixhttp.PIECE_WAIT)."""

    def __init__(self, chunks: Iterator[bytes], depth: int, *,
                 errors: Callable[[], AbstractContextManager[None]] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self._chunks: Iterator[bytes] | None = chunks
        self._errors = errors or contextlib.nullcontext
        self._on_close = on_close
        self._done = False
        self._buffer: queue.Queue[object] | None = None
        self._stop = threading.Event()
        if depth > 0:
            self._buffer = queue.Queue(maxsize=depth)
            # the thread holds the chunks, the queue and the event, never `self`
            threading.Thread(target=_pump, args=(chunks, self._buffer, self._stop),
                             name="save-read-ahead", daemon=True).start()
            self._chunks = None

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        try:
            item = self._next()
        except StopIteration:
            self.close()
            raise
        except Exception as exc:
            self.close()
            with self._errors():  # the transport's exceptions become LayerkitErrors here
                raise exc from None
            raise  # not reached: errors() raises a LayerkitError or lets `exc` through
        return item

    def _next(self) -> bytes:
        if self._buffer is None:
            assert self._chunks is not None
            return next(self._chunks)
        item = self._buffer.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return cast(bytes, item)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._stop.set()  # a reading thread ends at its next chunk and closes the connection
        if self._chunks is not None and hasattr(self._chunks, "close"):
            self._chunks.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> SaveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _pump(chunks: Iterator[bytes], buffer: queue.Queue[object], stop: threading.Event) -> None:
    def offer(item: object) -> bool:
        """Queue `item` unless the consumer has gone; never blocks for good."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in chunks:
            if not offer(chunk):
                return
        offer(_DONE)
    except BaseException as exc:  # handed to the consumer and raised there
        if not stop.is_set():
            offer(exc)


def save_image(client: DockerClient, ref: str, *, chunk_size: int = 1 << 20,
               read_ahead: int = 8) -> SaveStream:
    """The `docker save` stream of `ref`, as it arrives (legacy or OCI layout, per engine).

    A thread sends the request at once and keeps up to `read_ahead` chunks of up to
    `chunk_size` in flight: the engine starts (an engine of Docker 20-24 writes the whole image
    to a temporary directory before its first byte) while the caller gets ready, and keeps
    writing while the caller parses and hashes. Errors, a missing image among them, are raised
    by the first `next()`. Dropping or closing the stream stops the thread.

    On a unix socket this is `savestream.save_unix` (no SDK on the way: see `unixhttp`).
    """
    from layerkit.engine.client import engine_errors  # noqa: PLC0415 - the SDK, off unix only

    api = client.api
    socket_path = getattr(api.get_adapter(api.base_url), "socket_path", None)
    if isinstance(socket_path, str):
        return save_unix(socket_path, ref, api_version=api.api_version,
                                    chunk_size=chunk_size, read_ahead=read_ahead)
    target = f"/v{api.api_version}/images/{quote(ref, safe='/:')}/get"
    logger.debug("saving %s through the Docker SDK at %s", ref, api.base_url)
    return SaveStream(_sdk_chunks(client, target, chunk_size), read_ahead,
                      errors=functools.partial(engine_errors, f"saving image {ref}"))


def _sdk_chunks(client: DockerClient, target: str, size: int) -> Iterator[bytes]:
    """The same through the SDK's session, for tcp, TLS and ssh engines."""
    import docker.errors  # noqa: PLC0415 - the SDK, slow to import, only where it is used
    import requests.exceptions  # noqa: PLC0415

    api = client.api
    # connect timeout as configured; no read timeout, as the SDK does for its streams
    with api.get(api.base_url + target, stream=True, timeout=(api.timeout, None)) as response:
        try:
            response.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            raise docker.errors.create_api_error_from_http_exception(exc) from None
        read = _piece_reader(response.raw)
        while chunk := read(size):
            yield chunk


def _piece_reader(raw: Any) -> Callable[[int], bytes]:
    """`read1` of a urllib3 response: what one read of the connection gives (the engine's
    chunks, 16-32 KiB), not `read(size)`, which waits to fill `size`: its last piece waited for
    the connection's end, which an engine of Docker 20-24 sends only after deleting its
    temporary copy of the image, while the reader stops at the tar's end (see
    unixhttp.PIECE_WAIT), at the cost of more CPU per byte. `read` where read1 can't be had:
    urllib3 1.x, or a connection whose file has no read1 (paramiko's channel file, for ssh://
    engines), under http.client's read1."""
    connection_file = getattr(getattr(raw, "_fp", None), "fp", None)
    if hasattr(raw, "read1") and hasattr(connection_file, "read1"):
        return cast(Callable[[int], bytes], raw.read1)
    return cast(Callable[[int], bytes], raw.read)
