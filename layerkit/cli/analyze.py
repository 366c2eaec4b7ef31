"""`layerkit analyze` and `layerkit lint`: where an image's bytes are, and a Dockerfile's layer
rules."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit.cli.common import (
    LayerSource,
    OutputFormat,
    app,
    check_archive_path,
    err,
    examples,
    fails_cleanly,
    out,
)
from layerkit.errors import NotFound, UsageError

if TYPE_CHECKING:
    from layerkit.analyze.gate import GateRules
    from layerkit.engine.client import DockerClient
    from layerkit.engine.save import SaveStream
    from layerkit.engine.unixhttp import Request
    from layerkit.image.archive import SavedImage
    from layerkit.image.source import Requested


logger = logging.getLogger(__name__)


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


@app.command("analyze", epilog=examples(
    "layerkit analyze layerkit/webapp:latest",
    "layerkit analyze layerkit/base:latest layerkit/webapp:latest --format html > report.html",
    "layerkit analyze --archive app.tar --min-efficiency 0.95 --max-junk 20MB --no-report"))
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
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Directory for the report files (JSON, Markdown, HTML with charts), "
        "named after the images [default: reports, or build/reports inside layerkit's own "
        "source tree, whose reports/ examples only `make reports` writes].",
        show_default=False)] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write report files.")]
    = False,
    dockerfile: Annotated[Path | None, typer.Option(
        "--dockerfile", help="Lint this Dockerfile and attach findings to the layers.")] = None,
    top: Annotated[int, typer.Option("--top", min=0,
                                     help="How many reclaimable paths to list.")] = 20,
    min_efficiency: Annotated[float | None, typer.Option(
        "--min-efficiency", help="Fail below this dive-compatible efficiency (0..1, e.g. 0.95).")]
    = None,
    max_reclaimable: Annotated[str | None, typer.Option(
        "--max-reclaimable", help="Fail above this many reclaimable bytes (50MB) or percent.")]
    = None,
    max_junk: Annotated[str | None, typer.Option(
        "--max-junk", help="Fail above this many junk bytes (10MB) or percent.")] = None,
    dive_ci: Annotated[Path, typer.Option(
        "--dive-ci", help="dive's CI rules file, read when it exists.")] = Path(".dive-ci"),
    source: Annotated[LayerSource, typer.Option(
        "--source", help="Where layers are read: the engine's overlay2 directories (storage, "
        "local engines), its docker save stream (save), or storage where it can (auto).")] =
    LayerSource.auto,
) -> None:
    """Where an image's bytes are: layer sizes, reclaimable bytes and why, junk, sharing."""
    rules = _gate_rules(min_efficiency, max_reclaimable, max_junk, dive_ci)
    out_dir = out_dir or _default_out_dir(Path.cwd())
    if not no_report:
        _check_out_dir(out_dir)
    if archive is not None:
        check_archive_path(archive)
    lint_report = None
    if dockerfile is not None:
        from layerkit.analyze import lint

        lint_report = lint.lint_file(dockerfile)
    saved = _saved_images(images or [], archive, source.value)
    from layerkit.analyze import analyze, gate
    from layerkit.analyze import render as report_analyze  # while the engine writes the first image

    started = time.perf_counter()
    saved_images = saved()
    read = time.perf_counter()
    result = analyze.analyze(saved_images, top=top, lint=lint_report)
    logger.debug("analyze: images read in %.3f s, analysed in %.3f s", read - started,
                 time.perf_counter() - read)
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
        min_efficiency=gate.check_efficiency(min_efficiency),
        max_reclaimable=gate.parse_limit(max_reclaimable) if max_reclaimable else None,
        max_junk=gate.parse_limit(max_junk) if max_junk else None)
    return gate.read_dive_ci(dive_ci, rules) if dive_ci.is_file() else rules


def _saved_images(refs: list[str], archive_path: Path | None,
                  requested: Requested) -> Callable[[], list[SavedImage]]:
    """Check the input, choose each image's layer source and set the engine writing the first
    saved image at once; the function returned reads them all. The caller imports the analysis
    in between, while the engine works, instead of before asking it. On a unix socket (the usual
    engine) the Docker SDK is not even imported: see `engine.save`."""
    if not refs and archive_path is None:
        raise UsageError("name at least one image, or --archive FILE")
    if archive_path is not None and not archive_path.is_file():
        raise NotFound(f"no archive at {archive_path}")
    from layerkit.cli import entry
    from layerkit.image.archive import read_archive

    early = entry.take(refs[0] if refs else "")  # sent before typer was imported
    sources = _sources(refs, requested)
    saves = _SaveStreams(early)

    def read() -> list[SavedImage]:
        saved: list[SavedImage] = []
        if archive_path is not None:
            saved.extend(read_archive(archive_path, hash_content=True).images)
        for ref in refs:
            reader = sources[ref]
            if reader is not None:
                saved.append(reader())
                continue
            later = [r for r in refs[refs.index(ref) + 1:] if sources[r] is None]
            if later:
                saves.start(later[0])  # the engine exports it while this one is read
            saved.append(saves.read(ref))
        return saved

    first_saved = [ref for ref in refs if sources[ref] is None][:1]
    if first_saved:
        saves.start(first_saved[0])
    return read


def _sources(refs: list[str], requested: Requested) -> dict[str, Callable[[], SavedImage] | None]:
    """Per image: a reader of its layer directories, or None for the save stream. A misspelt
    image fails here, before any is read."""
    from layerkit.engine import save as savestream
    from layerkit.image import storage
    from layerkit.image.source import choose

    path = savestream.socket_path(os.environ)
    local = path is not None and requested != "save"
    info = savestream.info_unix(path) if local and path and refs else None
    readers: dict[str, Callable[[], SavedImage] | None] = {}
    for position, ref in enumerate(refs):
        inspect = savestream.inspect_unix(path, ref) if local and path else None
        where = choose(requested, ref, local=local, info=info, inspect=inspect).storage
        if where is None:
            if position and inspect is None:
                _exists(path, ref)
            readers[ref] = None
            continue
        assert inspect is not None
        names = storage.saved_refs(ref, inspect.get("RepoTags") or [])
        # the figures are the same from the directory walk, which reads a many-file layer
        # faster than its tar-split record; squash, which writes bytes, takes the records
        walk = dataclasses.replace(where, splits=())
        readers[ref] = functools.partial(storage.read_image, ref, names, walk)
    return readers


def _exists(path: str | None, ref: str) -> None:
    """NotFound unless the engine has `ref` (asked before the first save is read)."""
    from layerkit.engine import save as savestream

    if path is None:
        from layerkit.engine.client import connect
        from layerkit.engine.images import inspect_image

        inspect_image(connect(os.environ), ref)
    elif not savestream.image_exists(path, ref):
        raise NotFound(f"inspecting image {ref}: no such image")


class _SaveStreams:
    """The saves of the images read from the save stream; the one sent early (`entry`) is
    the first one's."""

    def __init__(self, early: Request | None) -> None:
        from layerkit.engine import save as savestream

        self.early = early
        self.path = savestream.socket_path(os.environ)
        self.started: dict[str, SaveStream] = {}
        self.client: DockerClient | None = None  # for an engine off a unix socket

    def start(self, ref: str) -> None:
        if ref not in self.started:
            self.started[ref] = self._save(ref)

    def read(self, ref: str) -> SavedImage:
        from layerkit.image.archive import read_archive

        self.start(ref)
        with self.started.pop(ref) as stream:  # closed at the archive's end
            return read_archive(stream, hash_content=True).images[0]

    def _save(self, ref: str) -> SaveStream:
        from layerkit.engine import save as savestream

        early, self.early = self.early, None
        if self.path is not None:
            return savestream.save_unix(self.path, ref, sent=early)
        from layerkit.engine.client import connect
        from layerkit.engine.save import save_image

        self.client = self.client or connect(os.environ)
        return save_image(self.client, ref)


def _default_out_dir(cwd: Path) -> Path:
    """reports/, except in layerkit's own source tree: its reports/ holds the committed
    examples, which only `make reports` (an explicit --out) regenerates."""
    project = cwd / "pyproject.toml"
    try:
        own = project.is_file() and 'name = "layerkit"' in project.read_text()
    except OSError:
        own = False
    return cwd / "build" / "reports" if own else Path("reports")


def _check_out_dir(directory: Path) -> None:
    """A report directory that cannot be written is refused before the analysis, not after."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("."))
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"--out {directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {directory}: {existing} is not writable",
                         hint="choose another --out, or --no-report")


def _write_reports(directory: Path, files: dict[str, str]) -> None:
    replaced = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            replaced = replaced or (directory / name).exists()
            (directory / name).write_text(text)
    except OSError as exc:
        raise UsageError(f"--out {directory}: {exc.strerror or exc}") from None
    # the name is the image set's: only this set's earlier report is ever replaced, and it says so
    verb = "replaced" if replaced else "wrote"
    err.print(f"analyze: {verb} {', '.join(str(directory / n) for n in files)}", markup=False)


@app.command("lint", epilog=examples(
    "layerkit lint Dockerfile", "layerkit lint images/webapp/Dockerfile --format json"))
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
