"""Offline bootstrap recipe and doctor's host logic, without an engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerkit import bootstrap, doctor
from layerkit.errors import UsageError


@pytest.mark.parametrize(("ref", "suite"), [
    ("debian:bookworm-slim", "bookworm"), ("debian:bookworm", "bookworm"),
    ("debian", "bookworm"), ("docker.io/library/debian:trixie-slim", "trixie"),
    ("ubuntu:24.04", None), ("debian:sid", None),
])
def test_suite_of(ref: str, suite: str | None) -> None:
    assert bootstrap.suite_of(ref) == suite


def test_mmdebstrap_recipe_is_slim(tmp_path: Path) -> None:
    cmd = bootstrap.mmdebstrap_command("bookworm", tmp_path / "out.tar", tmp_path / "apt.conf")
    assert cmd[0] == "mmdebstrap"
    assert "--variant=minbase" in cmd
    assert cmd[-2:] == ["bookworm", str(tmp_path / "out.tar")]
    opts = [c.split("=", 1)[1] for c in cmd if c.startswith("--dpkgopt=")]
    for excluded in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*"):
        assert f"path-exclude={excluded}" in opts
    hooks = [c for c in cmd if c.startswith("--customize-hook=")]
    assert any("apt.conf.d/docker-clean" in h for h in hooks)
    assert any("var/lib/apt/lists/*" in h and "var/cache/apt/*" in h for h in hooks)
    assert "Dir::Cache::pkgcache" in bootstrap.APT_CONF
    assert "Post-Invoke" in bootstrap.APT_CONF


def test_stale_pidfile_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(dead.pid))
    doctor._clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_pidfile_of_a_live_non_dockerd_process_is_stale(tmp_path: Path) -> None:
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(os.getpid()))  # alive, but python, not dockerd: a reused pid
    doctor._clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_garbage_pidfile_is_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("not a pid")
    doctor._clear_stale_pidfile(pidfile)
    assert not pidfile.exists()


def test_fix_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="needs root"):
        doctor.fix({}, log=lambda _: None)


def test_checks_without_engine_fail_cleanly() -> None:
    report = doctor.run_checks("debian:bookworm-slim", {"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert not report.ok
    engine = next(c for c in report.checks if c.name == "engine")
    assert engine.status == "fail"
    assert "tcp://127.0.0.1:9" in engine.detail
    assert {c.name for c in report.checks} >= {"engine", "base image", "free disk"}
