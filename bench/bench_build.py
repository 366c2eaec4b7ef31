"""Build targets: image sizes, source-edit rebuild, cold build, reproducible cold builds.

Sizes are compared with their budgets (base ≤ 130 MB, HAProxy adds ≤ 15 MB, web app ≤ 2 MB);
the rebuild after a web-app source edit with the time of a fully cached build as its floor;
the cold build (offline base included) with its 4-minute budget on a 2-core machine; two cold
`--reproducible` builds of copies of the three images (own names, removed in between) with the
number of image IDs that came out the same (target: 3 of 3).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

from layerkit import __version__
from layerkit.build import bootstrap
from layerkit.build.build import build_all
from layerkit.build.reproducible import epoch_of
from layerkit.build.specs import build_order, load_all
from layerkit.engine.client import DockerClient, connect
from layerkit.engine.images import remove_image

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n / 1000:.1f} kB"


def run(quick: bool) -> str:
    client = connect()
    specs = load_all(ROOT / "images", ROOT / "layerkit")
    started = time.monotonic()
    built = {b.name: b for b in build_all(client, build_order(specs), specs, version=__version__,
                                            write_dockerfiles=False)}
    cached = time.monotonic() - started
    base = built["base"].size
    rows = [
        ("base image (OS + s6 + serf + Python)", base, 130 * MB),
        ("HAProxy image adds", built["haproxy"].size - base, 15 * MB),
        ("web app image adds", built["webapp"].size - base, 2 * MB),
    ]
    lines = ["| measure | value | target | |", "|---|---:|---:|---|"]
    lines += [f"| {what} | {_size(value)} | ≤ {target / MB:.0f} MB | {_verdict(value <= target)} |"
              for what, value, target in rows]
    lines.append(f"| base under the 100 MB stretch | {base / MB:.1f} MB | < 100 MB | "
                 f"{_verdict(base < 100 * MB)} |")
    edit = _source_edit_rebuild(client)
    lines.append(f"| rebuild after a web-app source edit | {edit:.1f} s "
                 f"({edit / max(cached, 0.01):.1f}× a fully cached build of all images, "
                 f"{cached:.1f} s) | < 10 s | {_verdict(edit < 10)} |")
    if not quick:
        cold, parts = _cold_build(client)
        lines.append(f"| cold build, offline base included | {cold:.0f} s ({parts}) | < 240 s | "
                     f"{_verdict(cold < 240)} |")
        same, times = _reproducible_twice(client)
        lines.append(f"| cold `--reproducible` build twice: same image IDs | {same} of 3 "
                     f"({times[0]:.0f} s, {times[1]:.0f} s) | 3 of 3 | {_verdict(same == 3)} |")
    return "\n".join(lines) + "\n"


def _source_edit_rebuild(client: DockerClient) -> float:
    """Build a copy of the web app (own name, so no project tag moves) after a source edit."""
    with tempfile.TemporaryDirectory(prefix="lk-bench-") as tmp:
        package, images = Path(tmp) / "layerkit", Path(tmp) / "images"
        shutil.copytree(ROOT / "layerkit", package, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "images", images)
        name = f"webapp-bench-{uuid.uuid4().hex[:6]}"
        (images / "webapp").rename(images / name)
        app = package / "agent" / "webapp.py"
        app.write_text(app.read_text() + f"\n# bench edit {uuid.uuid4().hex}\n")
        edited = load_all(images, package)
        started = time.monotonic()
        (result,) = build_all(client, [edited[name]], edited, version=__version__,
                              tag_latest=False, write_dockerfiles=False)
        seconds = time.monotonic() - started
        remove_image(client, result.ref)
        return seconds


def _cold_build(client: DockerClient) -> tuple[float, str]:
    """mmdebstrap + import into a fresh tag, then every image with --no-cache on it."""
    tag = f"layerkit/bench-rootfs:{uuid.uuid4().hex[:8]}"
    version = f"bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="lk-bench-images-") as tmp:
        images = Path(tmp) / "images"
        shutil.copytree(ROOT / "images", images)
        spec = images / "base" / "image.toml"
        spec.write_text(spec.read_text().replace('parent = "debian:bookworm-slim"',
                                                 f'parent = "{tag}"'))
        started = time.monotonic()
        bootstrap.bootstrap(client, "bookworm", tag)
        rootfs = time.monotonic() - started
        specs = load_all(images, ROOT / "layerkit")
        built = build_all(client, build_order(specs), specs, version=version,
                          no_cache=True, tag_latest=False, write_dockerfiles=False)
        total = time.monotonic() - started
    for b in reversed(built):
        remove_image(client, b.ref)
    remove_image(client, tag)
    return total, f"root filesystem {rootfs:.0f} s, images {total - rootfs:.0f} s"


def _reproducible_twice(client: DockerClient) -> tuple[int, list[float]]:
    """Copies of the three images under their own names, built cold and reproducibly twice."""
    prefix = f"rb{uuid.uuid4().hex[:6]}"
    ids: list[dict[str, str]] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lk-bench-repro-") as tmp:
        images = Path(tmp) / "images"
        for name in ("base", "haproxy", "webapp"):
            shutil.copytree(ROOT / "images" / name, images / f"{prefix}-{name}")
            spec = images / f"{prefix}-{name}" / "image.toml"
            spec.write_text(spec.read_text().replace('parent = "base"',
                                                     f'parent = "{prefix}-base"'))
        specs = load_all(images, ROOT / "layerkit")
        for _ in range(2):
            started = time.monotonic()
            built = build_all(client, build_order(specs), specs, version=__version__,
                              no_cache=True, write_dockerfiles=False, epoch=epoch_of({}))
            seconds.append(time.monotonic() - started)
            ids.append({b.name: b.image_id for b in built})
            for b in reversed(built):
                for ref in (b.ref, f"layerkit/{b.name}:latest", f"{b.ref}-build"):
                    remove_image(client, ref)
            time.sleep(1)
    return sum(1 for name in ids[0] if ids[0][name] == ids[1].get(name)), seconds
