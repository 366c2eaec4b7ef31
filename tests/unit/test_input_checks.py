"""Inputs are checked early and consistently: before any analysis, read or engine call, with
one line that says what to do; lint refuses what is not a Dockerfile and knows stages and
cache mounts; junk and gate lines read as people read them."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from layerkit.analyze.analyze import analyze
from layerkit.analyze.lint import lint_text
from layerkit.cli.app import app
from layerkit.image.archive import read_archive
from tests.imagetar import Image, directory, file, layer, legacy_archive
from tests.unit.test_analyze import HISTORY, LAYERS


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "120"}, terminal_width=200)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "image.tar"
    path.write_bytes(legacy_archive(Image(LAYERS, HISTORY)))
    return path


@pytest.mark.parametrize(("args", "fragment"), [
    (["--min-efficiency", "95"], "from 0 to 1"),
    (["--top", "-1"], "-1"),
    (["--max-reclaimable", "150%"], "from 0 to 100"),
    (["--max-reclaimable", "0.5"], "write 0.5%"),
    (["--max-junk", ".05"], "without a unit is bytes"),
])
def test_analyze_refuses_bad_limits(saved: Path, args: list[str], fragment: str) -> None:
    result = _run("analyze", "--archive", str(saved), "--no-report", *args)
    assert result.exit_code == 2
    assert fragment in result.stderr


def test_min_efficiency_95_hints_at_the_fraction(saved: Path) -> None:
    result = _run("analyze", "--archive", str(saved), "--no-report", "--min-efficiency", "95")
    assert "hint: for 95% write 0.95" in result.stderr


def test_bad_out_is_refused_before_the_analysis(saved: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = _run("analyze", "--archive", str(saved), "--out", str(blocker / "reports"))
    assert result.exit_code == 2
    assert "is not a directory" in result.stderr
    assert result.stdout == ""  # nothing was analysed


def test_gzipped_save_says_gunzip(saved: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "image.tar.gz"
    zipped.write_bytes(gzip.compress(saved.read_bytes()))
    for command in (["analyze", "--no-report"], ["squash", "--all", "-t", "x:1", "--no-load"]):
        result = _run(*command, "--archive", str(zipped))
        assert result.exit_code == 2
        assert "gzip-compressed" in result.stderr
        assert "hint: gunzip it" in result.stderr


def test_directory_archive_says_what_to_pass(tmp_path: Path) -> None:
    result = _run("analyze", "--archive", str(tmp_path), "--no-report")
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert "docker save -o" in result.stderr


@pytest.mark.parametrize("tag", ["Bad Tag!", "UPPER:1", "name:", "a//b"])
def test_squash_bad_tag_refused_before_reading(saved: Path, tag: str) -> None:
    result = _run("squash", "--archive", str(saved), "--all", "-t", tag, "--no-load")
    assert result.exit_code == 2
    assert "not a valid image name[:tag]" in result.stderr
    assert "squash: read" not in result.stderr


def test_zero_byte_junk_rows_are_dropped() -> None:
    layers = [layer(directory("var"), directory("var/log"), file("var/log/wtmp"),
                    file("var/log/lastlog"), directory("etc"), file("etc/x", 10))]
    image = read_archive(_bytes(legacy_archive(Image(layers, [{"created_by": "ADD x"}])))
                         ).images[0]
    assert analyze([image]).images[0].junk == ()


def test_the_interpreters_own_bytecode_is_not_junk() -> None:
    layers = [layer(*(directory(d) for d in ("usr", "usr/lib", "usr/lib/python3.11",
                                             "usr/lib/python3.11/__pycache__", "app",
                                             "app/__pycache__")),
                    file("usr/lib/python3.11/__pycache__/os.cpython-311.pyc", 5000),
                    file("app/__pycache__/main.cpython-311.pyc", 300))]
    image = read_archive(_bytes(legacy_archive(Image(layers, [{"created_by": "ADD x"}])))
                         ).images[0]
    (junk,) = analyze([image]).images[0].junk
    assert (junk.category, junk.bytes) == ("pycache", 300)


def test_gate_lines_show_readable_sizes(saved: Path) -> None:
    result = _run("analyze", "--archive", str(saved), "--no-report", "--max-junk", "1kB",
                  "--dive-ci", "/nonexistent")
    line = next(x for x in result.stderr.splitlines() if x.startswith("gate:"))
    assert "junk 4.3 kB (4,300 bytes) is over 1.0 kB" in line


def test_table_column_names_match_the_json_keys(saved: Path) -> None:
    table = _run("analyze", "--archive", str(saved), "--no-report").stdout
    header = next(x for x in table.splitlines() if x.lstrip().startswith("#"))
    assert "reclaimable" in header
    assert "hidden later" not in header


@pytest.mark.parametrize("text", ["", "root:x:0:0:root:/root:/bin/bash\n",
                                  "# only a comment\n", "RUN echo\nFROM a\n"])
def test_lint_refuses_what_is_not_a_dockerfile(tmp_path: Path, text: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    result = _run("lint", str(path))
    assert result.exit_code == 2
    assert "not a Dockerfile" in result.stderr


def test_lint_ignores_size_rules_in_a_discarded_builder_stage() -> None:
    text = ("FROM debian AS build\nRUN apt-get update && apt-get install -y gcc\n"
            "RUN make\nFROM debian\nCOPY --from=build /out /out\n")
    assert lint_text(text).findings == ()


def test_lint_knows_cache_mounts() -> None:
    text = ("FROM debian\nRUN --mount=type=cache,target=/var/cache/apt "
            "--mount=type=cache,target=/var/lib/apt apt-get update && "
            "apt-get install -y --no-install-recommends curl\n")
    assert lint_text(text).findings == ()
    pip = "FROM python\nRUN --mount=type=cache,target=/root/.cache/pip pip install x\n"
    assert lint_text(pip).findings == ()


def test_every_command_help_has_an_example() -> None:
    group = typer.main.get_command(app)
    for name in group.list_commands(None):  # type: ignore[attr-defined,arg-type]
        result = CliRunner().invoke(app, [name, "--help"], terminal_width=120)
        assert result.exit_code == 0, name
        assert "Example" in result.stdout, f"layerkit {name} --help has no example"


def _bytes(data: bytes) -> Any:
    return io.BytesIO(data)


def test_reports_inside_layerkits_tree_never_touch_the_committed_examples(
        saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "checkout"
    (tree / "reports").mkdir(parents=True)
    (tree / "pyproject.toml").write_text('[project]\nname = "layerkit"\n')
    monkeypatch.chdir(tree)
    result = _run("analyze", "--archive", str(saved))
    assert result.exit_code == 0, result.stderr
    assert list((tree / "reports").iterdir()) == []
    assert sorted(p.name for p in (tree / "build" / "reports").iterdir()) == [
        "analyze-test-image-latest.html", "analyze-test-image-latest.json",
        "analyze-test-image-latest.md"]
    again = _run("analyze", "--archive", str(saved))
    assert "analyze: replaced " in again.stderr
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _run("analyze", "--archive", str(saved)).exit_code == 0
    assert (elsewhere / "reports" / "analyze-test-image-latest.md").is_file()
