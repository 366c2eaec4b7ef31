"""The `layerkit` command: options, progress, rendering, exit codes. No business logic.

Commands import the modules they use inside their bodies: `layerkit analyze` then loads
neither the cluster nor the build code, and `--help` loads neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit import __version__
from layerkit.cli import cluster as cli_cluster
from layerkit.cli.common import PACKAGE_DIR, OutputFormat, State, app, err, fails_cleanly, out
from layerkit.errors import NotFound, UsageError

if TYPE_CHECKING:
    from layerkit.analyze.gate import GateRules
    from layerkit.engine.unixhttp import Request
    from layerkit.image.archive import SavedImage

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        out.print(f"layerkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    *,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more about each step.",
                                          envvar="LAYERKIT_VERBOSE")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    State.verbose = verbose


ImagesDir = Annotated[Path, typer.Option(
    "--images", envvar="LAYERKIT_IMAGES",
    help="Directory of image specs (images/<name>/image.toml).")]


@app.command("doctor")
@fails_cleanly
def doctor_cmd(
    *,
    fix: Annotated[bool, typer.Option("--fix", help="Install what is missing (docker.io, "
                                      "mmdebstrap) and start dockerd; Debian, as root.")] = False,
    base: Annotated[str, typer.Option("--base", envvar="LAYERKIT_BASE_IMAGE",
                                      help="Base image to check for.")] = "debian:bookworm-slim",
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Check the engine, the base image and disk space; --fix sets up what is missing."""
    from layerkit import doctor
    from layerkit import render as report

    fixed: tuple[str, ...] = ()
    if fix:
        fixed = doctor.fix(os.environ, log=lambda text: err.print(f"doctor: {text}", markup=False))
    result = doctor.run_checks(base, os.environ)
    result = doctor.DoctorReport(result.checks, fixed)
    if output is OutputFormat.json:
        out.print(report.doctor_json(result), markup=False)
    else:
        for line in fixed:
            out.print(f"fixed: {line}", markup=False)
        out.print(report.doctor_table(result), markup=False)
    if not result.ok:
        raise typer.Exit(1)


@app.command("build")
@fails_cleanly
def build_cmd(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(
        help="Images to build (default: all); the images they stand on come first.")] = None,
    *,
    images: ImagesDir = Path("images"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the build cache.")]
    = False,
    print_only: Annotated[str | None, typer.Option("--print", metavar="NAME",
                                                   help="Print NAME's generated Dockerfile "
                                                   "and exit.")] = None,
    base: Annotated[str | None, typer.Option(
        "--base", envvar="LAYERKIT_BASE_IMAGE", metavar="REF",
        help="Base image for specs that bootstrap their parent (default: the spec's parent, "
             "debian:bookworm-slim).")] = None,
    squash_layers: Annotated[bool, typer.Option(
        "--squash", help="Squash each image's own layers above its parent into one (the "
        "parent's layers stay shared).")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Generate the Dockerfiles from the specs and build the images, base first."""
    from layerkit import render as report
    from layerkit.build.build import build_all, parent_ref
    from layerkit.build.dockerfile import generate
    from layerkit.build.specs import build_order, load_all, with_base
    from layerkit.cli.progress import BuildProgress
    from layerkit.engine.client import connect

    specs = with_base(load_all(images, PACKAGE_DIR), base)
    _explain(ctx, "images", images)
    _explain(ctx, "base", base)
    if print_only is not None:
        spec = build_order(specs, [print_only])[-1]
        out.print(generate(spec, parent_ref(spec, specs, __version__), __version__).text,
                  markup=False, end="")
        return
    order = build_order(specs, names or None)
    client = connect(os.environ)
    with BuildProgress(err.console, enabled=output is OutputFormat.table,
                       verbose=State.verbose) as progress:
        built = build_all(client, order, specs, version=__version__, no_cache=no_cache,
                          squash=squash_layers, on_event=progress.event)
    if output is OutputFormat.json:
        out.print(report.build_json(built), markup=False)
    else:
        out.print(report.build_table(built), markup=False)


def _explain(ctx: typer.Context, param: str, value: object) -> None:
    """Under --verbose, say where a setting came from (option, environment or default)."""
    if not State.verbose:
        return
    source = ctx.get_parameter_source(param)
    origin = source.name.lower() if source is not None else "default"
    err.print(f"setting {param} = {value} (from {origin})", markup=False)


cli_cluster.register(app)


# --- analyze and lint (issue 4) ------------------------------------------------------------------

class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


_ANALYZE_RENDER = {ReportFormat.table: "analyze_table", ReportFormat.json: "analyze_json",
                   ReportFormat.markdown: "analyze_markdown", ReportFormat.html: "analyze_html"}


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
    render = getattr(report_analyze, _ANALYZE_RENDER[output])
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
        from layerkit.engine.client import connect, inspect_image, save_image

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


# --- squash (issue 5) ----------------------------------------------------------------------------

@app.command("squash")
@fails_cleanly
def squash_cmd(
    image: Annotated[str | None, typer.Argument(
        metavar="IMAGE",
        help="Image to squash (name or id); with --archive, which image of the archive.")] = None,
    *,
    tag: Annotated[str | None, typer.Option(
        "--tag", "-t", metavar="NEW_TAG",
        help="Name of the result; may equal IMAGE's tag, which then moves after verification.")]
    = None,
    base: Annotated[str | None, typer.Option(
        "--from", metavar="BASE", help="Keep BASE's layers; squash everything above them.")]
    = None,
    last: Annotated[int | None, typer.Option(
        "--last", metavar="N", help="Squash the last N rootfs layers (layers with files; "
        "metadata-only steps such as ENV or CMD are not layers).")] = None,
    all_layers: Annotated[bool, typer.Option("--all", help="Squash every layer into one.")]
    = False,
    archive: Annotated[Path | None, typer.Option(
        "--archive", help="Read a saved image tar (docker save, legacy or OCI); no engine.")]
    = None,
    archive_out: Annotated[Path | None, typer.Option(
        "--archive-out", help="Write the result as an image archive with gzip layers.")] = None,
    no_load: Annotated[bool, typer.Option(
        "--no-load", help="Do not load the result into the engine (use with --archive-out).")]
    = False,
    reproducible: Annotated[bool, typer.Option(
        "--reproducible", help="Same image ID on every run (created = the source's time, or "
        "SOURCE_DATE_EPOCH when set).")] = False,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip comparing the result's files with the source's.")] = False,
    low_disk: Annotated[bool, typer.Option(
        "--low-disk", help="Read the image twice from the engine instead of spooling it: "
        "temporary disk is then the new layer only.")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Merge a range of an image's layers into one, verify it, load it and tag it."""
    from layerkit.engine.client import connect
    from layerkit.squash import render as report_squash
    from layerkit.squash import squash

    opts = squash.SquashOptions(
        tag=tag, base=base, last=last, all_layers=all_layers, archive=archive,
        archive_out=archive_out, load=not no_load, reproducible=reproducible,
        verify=not no_verify, low_disk=low_disk)
    needs_engine = archive is None or (tag is not None and not no_load)
    client = connect(os.environ) if needs_engine else None

    def phase(name: str) -> None:
        if output is OutputFormat.table:
            err.print(f"squash: {name} ...", markup=False)

    result = squash.squash(client, image, opts, os.environ, on_phase=phase)
    out.print(report_squash.squash_json(result) if output is OutputFormat.json
              else report_squash.squash_text(result), markup=False)


def main() -> None:
    app(prog_name="layerkit")


if __name__ == "__main__":  # pragma: no cover
    main()
