"""Squash targets against docker-squash (PyPI) on the same images in the same run; layerkit
reads the engine's overlay2 layer directories here (local engine, as root).

1. A ~400 MB image of 8 layers (base + 7 with deletions and a copy-up) squashed from its base,
   verification on: wall time ≤ 0.5 x docker-squash, peak memory no higher, result no larger.
2. 30,000 small files rewritten in a second layer: ≤ 0.2 x docker-squash's wall time.
3. 100,000 files rewritten likewise: under 60 s (layerkit only).

Both tools run as separate processes; peak memory is each process's maximum RSS. The engine's
own `docker save` of the source is shown as the floor of any squasher that reads the image.
`quick` shrinks every input about tenfold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from layerkit.build.build import context_tar
from layerkit.build.dockerfile import Generated
from layerkit.engine.client import DockerClient, connect
from layerkit.engine.images import inspect_image

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE = "layerkit/base:latest"
LABELS = {"org.layerkit.test": "1", "org.layerkit.bench": "squash"}
MB = 1_000_000
PHASES: dict[str, dict[str, float]] = {}  # layerkit's own phase times, by source image


class Measured(NamedTuple):  # not a dataclass: bench/run.py loads modules outside sys.modules
    seconds: float
    peak_rss: int        # bytes
    size: int            # size of the result image in the engine


def _build(client: DockerClient, text: str, tag: str) -> None:
    for chunk in client.api.build(fileobj=context_tar(Generated(text, ())), custom_context=True,
                                  tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                                  labels=LABELS):
        if "error" in chunk:
            raise RuntimeError(chunk["error"])


def _big_image(mb: int, base: str) -> str:
    """Seven layers over the base; one file deleted later, one rewritten (a copy-up)."""
    steps = [f"head -c {mb}M /dev/urandom > /a1 && mkdir /d && "
             "for i in $(seq 1 200); do head -c 20k /dev/urandom > /d/f$i; done",
             f"head -c {mb}M /dev/urandom > /a2",
             f"head -c {mb}M /dev/urandom > /a3 && rm /a1",
             f"head -c {mb}M /dev/urandom > /a4 && rm -rf /d",
             f"head -c {mb}M /dev/urandom > /a5 && echo x >> /a2",
             f"head -c {mb}M /dev/urandom > /a6",
             f"head -c {mb}M /dev/urandom > /a7"]
    return f"FROM {base}\n" + "".join(f"RUN {s}\n" for s in steps) + 'CMD ["ls", "/"]\n'


def _many_files(n: int, base: str) -> str:
    write = ("awk 'BEGIN{{for(i=1;i<={n};i++){{f=\"/many/f\" i; print \"{v}\" i > f; "
             "close(f)}}}}'")
    return (f"FROM {base}\nRUN mkdir /many && {write.format(n=n, v='one')}\n"
            f"RUN {write.format(n=n, v='two')}\nCMD [\"ls\", \"/many\"]\n")


def _measure(argv: list[str], client: DockerClient, tag: str) -> Measured:
    """Run `argv` in a child that reports its own child's peak RSS (one child each)."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss, r.returncode); print(r.stdout)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                          check=True)
    first, _, rest = done.stdout.partition("\n")
    seconds, rss_kb, code = first.split()
    if rest.lstrip().startswith("{"):
        PHASES[argv[2]] = json.loads(rest)["seconds"]  # layerkit squash SRC ...
    if code != "0":
        raise RuntimeError(f"{argv[0]} failed ({code}): {done.stderr[-500:]}")
    size = int(inspect_image(client, tag)["Size"])
    print(f"bench squash: {Path(argv[0]).name}: {float(seconds):.1f} s, {int(rss_kb) // 1024} MB "
          f"RSS, {size / MB:.1f} MB", file=sys.stderr, flush=True)
    return Measured(float(seconds), int(rss_kb) * 1024, size)


def _layerkit(client: DockerClient, src: str, tag: str, base: str) -> Measured:
    return _measure([str(BIN / "layerkit"), "squash", src, "-t", tag, "--from", base,
                     "--format", "json"], client, tag)


def _docker_squash(client: DockerClient, src: str, tag: str, base: str) -> Measured:
    return _measure([str(BIN / "docker-squash"), "-f", base, "-t", tag, src], client, tag)


def _save_floor(src: str) -> float:
    started = time.perf_counter()
    with subprocess.Popen(["docker", "save", src], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while proc.stdout.read(1 << 20):
            pass
    return time.perf_counter() - started


def _phases(src: str) -> str:
    p = PHASES.get(src, {})
    return ("layerkit's phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in p.items())
            + " (read walks the layer directories and hashes the range, merge writes the new "
            "layer from them, load is the engine's `docker load` of the new layer; verify runs "
            "during the load)")


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def _row(what: str, ours: Measured, peer: Measured | None, target: str, ok: bool) -> str:
    theirs = (f"{peer.seconds:.1f} s, {peer.peak_rss / MB:.0f} MB RSS, {peer.size / MB:.1f} MB"
              if peer else "—")
    return (f"| {what} | {ours.seconds:.1f} s, {ours.peak_rss / MB:.0f} MB RSS, "
            f"{ours.size / MB:.1f} MB | {theirs} | {target} | {_verdict(ok)} |")


def run(quick: bool) -> str:
    client = connect()
    run_id = uuid.uuid4().hex[:6]
    made: list[str] = []
    lines = ["| case | layerkit squash (time, peak RSS, result size) | docker-squash 1.2 | "
             "target | |", "|---|---|---|---|---|"]
    notes = []
    base = inspect_image(client, BASE)["Id"]  # pinned: the base may be rebuilt meanwhile
    try:
        big = f"layerkit-bench/squash-big-{run_id}:src"
        made.append(big)
        _build(client, _big_image(4 if quick else 33, base), big)
        floor = _save_floor(big)
        ours = _layerkit(client, big, made_tag(made, "big-lk", run_id), base)
        peer = _docker_squash(client, big, made_tag(made, "big-ds", run_id), base)
        size = int(inspect_image(client, big)["Size"])
        ok = (ours.seconds <= 0.5 * peer.seconds and ours.peak_rss <= peer.peak_rss
              and ours.size <= peer.size)
        lines.append(_row(f"{size / MB:.0f} MB image, 7 layers over the base, from base, "
                          "verified", ours, peer, "≤ 0.5× time, RSS ≤, size ≤", ok))
        notes.append(f"`docker save` of the {size / MB:.0f} MB source alone took {floor:.1f} s "
                     f"(the floor for reading it); layerkit took {ours.seconds / floor:.1f}× "
                     f"that, docker-squash {peer.seconds / floor:.1f}×.")
        notes.append(_phases(big))
        n = 3_000 if quick else 30_000
        many = f"layerkit-bench/squash-many-{run_id}:src"
        made.append(many)
        _build(client, _many_files(n, base), many)
        ours = _layerkit(client, many, made_tag(made, "many-lk", run_id), base)
        peer = _docker_squash(client, many, made_tag(made, "many-ds", run_id), base)
        lines.append(_row(f"{n:,} small files rewritten in a second layer", ours, peer,
                          "≤ 0.2× time", ours.seconds <= 0.2 * peer.seconds))
        notes.append(f"{n:,} files: `docker save` alone {_save_floor(many):.1f} s; "
                     + _phases(many))
        n = 10_000 if quick else 100_000
        huge = f"layerkit-bench/squash-huge-{run_id}:src"
        made.append(huge)
        _build(client, _many_files(n, base), huge)
        ours = _layerkit(client, huge, made_tag(made, "huge-lk", run_id), base)
        lines.append(_row(f"{n:,} small files rewritten in a second layer", ours, None,
                          "< 60 s", ours.seconds < 60))
        notes.append(f"{n:,} files: `docker save` alone {_save_floor(huge):.1f} s; "
                     + _phases(huge))
    finally:
        for ref in reversed(made):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def made_tag(made: list[str], kind: str, run_id: str) -> str:
    tag = f"layerkit-bench/squash-{kind}-{run_id}:out"
    made.append(tag)
    return tag
