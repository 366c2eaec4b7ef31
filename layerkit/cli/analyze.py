"""`layerkit analyze` and `layerkit lint`: where an image's bytes are, and a Dockerfile's layer
rules."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit.cli.common import OutputFormat, app, err, fails_cleanly, out
from layerkit.errors import NotFound, UsageError

if TYPE_CHECKING:
    from layerkit.analyze.gate import GateRules
    from layerkit.engine.unixhttp import Request
    from layerkit.image.archive import SavedImage


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


@app.command("analyze")
@fails_cleanly
def analyze_cmd(
    images: Annotated[list[str] | None, typer.Argument(
        help="Images to analyse (names or ids); several: also which bytes they share.")] = None,
    *,
    archive: Annotated[Path | None, typer.Option(
        "--archive", help="Analyse a saved image tar (docker save, legacy or OCI); no engine.")]
    = None,
    output: Annotated[ReportFormat, typer.Option("--format", help="Output format.")] =
    ReportFormat.table,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Directory for the report files (JSON, Markdown, HTML with a chart).")] =
    Path("reports"),
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write report files.")]
    = False,
    dockerfile: Annotated[Path | None, typer.Option(
        "--dockerfile", help="Lint this Dockerfile and attach findings to the layers.")] = None,
    top: Annotated[int, typer.Option("--top", help="How many reclaimable paths to list.")] = 20,
    min_efficiency: Annotated[float | None, typer.Option(
        "--min-efficiency", help="Fail below this dive-compatible efficiency (0..1).")] = None,
    max_reclaimable: Annotated[str | None, typer.Option(
        "--max-reclaimable", help="Fail above this many reclaimable bytes (50MB) or percent.")]
    = None,
    max_junk: Annotated[str | None, typer.Option(
        "--max-junk", help="Fail above this many junk bytes (10MB) or percent.")] = None,
    dive_ci: Annotated[Path, typer.Option(
        "--dive-ci", help="dive's CI rules file, read when it exists.")] = Path(".dive-ci"),
) -> None:
    """Where an image's bytes are: layer sizes, reclaimable bytes and why, junk, sharing."""
    rules = _gate_rules(min_efficiency, max_reclaimable, max_junk, dive_ci)
    lint_report = None
    if dockerfile is not None:
        from layerkit.analyze import lint

        lint_report = lint.lint_file(dockerfile)
    saved = _saved_images(images or [], archive)
    from layerkit.analyze import analyze, gate
    from layerkit.analyze import render as report_analyze  # while the engine writes the first image

    result = analyze.analyze(saved(), top=top, lint=lint_report)
    renderers: Mapping[ReportFormat, Callable[[analyze.AnalyzeReport], str]] = {
        ReportFormat.table: report_analyze.analyze_table,
        ReportFormat.json: report_analyze.analyze_json,
        ReportFormat.markdown: report_analyze.analyze_markdown,
        ReportFormat.html: report_analyze.analyze_html}
    render = renderers[output]
    out.print(render(result), markup=False, end="" if output in (
        ReportFormat.markdown, ReportFormat.html) else "\n")
    if not no_report:
        _write_reports(out_dir, report_analyze.report_files(result))
    failed = [line for image in result.images for line in gate.check(image, rules)]
    for line in failed:
        err.print(f"gate: {line}", markup=False)
    if failed:
        raise typer.Exit(1)


def _gate_rules(min_efficiency: float | None, max_reclaimable: str | None,
                max_junk: str | None, dive_ci: Path) -> GateRules:
    from layerkit.analyze import gate

    rules = gate.GateRules(
        min_efficiency=min_efficiency,
        max_reclaimable=gate.parse_limit(max_reclaimable) if max_reclaimable else None,
        max_junk=gate.parse_limit(max_junk) if max_junk else None)
    return gate.read_dive_ci(dive_ci, rules) if dive_ci.is_file() else rules


def _saved_images(refs: list[str], archive_path: Path | None) -> Callable[[], list[SavedImage]]:
    """Check the input and set the engine writing the first image at once; the function
    returned reads them all. The caller imports the analysis in between, while the engine
    works, instead of before asking it. On a unix socket (the usual engine) the Docker SDK is
    not even imported: see `savestream`."""
    if not refs and archive_path is None:
        raise UsageError("name at least one image, or --archive FILE")
    if archive_path is not None and not archive_path.is_file():
        raise NotFound(f"no archive at {archive_path}")
    from layerkit.cli import entry
    from layerkit.engine import save as savestream
    from layerkit.image.archive import read_archive

    early = entry.take(refs[0] if refs else "")  # sent before typer was imported
    path = savestream.socket_path(os.environ)
    if path is not None:
        def save(ref: str, sent: Request | None = None) -> savestream.SaveStream:
            return savestream.save_unix(path, ref, sent=sent)

        def exists(ref: str) -> None:
            if not savestream.image_exists(path, ref):
                raise NotFound(f"inspecting image {ref}: no such image")
    else:  # `entry` sends early only to a unix socket: `early` is None
        from layerkit.engine.client import connect
        from layerkit.engine.images import inspect_image
        from layerkit.engine.save import save_image

        client = connect(os.environ)

        def save(ref: str, sent: Request | None = None) -> savestream.SaveStream:
            return save_image(client, ref)

        def exists(ref: str) -> None:
            inspect_image(client, ref)

    streams = [save(refs[0], early)] if refs else []
    for ref in refs[1:]:
        exists(ref)  # a misspelt second image fails now, not after the first is read

    def read() -> list[SavedImage]:
        saved: list[SavedImage] = []
        if archive_path is not None:
            saved.extend(read_archive(archive_path, hash_content=True).images)
        for i in range(len(refs)):
            if i + 1 < len(refs):
                streams.append(save(refs[i + 1]))  # the engine exports it while this is read
            with streams[i] as stream:  # closed at the archive's end
                saved.append(read_archive(stream, hash_content=True).images[0])
        return saved

    return read


def _write_reports(directory: Path, files: dict[str, str]) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
    except OSError as exc:
        raise UsageError(f"--out {directory}: {exc.strerror or exc}") from None
    err.print(f"analyze: wrote {', '.join(str(directory / n) for n in files)}", markup=False)


@app.command("lint")
@fails_cleanly
def lint_cmd(
    dockerfile: Annotated[Path, typer.Argument(help="The Dockerfile to check.")] =
    Path("Dockerfile"),
    *,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Layer rules on a Dockerfile: each finding with its line, rule id and a one-line fix."""
    from layerkit.analyze import lint
    from layerkit.analyze import render as report_analyze

    result = lint.lint_file(dockerfile)
    if output is OutputFormat.json:
        out.print(report_analyze.lint_json(result), markup=False)
    else:
        out.print(report_analyze.lint_table(result), markup=False)
    if result.findings:
        raise typer.Exit(1)
