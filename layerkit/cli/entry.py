"""The `layerkit` console script: for `layerkit analyze --source save IMAGE ...` on a
unix-socket engine, the save of the first image is asked for before the command line library is
even imported. (Without `--source save` analyze may read the engine's layer directories
instead, and an early save would only make the engine export the image for nothing.)

An engine of Docker 20-24 writes the whole image to a temporary directory before the first
byte of a save, seconds for a large image; importing typer and building the command from its
declarations, a good part of the start-up, can run meanwhile. Typer still parses the command
line as always: `cli` takes the early request only if it parsed the same image as the first one (see
`take`), and otherwise the early request is closed unread.

`ANALYZE_VALUE_OPTIONS` must name exactly the options of `analyze` that take a value, so that
their values are not read as images; tests/unit/test_entry.py checks it against the command.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not imported from typing: see `start`
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from layerkit.engine.unixhttp import Request

__all__ = ["ANALYZE_VALUE_OPTIONS", "early_images", "exit_status", "main", "quick_exit", "take"]

ANALYZE_VALUE_OPTIONS = frozenset({
    "--archive", "--format", "--out", "--dockerfile", "--top", "--min-efficiency",
    "--max-reclaimable", "--max-junk", "--dive-ci", "--source"})
_NO_EARLY = frozenset({"--archive", "--help", "-h"})

_early: dict[str, Request] = {}


def early_images(argv: Sequence[str]) -> list[str]:
    """The images `layerkit <argv>` would analyse from their saves, when that is certain from
    the words alone; [] for any other command, without `--source save`, for --archive and
    --help, and for anything unusual."""
    if not argv or argv[0] != "analyze":
        return []
    images: list[str] = []
    source = ""
    words = iter(argv[1:])
    for word in words:
        if word == "--":
            images.extend(words)
            break
        name = word.split("=", 1)[0]
        if name in _NO_EARLY:
            return []
        if word.startswith("-"):
            value = word.split("=", 1)[1] if "=" in word else None
            if name in ANALYZE_VALUE_OPTIONS and value is None:
                value = next(words, None)
                if value is None:
                    return []
            if name == "--source":
                source = value or ""
            if name not in ANALYZE_VALUE_OPTIONS and name != "--no-report":
                return []  # an option this table does not know: let typer say what it is
            continue
        images.append(word)
    return images if source == "save" else []


def start(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """Ask the engine for the first image's save, if `argv` is such an analyze. Nothing but
    the C socket module is imported before the request is sent (not even typing or the socket
    module, see `unixhttp`): right after the interpreter starts; a failure here is left
    for the command to meet and report."""
    images = early_images(argv)
    if not images:
        return
    from layerkit.engine import unixhttp

    path = unixhttp.socket_path(environ)
    if path is None:
        return
    try:
        _early[images[0]] = unixhttp.Request(path, unixhttp.image_target(images[0], "get"))
    except Exception:
        return


def take(ref: str) -> Request | None:
    """The request sent early for `ref`, once; None if there is none. Any other early request
    is closed unread: the command did not parse what `start` guessed."""
    request = _early.pop(ref, None)
    for other in _early.values():
        other.close()
    _early.clear()
    return request


def main() -> None:
    argv = sys.argv[1:]
    start(argv, os.environ)
    from layerkit.cli.app import main as cli_main

    if argv[:1] != ["analyze"]:
        cli_main()
        return
    try:
        cli_main()
    except SystemExit as done:
        code = exit_status(done.code)
    else:
        code = 0
    quick_exit(code)


def exit_status(code: object) -> int:
    """The process status `sys.exit(code)` gives (a message, printed, means 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def quick_exit(code: int) -> None:
    """End an analyze without tearing the interpreter down: freeing every record of the image
    one by one takes milliseconds for nothing: the analysis is done, its reports are written
    and closed, and it leaves no temporary files or child processes. Standard streams are
    flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)
