"""The classic builder's progress stream, read: steps, cache hits, the images each step
committed, the step containers, and a plain-text log tail (no terminal colour codes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from layerkit.engine.images import BuildChunk
from layerkit.errors import BuildError

LOG_TAIL = 12
# terminal control sequences that programs in a RUN step print (apt's red "E:", progress bars)
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_SHORT_ID = re.compile(r"^---> ([0-9a-f]{12})$")

EventKind = Literal["base", "start", "step", "log", "done"]


@dataclass(frozen=True)
class BuildEvent:
    image: str
    kind: EventKind
    step: int = 0
    total: int = 0
    text: str = ""


OnEvent = Callable[[BuildEvent], None]


@dataclass
class StreamState:
    step: int = 0
    total: int = 0
    instruction: str = ""
    cached: int = 0
    image_id: str = ""
    tail: list[str] = field(default_factory=list)
    containers: set[str] = field(default_factory=set)  # short IDs from "---> Running in <id>"
    committed: list[str] = field(default_factory=list)  # short IDs of images steps made anew
    stages: list[str] = field(default_factory=list)  # short ID of each build stage's result
    last_id: str = ""
    step_cached: bool = False


def plain(line: str) -> str:
    """`line` without terminal colour and cursor codes."""
    return _ANSI.sub("", line)


def consume(name: str, chunk: BuildChunk, state: StreamState, on_event: OnEvent) -> None:
    """Fold one chunk into `state`, reporting steps and log lines; a build error raises
    BuildError with the failing step and the tail of its log."""
    if chunk.error:
        raise BuildError(name, _failure(chunk, state), step=state.instruction or None,
                         log_tail=tuple(state.tail))
    if chunk.image_id:
        state.image_id = chunk.image_id
    for raw in chunk.text.splitlines():
        line = plain(raw).rstrip()
        if not line.strip():
            continue
        _line(name, line, state, on_event)


def _failure(chunk: BuildChunk, state: StreamState) -> str:
    # A failed RUN reports its whole command ("The command '/bin/sh -c ...' returned a
    # non-zero code: 100"); the hint already names the step, so say it once.
    if chunk.code is not None and state.step:
        return f"step {state.step}/{state.total} exited with code {chunk.code}"
    message = plain(chunk.error).strip().splitlines()
    return message[-1] if message else "unknown error"


def _line(name: str, line: str, state: StreamState, on_event: OnEvent) -> None:
    step = parse_step(line)
    stripped = line.strip()
    if step:
        if step[2].upper().startswith("FROM ") and step[0] > 1:
            state.stages.append(state.last_id)  # the stage before this FROM is complete
        state.step, state.total, state.instruction = step
        state.tail.clear()
        state.step_cached = False
        on_event(BuildEvent(name, "step", state.step, state.total, state.instruction))
        return
    if stripped == "---> Using cache":
        state.cached += 1
        state.step_cached = True
        return
    committed = _SHORT_ID.match(stripped)
    if committed:
        state.last_id = committed.group(1)
        if not state.step_cached and state.step > 1:  # step 1 is FROM: nothing committed
            state.committed.append(committed.group(1))
    running = stripped.removeprefix("---> Running in ")
    if running != stripped:
        state.containers.add(running)
    state.tail = [*state.tail[-(LOG_TAIL - 1):], line]
    on_event(BuildEvent(name, "log", state.step, state.total, line))


def parse_step(line: str) -> tuple[int, int, str] | None:
    """'Step 3/9 : RUN apt-get ...' -> (3, 9, 'RUN apt-get ...')."""
    if not line.startswith("Step "):
        return None
    head, sep, instruction = line.partition(" : ")
    numbers = head[5:].split("/")
    if not sep or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1]), instruction.strip()
