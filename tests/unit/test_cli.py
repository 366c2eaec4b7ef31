"""CLI behaviour that needs no engine: errors are one line with the right exit code."""

from __future__ import annotations

import ast
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerkit import __version__
from layerkit.cli.app import COMMAND_MODULES, app
from tests.conftest import ROOT
from tests.imagetar import Image, file, layer, legacy_archive, oci_archive
from tests.unit.test_specs import write_spec

runner = CliRunner(env={"COLUMNS": "120", "TERM": "dumb"})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"layerkit {__version__}"
    for flag in ("-h", "--help"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0
        assert "build" in result.stdout
        assert "doctor" in result.stdout


def test_bad_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    write_spec(tmp_path / "images", 'parent = "x"\nbogus = 1\n', name="bad")
    result = runner.invoke(app, ["build", "--images", str(tmp_path / "images")])
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "image.toml:2: bogus: unknown key" in lines[0]


def test_print_shows_generated_dockerfile() -> None:
    result = runner.invoke(app, ["build", "--images", str(ROOT / "images"), "--print", "webapp"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1] == f"FROM layerkit/base:{__version__}"


def test_unknown_image_name_exit_2() -> None:
    result = runner.invoke(app, ["build", "--images", str(ROOT / "images"), "nope"])
    assert result.exit_code == 2
    assert "no image spec named 'nope'" in result.stderr


@pytest.mark.parametrize("host", ["tcp://127.0.0.1:9", "unix:///nonexistent/docker.sock"])
def test_unreachable_engine_is_one_line_exit_1(host: str) -> None:
    env = {**os.environ, "DOCKER_HOST": host}
    proc = subprocess.run([sys.executable, "-m", "layerkit", "build"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert len(lines) <= 2  # the error and a hint
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")


def test_base_option_and_env_with_sources_under_verbose() -> None:
    images = str(ROOT / "images")
    result = runner.invoke(app, ["-v", "build", "--images", images, "--print", "base",
                                 "--base", "debian:trixie-slim"])
    assert result.exit_code == 0, result.stderr
    assert "FROM debian:trixie-slim" in result.stdout
    assert "setting base = debian:trixie-slim (from commandline)" in result.stderr
    result = runner.invoke(app, ["-v", "build", "--images", images, "--print", "webapp"],
                           env={"LAYERKIT_BASE_IMAGE": "debian:bookworm"})
    assert "FROM layerkit/base:" in result.stdout  # only specs that bootstrap their parent change
    assert "setting base = debian:bookworm (from environment)" in result.stderr


def test_bad_base_reference_exit_2() -> None:
    result = runner.invoke(app, ["build", "--images", str(ROOT / "images"), "--base", "Bad!"])
    assert result.exit_code == 2
    assert "not an image reference" in result.stderr


@pytest.mark.parametrize("value", ["0", "604801"])
def test_up_refuses_a_forget_time_out_of_range_before_asking_the_engine(value: str) -> None:
    result = runner.invoke(app, ["up", "--forget-after", value],
                           env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        f"error: --forget-after {value} must be 1 to 604800 seconds"]


def test_command_families_share_types_through_common_only() -> None:
    """A command module that imported another (squash the analyze module, say) would load and
    register that family too and tie the two together; what they share lives in cli.common."""
    for module in COMMAND_MODULES:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [node.module for node in tree.body
                    if isinstance(node, ast.ImportFrom) and node.module]
        others = [name for name in imported
                  if name.startswith("layerkit.cli") and name != "layerkit.cli.common"]
        assert others == [], f"{module.__name__} imports {others}"



@contextlib.contextmanager
def _counting_port() -> Iterator[tuple[int, list[str]]]:
    """A tcp port on 127.0.0.1 that closes every connection at once and notes it: a client
    that tried fails fast instead of waiting for an answer."""
    seen: list[str] = []
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.05)

        def serve() -> None:
            while not done.is_set():
                try:
                    conn, peer = server.accept()
                except TimeoutError:
                    continue
                seen.append(f"{peer[0]}:{peer[1]}")
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1], seen
        finally:
            done.set()
            thread.join(5)


@pytest.mark.parametrize("args", [
    ["analyze", "--archive", "{a}", "--no-report"],
    ["analyze", "--archive", "{o}", "--no-report", "--source", "save"],
    ["diff", "{a}", "{o}"],
    ["squash", "--archive", "{a}", "--all", "--no-load", "-t", "x:flat", "--archive-out", "{out}"],
])
def test_saved_archives_need_no_engine(tmp_path: Path, args: list[str]) -> None:
    """Commands on saved tars never connect: DOCKER_HOST names a port that notes connections
    (a refused port would hide an attempt whose failure is swallowed)."""
    layers = [layer(file("etc/a", b"one")), layer(file("etc/b", b"two"))]
    (tmp_path / "a.tar").write_bytes(legacy_archive(Image(layers, tag="app:1")))
    (tmp_path / "o.tar").write_bytes(oci_archive(Image(layers[:1], tag="app:2")))
    paths = {"a": tmp_path / "a.tar", "o": tmp_path / "o.tar", "out": tmp_path / "out.tar"}
    with _counting_port() as (port, seen):
        env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
        proc = subprocess.run([sys.executable, "-m", "layerkit",
                               *(arg.format(**paths) for arg in args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert seen == []
    assert proc.returncode == 0, proc.stderr
