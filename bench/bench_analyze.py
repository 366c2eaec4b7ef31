"""Benchmark of `layerkit analyze`: ratios against `docker save IMAGE > /dev/null` (the I/O
floor of any tool that reads the save), against dive 0.13, and against analyze's own save path
(`--source save`), measured in the same run on images built here. Targets are stated in run().
The tools take turns in rounds; times are each one's best (the machine is shared, and its noise
only ever adds), with medians. The analyze command runs end to end, Python start-up included.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

from layerkit.build.bootstrap import ensure_base
from layerkit.engine.client import connect

BASE = "layerkit/rootfs:bookworm-slim"  # replaced in run() by what the engine really has
BIN = Path(sys.executable).parent
LAYERKIT = [str(BIN / "layerkit")]  # replaced in run() by the command as installed
DIVE = shutil.which("dive") or shutil.which("dive", path=str(BIN))


def _dockerfile_big(mb: int) -> str:
    make = f"head -c {mb * 1_000_000} /dev/urandom"
    return (f"FROM {BASE}\nRUN mkdir /big && {make} > /big/a && {make} > /big/b\n"
            f"RUN {make} > /big/c && rm /big/a\nRUN {make} > /big/b\n")


def _dockerfile_files(count: int, size: int, *, rewrite: bool = False) -> str:
    """`count` files of `size` bytes; with `rewrite`, a layer rewrites them all and another
    deletes them one by one (a whiteout per file, dive's slow case)."""
    split = f"head -c {count * size} /dev/urandom | split -b {size} -a 6 - f"
    steps = [f"RUN mkdir /s && cd /s && {split}"]
    if rewrite:
        steps += [f"RUN cd /s && {split}", "RUN find /s -type f -delete"]
    return f"FROM {BASE}\n" + "\n".join(steps) + "\n"


def _build(dockerfile: str, tag: str) -> None:
    subprocess.run(["docker", "build", "-q", "-t", tag, "--label", "org.layerkit.test=1", "-"],
                   input=dockerfile.encode(), check=True, capture_output=True)


def _size_mb(tag: str) -> float:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], check=True,
                         capture_output=True, text=True).stdout
    return int(out) / 1e6


# Runs the measured command and reports its wall time, peak RSS (KiB) and status. wait4 reports
# the peak of the child's memory before its exec too, and a child spawned from this process
# starts out as big as it is (about 30 MB, more than analyze's own peak on the large image);
# this probe, without site, is about 9 MB. posix_spawn and wait4 block: no polling interval.
_PROBE = ("import os, sys, time; t = time.perf_counter(); "
          "null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), "
          "(os.POSIX_SPAWN_DUP2, 1, 2)]; "
          "pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=null); "
          "_, status, usage = os.wait4(pid, 0); "
          "print(time.perf_counter() - t, usage.ru_maxrss, os.waitstatus_to_exitcode(status))")


def _run(argv: list[str], timeout: float = 3600) -> tuple[float, float, bool]:
    """Wall seconds, peak RSS (MB) and whether it finished; at `timeout` it is killed and the
    time is the timeout, a lower bound."""
    probe = subprocess.Popen([sys.executable, "-S", "-c", _PROBE, *argv], text=True,
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        out, _ = probe.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(probe.pid, signal.SIGKILL)  # the probe and the command it runs
        probe.communicate()
        return timeout, 0.0, False
    if probe.returncode != 0:  # the probe itself: say a command that cannot be found
        raise RuntimeError(f"{argv[0]} could not be run: {' '.join(argv)}")
    seconds, rss_kib, code = out.split()
    if code != "0":
        raise RuntimeError(f"{argv[0]} failed ({code}): {' '.join(argv)}")
    return float(seconds), int(rss_kib) / 1024, True


def _best(argv: list[str], repeat: int) -> tuple[float, float]:
    runs = [_run(argv) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def _floor(tag: str, repeat: int) -> float:
    return _best(["sh", "-c", f"docker save {tag} > /dev/null"], repeat)[0]


def _ours(tag: str, repeat: int, source: str = "auto") -> tuple[float, float]:
    """The command end to end: interpreter start-up, imports, connect, read, analyse, JSON.
    `auto` reads the engine's layer directories here (local overlay2 engine, as root)."""
    return _best([*LAYERKIT, "analyze", tag, "--format", "json", "--no-report", "--dive-ci",
                  "/nonexistent", "--source", source], repeat)


def _dive(tag: str, workdir: Path, timeout: float) -> tuple[float | None, bool]:
    if DIVE is None:
        return None, True
    seconds, _, finished = _run([DIVE, tag, "--json", str(workdir / "dive.json")], timeout)
    return seconds, finished


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def _compare(title: str, tag: str, workdir: Path, repeat: int, dive_factor: float,
             floor_factor: float | None, dive_timeout: float) -> str:
    """The floor, analyze from the layer directories, analyze from the save stream and dive
    take turns, `repeat` rounds (dive only once where it is slow), the order rotating each
    round. Each keeps its best, the verdict's figure (the machine is shared and its noise only
    ever adds); medians beside them."""
    floors: list[float] = []
    ours: list[float] = []
    saves: list[float] = []
    peaks: list[float] = []
    dives: list[float | None] = []
    finished = True

    def floor() -> None:
        floors.append(_floor(tag, 1))

    def command() -> None:
        seconds, peak = _ours(tag, 1)
        ours.append(seconds)
        peaks.append(peak)

    def save_path() -> None:
        saves.append(_ours(tag, 1, "save")[0])

    def dive() -> None:
        nonlocal finished
        if not dives or (dives[0] is not None and dives[0] < dive_timeout / 10):
            seconds, finished_now = _dive(tag, workdir, dive_timeout)
            dives.append(seconds)
            finished = finished and finished_now

    turns = [floor, command, save_path, dive]
    for round_ in range(repeat):
        for turn in turns[round_ % 4:] + turns[:round_ % 4]:
            turn()
    best_floor, best, best_save, peak = min(floors), min(ours), min(saves), max(peaks)
    timed = [d for d in dives if d is not None]
    best_dive = min(timed) if timed else None
    fast = None if best_dive is None else best_dive / best >= dive_factor
    bound = "" if finished else " (stopped at the time limit: a lower bound)"
    runs = f"best of {len(dives)}" if best_dive is not None else ""
    median_dive = f"{statistics.median(timed):.2f}" if timed else "n/a"
    lines = [f"### {title}", "", f"Image: {_size_mb(tag):.0f} MB.", "",
             "| tool | best s | median s | peak RSS |", "|---|---:|---:|---:|",
             f"| `docker save > /dev/null` (floor) | {best_floor:.2f} | "
             f"{statistics.median(floors):.2f} | |",
             f"| `layerkit analyze` (layer directories, end to end) | {best:.2f} | "
             f"{statistics.median(ours):.2f} | {peak:.0f} MB |",
             f"| `layerkit analyze --source save` | {best_save:.2f} | "
             f"{statistics.median(saves):.2f} | |",
             f"| `dive --json` ({runs}) | {'n/a' if best_dive is None else f'{best_dive:.2f}'}"
             f"{bound} | {median_dive} | |",
             "",
             f"- dive / analyze = {_ratio(best_dive, best)} (target >= {dive_factor:g}: "
             f"{_verdict(fast)})"]
    if floor_factor is not None:
        lines.append(f"- floor / analyze = {_ratio(best_floor, best)} (target >= "
                     f"{floor_factor:g}: {_verdict(best_floor / best >= floor_factor)})")
    lines.append(f"- save path / analyze = {_ratio(best_save, best)}")
    return "\n".join(lines) + "\n"


# two-sided 95% points of Student's t by degrees of freedom; between and beyond the listed
# ones the next smaller listed (a wider interval: 2.04 from 30 on, the normal's is 1.96)
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
        10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11,
        18: 2.10, 19: 2.09, 20: 2.09, 25: 2.06, 30: 2.04}


def _scaling(small: int, large: int, repeat: int, tags: dict[str | int, str],
             workdir: Path) -> str:
    """Many small files: analyze from the layer directories against the save path on the same
    image, and linearity judged on `analyze --archive` of saved files (the engine's own save
    time for many small files varies from run to run far more than our part does)."""
    rows, times, peaks, saves, direct = [], {}, {}, {}, {}
    for count in (small, large):
        path = workdir / f"{count}.tar"
        floor = _best(["docker", "save", "-o", str(path), tags[count]], 1)[0]
        direct[count], peaks[count] = _ours(tags[count], repeat)
        saves[count], save_peak = _ours(tags[count], repeat, "save")
        times[count], archive_peak = _best([*LAYERKIT, "analyze", "--archive", str(path),
                                            "--format", "json", "--no-report", "--dive-ci",
                                            "/nonexistent"], repeat)
        peaks[count] = max(peaks[count], save_peak, archive_peak)
        path.unlink()
        rows.append(f"| {count:,} | {floor:.2f} | {direct[count]:.2f} | {saves[count]:.2f} | "
                    f"{times[count]:.2f} | {peaks[count]:.0f} MB |")
    growth = times[large] / times[small]
    share = direct[large] / saves[large]
    return "\n".join([
        f"### {large:,} small files: memory and scaling", "",
        "| files | `docker save` s | analyze IMAGE s | analyze --source save s | "
        "analyze --archive s | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"- {large:,} files: analyze / analyze --source save = {share:.2f} (target <= 0.25: "
        f"{_verdict(share <= 0.25)})",
        f"- time {large:,} / time {small:,} (--archive) = {growth:.2f} (target <= 2.5: "
        f"{_verdict(growth <= 2.5)})",
        f"- peak RSS at {large:,} files = {peaks[large]:.0f} MB (target < 150 MB: "
        f"{_verdict(peaks[large] < 150)})"]) + "\n"


def _as_installed(workdir: Path) -> list[str]:
    """The `layerkit` command as a regular (not editable) install runs it, which is what users
    time: byte-compiled (an editable install under PYTHONDONTWRITEBYTECODE compiles every
    module on every start), in a venv of its own that sees the package and the dev venv's
    libraries as plain paths and has no other .pth files (setuptools' distutils shim)."""
    import layerkit  # noqa: PLC0415

    package = Path(layerkit.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)],
                   check=True, capture_output=True)
    venv = workdir / "installed"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True)
    python = venv / "bin" / "python"
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", ask], check=True, capture_output=True,
                          text=True).stdout.strip()
    libraries = sysconfig.get_path("purelib")
    Path(site, "layerkit-bench.pth").write_text(f"{package.parent}\n{libraries}\n")
    return [str(python), "-c", "import sys; from layerkit.cli.entry import main; sys.exit(main())"]


def run(quick: bool) -> str:
    global BASE, LAYERKIT  # noqa: PLW0603 - the functions above read them
    BASE = ensure_base(connect(), "debian:bookworm-slim", allow_bootstrap=True).ref
    run_id = uuid.uuid4().hex[:8]
    big_mb, rewritten, small, large = (20, 2_000, 8_000, 20_000) if quick else (
        90, 10_000, 40_000, 100_000)
    repeat = 2 if quick else 5
    tags: dict[str | int, str] = {
        "big": f"layerkit-bench/big-{run_id}:1", "rewritten": f"layerkit-bench/rw-{run_id}:1",
        small: f"layerkit-bench/f{small}-{run_id}:1", large: f"layerkit-bench/f{large}-{run_id}:1"}
    try:
        _build(_dockerfile_big(big_mb), tags["big"])
        _build(_dockerfile_files(rewritten, 1000, rewrite=True), tags["rewritten"])
        _build(_dockerfile_files(small, 100), tags[small])
        _build(_dockerfile_files(large, 100), tags[large])
        with tempfile.TemporaryDirectory() as tmp:
            LAYERKIT = _as_installed(Path(tmp))
            sections = [
                _compare("Multi-layer image (layers of random data, some deleted or "
                         "overwritten)", tags["big"], Path(tmp), 3 if quick else 9, 10.0, 10.0,
                         600),
                _compare(f"{rewritten:,} small files written, rewritten, then deleted one by one",
                         tags["rewritten"], Path(tmp), repeat, 100.0, None,
                         60 if quick else 240),
                _scaling(small, large, repeat, tags, Path(tmp))]
    finally:
        subprocess.run(["docker", "rmi", "-f", *tags.values()], capture_output=True, check=False)
    floor_target = ("analyze reads the engine's overlay2 layer directories here (local "
                    "engine, as root; `--source save` is the save stream). Targets: the "
                    "multi-layer image at least 10x faster than dive and than the floor; 10,000 "
                    "files at least 100x faster than dive; 100,000 files in at most 1/4 of the "
                    "save path's time, under 150 MB.")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join([f"dive: {DIVE or 'not installed'}; sizes: "
                      f"{'quick' if quick else 'full'}; load average at the end: {load} "
                      f"({os.cpu_count()} cores, shared).", "", floor_target, "", *sections])


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
