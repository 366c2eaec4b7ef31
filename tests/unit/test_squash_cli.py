"""`layerkit squash` through the CLI, no engine: --archive in, --archive-out out, JSON schema,
one-line errors with exit 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from layerkit.cli.app import app
from tests.unit.test_squash_image import write_source

runner = CliRunner(env={"COLUMNS": "120", "TERM": "dumb", "SOURCE_DATE_EPOCH": "1700000000"})


def test_json_summary_is_versioned_with_sizes_in_bytes(tmp_path: Path) -> None:
    src, out = write_source(tmp_path), tmp_path / "out.tar"
    result = runner.invoke(app, ["squash", "--archive", str(src), "--last", "3",
                                 "--archive-out", str(out), "--no-load", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["schema"] == "layerkit/squash/v1"
    assert (body["layers_before"], body["layers_after"], body["squashed_layers"]) == (4, 2, 3)
    assert isinstance(body["bytes_before"], int)
    assert set(body["seconds"]) == {"read", "merge", "load", "verify", "total"}
    assert body["verified"] is True
    assert body["loaded"] is False
    assert out.is_file()


def test_table_summary_shows_layers_bytes_and_phases(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["squash", "--archive", str(src), "--all",
                                 "--archive-out", str(tmp_path / "o.tar"), "--no-load"])
    assert result.exit_code == 0, result.stderr
    assert "layers" in result.stdout
    for phase in ("read", "merge", "load", "verify"):
        assert phase in result.stdout


def test_nothing_to_squash_exits_2_with_one_line(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["squash", "--archive", str(src), "--last", "1",
                                 "--archive-out", str(tmp_path / "o.tar"), "--no-load"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert not (tmp_path / "o.tar").exists()


def test_range_must_be_chosen(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["squash", "--archive", str(src),
                                 "--archive-out", str(tmp_path / "o.tar"), "--no-load"])
    assert result.exit_code == 2
    assert "--from" in result.stderr


def test_unwritable_archive_out_is_one_line(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["squash", "--archive", str(src), "--all", "--no-load",
                                 "--archive-out", "/nonexistent/x.tar"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "/nonexistent/" in errors[0]
    assert "Traceback" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]


def test_unwritable_report_dir_is_one_line(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["analyze", "--archive", str(src), "--out", "/proc/nope"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: --out /proc/nope")
    assert "Traceback" not in result.stderr


def test_range_options_are_refused_before_the_engine_is_asked_or_a_phase_begins(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    for args in (["--last", "0"], ["--last", "2", "--all"], []):
        result = runner.invoke(app, ["squash", "some/image:1", "-t", "some/image:2", *args])
        assert result.exit_code == 2, result.output
        assert "squash:" not in result.stderr  # no phase line before the error
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_each_phase_is_announced_once(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = runner.invoke(app, ["squash", "--archive", str(src), "--all",
                                 "--archive-out", str(tmp_path / "o.tar"), "--no-load"])
    assert result.exit_code == 0, result.stderr
    phases = [line for line in result.stderr.splitlines() if line.startswith("squash: ")]
    assert phases == ["squash: read ...", "squash: merge ...", "squash: load ...",
                      "squash: verify ..."]
