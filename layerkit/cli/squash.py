"""`layerkit squash`: a range of an image's layers merged into one, verified, loaded, tagged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from layerkit.cli.common import (
    LayerSource,
    OutputFormat,
    app,
    check_archive_path,
    check_image_ref,
    err,
    examples,
    fails_cleanly,
    out,
)


@app.command("squash", epilog=examples(
    "layerkit squash myapp:1 -t myapp:1-squashed --from layerkit/base:latest",
    "layerkit squash myapp:1 -t myapp:1 --last 3",
    "layerkit squash --archive app.tar --all --archive-out flat.tar -t app:flat --no-load"))
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
    source: Annotated[LayerSource, typer.Option(
        "--source", help="Where layers are read: the engine's overlay2 directories (storage, "
        "local engines), its docker save stream (save), or storage where it can (auto).")] =
    LayerSource.auto,
) -> None:
    """Merge a range of an image's layers into one, verify it, load it and tag it."""
    if tag is not None:
        check_image_ref(tag, "--tag")
    if archive is not None:
        check_archive_path(archive)
    from layerkit.engine.client import connect
    from layerkit.squash import render as report_squash
    from layerkit.squash import squash

    opts = squash.SquashOptions(
        tag=tag, base=base, last=last, all_layers=all_layers, archive=archive,
        archive_out=archive_out, load=not no_load, reproducible=reproducible,
        verify=not no_verify, low_disk=low_disk, source=source.value)
    squash.check_range(base=base is not None, last=last, all_layers=all_layers)
    needs_engine = archive is None or (tag is not None and not no_load)
    client = connect(os.environ) if needs_engine else None

    def phase(name: str) -> None:
        if output is OutputFormat.table:
            err.print(f"squash: {name} ...", markup=False)

    result = squash.squash(client, image, opts, os.environ, on_phase=phase)
    out.print(report_squash.squash_json(result) if output is OutputFormat.json
              else report_squash.squash_text(result), markup=False)
