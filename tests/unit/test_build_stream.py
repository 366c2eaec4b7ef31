"""Reading the engine's build stream (classic builder JSON lines), no engine needed."""

from __future__ import annotations

import pytest

from layerkit.build.stream import BuildEvent
from layerkit.build.stream import StreamState as _StreamState
from layerkit.build.stream import consume as _consume
from layerkit.build.stream import parse_step as _parse_step
from layerkit.engine.images import parse_build_chunk
from layerkit.errors import BuildError

STREAM = [
    {"stream": "Step 1/3 : FROM layerkit/base:1\n"},
    {"stream": " ---> 3f2a1b0c9d8e\n"},
    {"stream": "Step 2/3 : RUN apt-get update\n"},
    {"stream": " ---> Running in 0123456789ab\n"},
    {"stream": "Get:1 http://deb.debian.org bookworm InRelease\n"},
    {"stream": "Step 3/3 : COPY rarely-root/ /\n"},
    {"stream": " ---> Using cache\n"},
    {"aux": {"ID": "sha256:feed"}},
]


def test_steps_cache_image_and_build_containers() -> None:
    state, events = _StreamState(), []
    for chunk in STREAM:
        _consume("img", parse_build_chunk(chunk), state, events.append)
    assert (state.step, state.total, state.instruction) == (3, 3, "COPY rarely-root/ /")
    assert state.cached == 1
    assert state.image_id == "sha256:feed"
    assert state.containers == {"0123456789ab"}
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3]
    log = "Get:1 http://deb.debian.org bookworm InRelease"
    assert BuildEvent("img", "log", 2, 3, log) in events


def test_error_carries_the_step_and_the_log_tail() -> None:
    state = _StreamState()
    for chunk in STREAM[:5]:
        _consume("img", parse_build_chunk(chunk), state, lambda _: None)
    with pytest.raises(BuildError) as info:
        _consume("img", parse_build_chunk({
            "error": "returned a non-zero code: 100",
            "errorDetail": {"message": "returned a non-zero code: 100"}}), state, lambda _: None)
    assert info.value.step == "RUN apt-get update"
    assert info.value.log_tail[-1] == "Get:1 http://deb.debian.org bookworm InRelease"
    assert info.value.exit_code == 1


@pytest.mark.parametrize(("line", "parsed"), [
    ("Step 3/9 : RUN apt-get x", (3, 9, "RUN apt-get x")),
    ("Step x/9 : RUN", None),
    ("Stepping on", None),
])
def test_parse_step(line: str, parsed: tuple[int, int, str] | None) -> None:
    assert _parse_step(line) == parsed
