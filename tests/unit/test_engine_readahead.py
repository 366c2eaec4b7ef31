"""The read-ahead under `engine.save_image` (`savestream.SaveStream`): order, errors, early stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from layerkit.savestream import SaveStream


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
