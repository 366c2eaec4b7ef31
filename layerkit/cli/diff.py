"""`layerkit diff A B`: what changed between two images (files, layers, config)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit.cli.common import (
    OutputFormat,
    app,
    check_archive_path,
    check_image_ref,
    examples,
    fails_cleanly,
    out,
)

_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")

if TYPE_CHECKING:
    from layerkit.engine.client import DockerClient
    from layerkit.image.archive import SavedImage


@app.command("diff", epilog=examples(
    "layerkit diff layerkit/webapp:0.1.0 layerkit/webapp:latest",
    "layerkit diff old.tar new.tar --format json      # two `docker save -o` files, no engine",
    "layerkit diff myapp:1 myapp:2 --times            # also files whose time alone changed"))
@fails_cleanly
def diff_cmd(
    image_a: Annotated[str, typer.Argument(
        metavar="A", help="The image before: a name or id, or a saved image tar.")],
    image_b: Annotated[str, typer.Argument(
        metavar="B", help="The image after: a name or id, or a saved image tar.")],
    *,
    times: Annotated[bool, typer.Option(
        "--times", help="Also list files whose modification time alone changed.")] = False,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, help="Table rows of file changes at most (JSON lists all).")] = 200,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Files added, removed and changed (content, mode, owner), layer by layer, and the
    config (env, labels, entrypoint, cmd, user, ports) between image A and image B."""
    for source in (image_a, image_b):
        if Path(source).exists():
            check_archive_path(Path(source))
        elif not _IMAGE_ID.fullmatch(source):
            check_image_ref(source, "image")
    from layerkit.analyze import diff_render
    from layerkit.analyze.diff import diff_images

    client = _client_if_needed(image_a, image_b)
    result = diff_images(_read(client, image_a), _read(client, image_b), times=times)
    if output is OutputFormat.json:
        out.print(diff_render.diff_json(result), markup=False)
    else:
        out.print(diff_render.diff_table(result, limit=limit), markup=False)


def _client_if_needed(*sources: str) -> DockerClient | None:
    if all(Path(s).exists() for s in sources):
        return None
    from layerkit.engine.client import connect
    from layerkit.engine.images import image_info

    client = connect(os.environ)
    for source in sources:
        if not Path(source).exists():
            image_info(client, source)  # a missing image fails now, before any is read
    return client


def _read(client: DockerClient | None, source: str) -> SavedImage:
    from layerkit.image.archive import read_archive

    if client is None or Path(source).exists():
        return read_archive(Path(source), hash_content=True).images[0]
    from layerkit.engine.save import save_image

    with save_image(client, source) as stream:
        return read_archive(stream, hash_content=True).images[0]
