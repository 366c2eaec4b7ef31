"""`layerkit build`: the specs under images/ built into images, with a progress display."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from layerkit import __version__
from layerkit.cli.common import (
    PACKAGE_DIR,
    OutputFormat,
    State,
    app,
    err,
    explain,
    fails_cleanly,
    out,
)

ImagesDir = Annotated[Path, typer.Option(
    "--images", envvar="LAYERKIT_IMAGES",
    help="Directory of image specs (images/<name>/image.toml).")]


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
    from layerkit.build import render as report
    from layerkit.build.build import build_all, parent_ref
    from layerkit.build.dockerfile import generate
    from layerkit.build.specs import build_order, load_all, with_base
    from layerkit.cli.progress import BuildProgress
    from layerkit.engine.client import connect

    specs = with_base(load_all(images, PACKAGE_DIR), base)
    explain(ctx, "images", images)
    explain(ctx, "base", base)
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
