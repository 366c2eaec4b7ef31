"""`layerkit.cli.entry`: which command lines start a save before typer is imported, and the table
of analyze's options that take a value, checked against the command typer builds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from layerkit.cli import entry
from layerkit.cli.app import app
from layerkit.engine import unixhttp
from tests.imagetar import Image, file, layer, legacy_archive, whiteout

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout, not the venv's editable one


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
    (["analyze", "--source", "save", "a:1"], ["a:1"]),
    (["analyze", "a:1", "b", "--source=save"], ["a:1", "b"]),
    (["analyze", "--format", "json", "--source", "save", "a:1"], ["a:1"]),
    (["analyze", "--format=json", "--top", "5", "a:1", "--source", "save"], ["a:1"]),
    (["analyze", "a:1", "--no-report", "--dive-ci", "x", "--out", "o", "--source", "save"],
     ["a:1"]),
    (["analyze", "--source", "save", "--", "-odd"], ["-odd"]),
    (["analyze", "a:1"], []),  # auto: the layer directories may be read instead
    (["analyze", "--source", "storage", "a:1"], []),
    (["analyze", "--source", "auto", "a:1"], []),
    (["analyze", "--archive", "x.tar", "--source", "save"], []),
    (["analyze", "--archive=x.tar", "a:1", "--source", "save"], []),
    (["analyze", "a:1", "--help", "--source", "save"], []),
    (["analyze", "-h", "--source", "save"], []),
    (["analyze", "--unknown", "a:1", "--source", "save"], []),
    (["analyze", "a:1", "--source", "save", "--top"], []),
    (["-v", "analyze", "a:1", "--source", "save"], []),
    (["squash", "a:1", "--source", "save"], []),
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

    def fake_request(path: str, target: str) -> FakeStream:
        assert path == "/run/x.sock"
        asked.append(FakeStream(target))
        return asked[-1]

    monkeypatch.setattr(unixhttp, "Request", fake_request)
    entry.start(["analyze", "--source", "save", "a:1", "b:2"],
                {"DOCKER_HOST": "unix:///run/x.sock"})
    assert [s.ref for s in asked] == ["/images/a:1/get"]
    assert entry.take("a:1") is asked[0]
    assert entry.take("a:1") is None
    assert not asked[0].closed


def test_an_early_stream_the_command_does_not_want_is_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[FakeStream] = []
    monkeypatch.setattr(unixhttp, "Request",
                        lambda path, target: asked.append(FakeStream(target)) or asked[-1])
    entry.start(["analyze", "--source", "save", "a:1"], {})
    assert entry.take("something-else") is None
    assert asked[0].closed


def test_no_early_save_for_a_tcp_engine_or_a_failing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: str, target: str) -> None:
        raise ConnectionRefusedError(path)

    entry.start(["analyze", "--source", "save", "a:1"], {"DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert entry.take("a:1") is None
    monkeypatch.setattr(unixhttp, "Request", fail)
    entry.start(["analyze", "--source", "save", "a:1"], {})  # the command asks again, reports
    assert entry.take("a:1") is None


def test_the_early_request_goes_out_before_typing_re_or_json_are_imported(tmp_path: Path) -> None:
    """`start` sends its request with `_socket` alone (the socket module takes 8 ms to import),
    and site's start-up before it imports none of these either: the editable install is a
    plain path line (pyproject's package-dir), not setuptools' import-hook finder, which
    imports re, pathlib and urllib.parse first."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(10)  # a request never sent fails the test instead of hanging it
    path = str(tmp_path / "engine.sock")
    server.bind(path)
    server.listen(1)
    code = ("import sys; from layerkit.cli import entry; "
            "entry.start(['analyze', '--source', 'save', 'a:1'], "
            f"{{'DOCKER_HOST': 'unix://{path}'}}); "
            "print(bool(entry._early), *sorted(m for m in ('typing', 're', 'json', 'threading', "
            "'urllib.parse', 'pathlib', 'socket', 'enum', 'layerkit.engine.save') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONPATH": ROOT}, cwd=tmp_path)
    assert done.stdout.split() == ["True"]
    with server, server.accept()[0] as conn:
        assert conn.recv(1024).startswith(b"GET /images/a:1/get HTTP/1.0\r\n")


def _script(*argv: str) -> subprocess.CompletedProcess[str]:
    """The console script's code path (entry.main) in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", "from layerkit.cli.entry import main; main()",
                           *argv], capture_output=True, text=True, timeout=120, check=False)


def test_analyze_ends_quickly_with_its_output_and_reports_complete(tmp_path: Path) -> None:
    """analyze skips the interpreter's teardown (quick_exit): what it printed and wrote must
    all be there, and its status must be the command's."""
    names = [f"usr/share/doc/p{i:04}/changelog" for i in range(400)]  # a long JSON report
    archive = tmp_path / "image.tar"
    archive.write_bytes(legacy_archive(Image([
        layer(*(file(name, b"x" * 100) for name in names)),
        layer(*(whiteout(name) for name in names))])))
    done = _script("analyze", "--archive", str(archive), "--format", "json", "--top", "400",
                   "--out", str(tmp_path / "reports"), "--max-reclaimable", "1%",
                   "--dive-ci", "/nonexistent")
    assert done.returncode == 1, done.stderr  # the gate failed...
    assert "gate: " in done.stderr
    report = json.loads(done.stdout)  # ...after the whole report was printed
    assert len(done.stdout) > 65536
    assert len(report["images"][0]["top"]) == 400
    written = tmp_path / "reports" / "analyze-test-image-latest.json"
    assert json.loads(written.read_text()) == report
    usage = _script("analyze", "--archive", str(archive), "--format", "nope")
    assert usage.returncode == 2
    assert "nope" in usage.stderr


def test_exit_status_is_what_sys_exit_gives() -> None:
    assert [entry.exit_status(c) for c in (None, 0, 1, 2, 256 + 3)] == [0, 0, 1, 2, 3]
    assert entry.exit_status("a message") == 1
