"""`layerkit.entry`: which command lines start a save before typer is imported, and the table
of analyze's options that take a value, checked against the command typer builds."""

from __future__ import annotations

import pytest
import typer.main

from layerkit import entry, savestream
from layerkit.cli import app


def _analyze_options() -> tuple[set[str], set[str]]:
    command = typer.main.get_command(app)  # a click Group (typer vendors click: no import here)
    analyze = command.commands["analyze"]  # type: ignore[attr-defined]
    with_value: set[str] = set()
    flags: set[str] = set()
    for param in analyze.params:
        if param.param_type_name == "option":
            (flags if param.is_flag else with_value).update(param.opts + param.secondary_opts)
    return with_value, flags


def test_the_value_table_is_exactly_analyzes_options_that_take_a_value() -> None:
    with_value, flags = _analyze_options()
    assert with_value == entry.ANALYZE_VALUE_OPTIONS
    assert flags == {"--no-report"}  # the one flag early_images lets through


@pytest.mark.parametrize(("argv", "images"), [
    (["analyze", "a:1"], ["a:1"]),
    (["analyze", "a:1", "b"], ["a:1", "b"]),
    (["analyze", "--format", "json", "a:1"], ["a:1"]),
    (["analyze", "--format=json", "--top", "5", "a:1"], ["a:1"]),
    (["analyze", "a:1", "--no-report", "--dive-ci", "x", "--out", "o"], ["a:1"]),
    (["analyze", "--", "-odd"], ["-odd"]),
    (["analyze", "--archive", "x.tar"], []),
    (["analyze", "--archive=x.tar", "a:1"], []),
    (["analyze", "a:1", "--help"], []),
    (["analyze", "-h"], []),
    (["analyze", "--unknown", "a:1"], []),
    (["analyze", "a:1", "--top"], []),
    (["-v", "analyze", "a:1"], []),
    (["squash", "a:1"], []),
    ([], []),
])
def test_early_images(argv: list[str], images: list[str]) -> None:
    assert entry.early_images(argv) == images


class FakeStream:
    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_start_asks_for_the_first_image_only_and_take_hands_it_over_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[FakeStream] = []

    def fake_save(path: str, ref: str) -> FakeStream:
        assert path == "/run/x.sock"
        asked.append(FakeStream(ref))
        return asked[-1]

    monkeypatch.setattr(savestream, "save_unix", fake_save)
    entry.start(["analyze", "a:1", "b:2"], {"DOCKER_HOST": "unix:///run/x.sock"})
    assert [s.ref for s in asked] == ["a:1"]
    assert entry.take("a:1") is asked[0]
    assert entry.take("a:1") is None
    assert not asked[0].closed


def test_an_early_stream_the_command_does_not_want_is_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[FakeStream] = []
    monkeypatch.setattr(savestream, "save_unix",
                        lambda path, ref: asked.append(FakeStream(ref)) or asked[-1])
    entry.start(["analyze", "a:1"], {})
    assert entry.take("something-else") is None
    assert asked[0].closed


def test_no_early_save_for_a_tcp_engine_or_a_failing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: str, ref: str) -> None:
        raise ConnectionRefusedError(path)

    entry.start(["analyze", "a:1"], {"DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert entry.take("a:1") is None
    monkeypatch.setattr(savestream, "save_unix", fail)
    entry.start(["analyze", "a:1"], {})  # the command asks again and reports it
    assert entry.take("a:1") is None
