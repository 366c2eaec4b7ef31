"""`layerkit doctor`: what this machine has for layerkit, and `--fix` to set it up on Debian.

Checks go through `engine.py`; the fixes are host set-up (apt, starting dockerd) that only make
sense as root on Debian, and say what to do elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from layerkit.build import bootstrap
from layerkit.engine.client import DockerClient, connect, engine_info
from layerkit.engine.images import find_image
from layerkit.errors import EngineUnavailable, LayerkitError, UsageError
from layerkit.render import dump_json, tabulate

Status = Literal["ok", "warn", "fail"]
PACKAGES = {"dockerd": "docker.io", "mmdebstrap": "mmdebstrap"}
DOCKERD_LOG = Path("/var/log/layerkit-dockerd.log")
PIDFILE = Path("/var/run/docker.pid")
MIN_FREE = 5 * 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    fixed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


def run_checks(base_ref: str, env: Mapping[str, str]) -> DoctorReport:
    checks: list[Check] = []
    client: DockerClient | None = None
    try:
        client = connect(env, timeout=10)
    except EngineUnavailable as exc:
        checks.append(Check("engine", "fail", exc.message))
    if client is not None:
        info = engine_info(client)
        checks.append(Check("engine", "ok", f"answers at {info.host}"))
        checks.append(Check("engine version", "ok",
                            f"{info.version} (API {info.api_version})"))
        checks.append(Check("storage driver", "ok",
                            info.storage_driver + (" (containerd image store)"
                                                   if info.containerd_snapshotter else "")))
    checks.append(_base_check(client, base_ref))
    checks.append(_disk_check())
    return DoctorReport(tuple(checks), ())


def _base_check(client: DockerClient | None, ref: str) -> Check:
    suite = bootstrap.suite_of(ref)
    if client is not None and find_image(client, ref) is not None:
        return Check("base image", "ok", f"{ref} is present")
    if client is not None and suite and find_image(client, bootstrap.rootfs_ref(suite)):
        return Check("base image", "ok",
                     f"{bootstrap.rootfs_ref(suite)} (built offline) is present")
    if suite and shutil.which("mmdebstrap"):
        return Check("base image", "ok", f"{ref} will be pulled, or built offline with mmdebstrap")
    if suite:
        return Check("base image", "warn",
                     f"{ref} must be pulled; mmdebstrap (offline build) is not installed")
    return Check("base image", "warn", f"{ref} must be pulled (no offline build for it)")


def _disk_check() -> Check:
    root = Path("/var/lib/docker")
    path = root if root.exists() else Path.cwd()
    free = shutil.disk_usage(path).free
    status: Status = "ok" if free >= MIN_FREE else "warn"
    return Check("free disk", status, f"{free / 1024**3:.1f} GiB free under {path}")


def fix(env: Mapping[str, str], log: Callable[[str], None]) -> tuple[str, ...]:
    """Install what is missing and start the engine; only as root on Debian."""
    if not Path("/etc/debian_version").exists():
        raise UsageError("`doctor --fix` sets up Debian machines only",
                         hint="install Docker Engine and mmdebstrap with your OS's packages")
    if os.geteuid() != 0:
        raise UsageError("`doctor --fix` needs root to install packages and start dockerd",
                         hint="run it with sudo, or: apt-get install docker.io mmdebstrap")
    done: list[str] = []
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        log(f"installing {' '.join(missing)} from Debian's packages")
        _apt_install(missing)
        done.append(f"installed {' '.join(missing)}")
    host = env.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        log(f"DOCKER_HOST={host} names a remote engine: not starting a local one")
        return tuple(done)
    try:
        connect(env, timeout=5)
    except EngineUnavailable:
        log("starting dockerd")
        _start_dockerd()
        _wait_for_engine(env, seconds=90)
        done.append("started dockerd")
    return tuple(done)


def _apt_install(packages: list[str]) -> None:
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        proc = subprocess.run(cmd, env=apt_env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise LayerkitError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {tail}")


def _start_dockerd() -> None:
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "start", "docker"], check=False, capture_output=True)
        return
    _clear_stale_pidfile(PIDFILE)
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)


def _clear_stale_pidfile(path: Path) -> None:
    """dockerd refuses to start over a pid file whose process is gone; remove such a file."""
    try:
        pid = int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        pid = 0
    if pid > 0:
        try:
            os.kill(pid, 0)
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm == "dockerd":
                return  # alive: leave it be
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            pass
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _wait_for_engine(env: Mapping[str, str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connect(env, timeout=5)
            return
        except EngineUnavailable:
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"dockerd did not answer within {seconds:.0f} s",
                                        hint=f"see {DOCKERD_LOG}") from None
            time.sleep(0.5)


def doctor_table(report: DoctorReport) -> str:
    marks = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
    rows = [(c.name, marks[c.status], c.detail) for c in report.checks]
    return tabulate(rows, headers=("check", "status", "detail"))


def doctor_json(report: DoctorReport) -> str:
    return dump_json("doctor", {"ok": report.ok, "fixed": list(report.fixed), "checks": [
        {"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]})
