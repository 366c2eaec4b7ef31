"""`layerkit build`: the specs under images/ built into images, with a progress display."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit import __version__
from layerkit.cli.common import (
    PACKAGE_DIR,
    OutputFormat,
    State,
    app,
    err,
    examples,
    explain,
    fails_cleanly,
    out,
)
from layerkit.errors import SpecError, UsageError

if TYPE_CHECKING:
    from layerkit.build.specs import ImageSpec, SpecSet

ImagesDir = Annotated[Path, typer.Option(
    "--images", envvar="LAYERKIT_IMAGES",
    help="Directory of image specs (images/<name>/image.toml).")]

BUILD_EPILOG = examples(
    "layerkit build                      # every spec under images/, base first",
    "layerkit build webapp --no-cache    # webapp from scratch, its base from the cache",
    "layerkit build app --build-arg PIP_VERSION=24.0",
    "layerkit build --print webapp       # the generated Dockerfile",
    "layerkit build --no-cache --reproducible   # the same image IDs on every cold build")


@app.command("build", epilog=BUILD_EPILOG)
@fails_cleanly
def build_cmd(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(
        help="Images to build (default: all); the images they stand on come first.")] = None,
    *,
    images: ImagesDir = Path("images"),
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Build the images named without the build cache (all images when "
        "none is named); the images they stand on still use it.")] = False,
    no_cache_deps: Annotated[bool, typer.Option(
        "--no-cache-deps", help="With --no-cache: the images they stand on are rebuilt "
        "without the cache too.")] = False,
    build_arg: Annotated[list[str] | None, typer.Option(
        "--build-arg", metavar="NAME=VALUE", help="Override a build argument that a spec "
        "declares in [args]; repeatable.")] = None,
    print_only: Annotated[str | None, typer.Option("--print", metavar="NAME",
                                                   help="Print NAME's generated Dockerfile "
                                                   "and exit.")] = None,
    base: Annotated[str | None, typer.Option(
        "--base", envvar="LAYERKIT_BASE_IMAGE", metavar="REF",
        help="Base image for specs that bootstrap their parent (default: the spec's parent, "
             "debian:bookworm-slim).")] = None,
    reproducible: Annotated[bool, typer.Option(
        "--reproducible", help="Same image IDs when the same specs are rebuilt from scratch "
        "with the same package versions: file times clamped to SOURCE_DATE_EPOCH (set, or "
        "1700000000), logs and caches dropped. On when SOURCE_DATE_EPOCH is set.")] = False,
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
    from layerkit.build.specs import build_order, load_set, with_base
    from layerkit.cli.progress import BuildProgress
    from layerkit.engine.client import connect

    if no_cache_deps and not no_cache:
        raise UsageError("--no-cache-deps goes with --no-cache")
    if not images.is_dir():
        raise UsageError(f"{images}: no such directory of image specs",
                         hint="run layerkit where images/<name>/image.toml are, or give "
                              "--images DIR (env LAYERKIT_IMAGES)")
    found = load_set(images, PACKAGE_DIR)
    specs = with_base(found.specs, base)
    explain(ctx, "images", images)
    explain(ctx, "base", base)
    wanted = _wanted(found, names or [print_only] if print_only else names or [])
    args = _build_args(build_arg or [], build_order(specs, wanted or None))
    if print_only is not None:
        spec = build_order(specs, [print_only])[-1]
        out.print(generate(spec, parent_ref(spec, specs, __version__), __version__).text,
                  markup=False, end="")
        return
    order = build_order(specs, wanted or None)
    fresh = _no_cache_names(no_cache, no_cache_deps, names or [], order)
    epoch = None
    if reproducible or os.environ.get("SOURCE_DATE_EPOCH"):
        from layerkit.build.reproducible import epoch_of

        epoch = epoch_of(os.environ)
        explain(ctx, "reproducible", f"SOURCE_DATE_EPOCH={epoch}")
    client = connect(os.environ)
    with BuildProgress(err.console, enabled=output is OutputFormat.table,
                       verbose=State.verbose) as progress:
        built = build_all(client, order, specs, version=__version__, no_cache=fresh,
                          squash=squash_layers, build_args=args, epoch=epoch,
                          on_event=progress.event)
    if output is OutputFormat.json:
        out.print(report.build_json(built), markup=False)
    else:
        out.print(report.build_table(built), markup=False)
    _fail_for_broken(found, wanted)


def _wanted(found: SpecSet, names: list[str]) -> list[str]:
    """The names asked for; a named spec that is broken (or stands on a broken one) fails
    here. With no names, the broken specs are reported after the others have been built."""
    for name in names:
        if name in found.broken:
            raise found.broken[name]
    if not names and found.broken and not found.specs:
        raise next(iter(found.broken.values()))
    for name, error in found.broken.items():
        if not names:
            err.print(f"skipped {name}: {' '.join(error.message.split())}", markup=False)
    return names


def _fail_for_broken(found: SpecSet, names: list[str]) -> None:
    if found.broken and not names:
        raise SpecError(next(iter(found.broken.values())).path,
                        f"{len(found.broken)} of {len(found.broken) + len(found.specs)} "
                        f"specs could not be built: {', '.join(sorted(found.broken))}")


def _build_args(pairs: list[str], order: list[ImageSpec]) -> dict[str, str]:
    from layerkit.build.specfields import did_you_mean

    declared = {name for spec in order for name, _ in spec.build_args}
    args: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--build-arg {pair!r}: expected NAME=VALUE")
        if name not in declared:
            have = ", ".join(sorted(declared)) or "none"
            raise UsageError(f"--build-arg {name}: no spec being built declares it in [args]"
                             f"{did_you_mean(name, declared)} (declared: {have})")
        args[name] = value
    return args


def _no_cache_names(no_cache: bool, deps: bool, names: list[str],
                    order: list[ImageSpec]) -> bool | frozenset[str]:
    if not no_cache:
        return False
    if not names or deps:
        return frozenset(spec.name for spec in order)
    return frozenset(names)
