"""Offline bootstrap recipe and doctor's host logic, without an engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerkit import doctor
from layerkit.build import bootstrap
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


def test_mmdebstrap_gets_the_epoch_and_keeps_the_environment() -> None:
    env = bootstrap.mmdebstrap_env({"PATH": "/bin", "SOURCE_DATE_EPOCH": "1"}, 1_700_000_000)
    assert env == {"PATH": "/bin", "SOURCE_DATE_EPOCH": "1700000000"}


def test_cleanup_hook_leaves_nothing_of_the_host_or_the_run(tmp_path: Path) -> None:
    """The customize hook as mmdebstrap runs it (sh -c HOOK exec ROOT), on a small tree with
    what a bootstrap leaves: logs, caches, old copies, the host's name and name server."""
    keep = {"etc/passwd": "root:x:0:0::/root:/bin/sh\n", "var/lib/dpkg/status": "Package: a\n",
            "var/log/apt/": None, "var/cache/ldconfig/": None}
    gone = ["var/log/dpkg.log", "var/log/apt/history.log", "var/lib/apt/lists/x_Packages",
            "var/cache/apt/pkgcache.bin", "var/cache/ldconfig/aux-cache",
            "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old", "tmp/x",
            "root/.cache/pip/y"]
    emptied = ["etc/machine-id", "etc/hostname", "etc/resolv.conf"]
    for path in [*keep, *gone, *emptied]:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not path.endswith("/"):
            target.write_text(keep.get(path) or f"{path} of this run\n")
    for path in emptied:
        (tmp_path / path).chmod(0o755)  # the host's modes, as seen on this machine
    subprocess.run(["sh", "-c", bootstrap.CLEANUP, "exec", str(tmp_path)], check=True)
    assert [p for p in gone if (tmp_path / p).exists()] == []
    assert {p: (tmp_path / p).read_text() for p in emptied} == dict.fromkeys(emptied, "")
    assert {(tmp_path / p).stat().st_mode & 0o777 for p in emptied[1:]} == {0o644}
    for path, text in keep.items():
        assert (tmp_path / path).exists()
        if text is not None:
            assert (tmp_path / path).read_text() == text


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


class FakeEngine:
    """Stands in for the engine in the decision logic of ensure_base (pure logic)."""

    def __init__(self, present: set[str], pullable: set[str]) -> None:
        self.present, self.pullable = set(present), pullable
        self.pulled: list[str] = []
        self.bootstrapped: list[str] = []
        self.epochs: list[int] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(bootstrap, "find_image",
                            lambda _c, ref: object() if ref in self.present else None)
        monkeypatch.setattr(bootstrap, "pull_image", self._pull)
        monkeypatch.setattr(bootstrap, "bootstrap", self._bootstrap)

    def _pull(self, _client: object, ref: str) -> object | None:
        self.pulled.append(ref)
        if ref in self.pullable:
            self.present.add(ref)
            return object()
        return None

    def _bootstrap(self, _client: object, suite: str, ref: str | None = None, *,
                   epoch: int) -> str:
        self.bootstrapped.append(suite)
        self.epochs.append(epoch)
        return bootstrap.rootfs_ref(suite)


@pytest.mark.parametrize(("present", "pullable", "expected", "pulled", "built"), [
    ({"debian:bookworm-slim"}, set(), ("debian:bookworm-slim", "present"), [], []),
    (set(), {"debian:bookworm-slim"}, ("debian:bookworm-slim", "pulled"),
     ["debian:bookworm-slim"], []),
    (set(), set(), ("layerkit/rootfs:bookworm-slim", "bootstrapped"),
     ["debian:bookworm-slim"], ["bookworm"]),
    ({"layerkit/rootfs:bookworm-slim"}, set(), ("layerkit/rootfs:bookworm-slim", "bootstrapped"),
     [], []),
])
def test_ensure_base_prefers_present_then_pull_then_offline(
        monkeypatch: pytest.MonkeyPatch, present: set[str], pullable: set[str],
        expected: tuple[str, str], pulled: list[str], built: list[str]) -> None:
    engine = FakeEngine(present, pullable)
    engine.install(monkeypatch)
    base = bootstrap.ensure_base(object(), "debian:bookworm-slim",  # type: ignore[arg-type]
                                 allow_bootstrap=True, epoch=1_234_567_890)
    assert (base.ref, base.source) == expected
    assert engine.pulled == pulled
    assert engine.bootstrapped == built
    assert engine.epochs == [1_234_567_890] * len(built)


def test_ensure_base_without_bootstrap_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(set(), set()).install(monkeypatch)
    with pytest.raises(bootstrap.BootstrapError, match="cannot be pulled"):
        bootstrap.ensure_base(object(), "ubuntu:24.04", allow_bootstrap=True)  # type: ignore[arg-type]


def test_a_bare_spec_name_from_another_directory_is_told_to_name_the_image_in_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine({"layerkit/base:latest"}, set()).install(monkeypatch)
    with pytest.raises(bootstrap.BootstrapError) as info:
        bootstrap.ensure_base(object(), "base", allow_bootstrap=False)  # type: ignore[arg-type]
    assert info.value.hint is not None
    assert 'parent = "layerkit/base:latest"' in info.value.hint
