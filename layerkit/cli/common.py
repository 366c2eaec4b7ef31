"""What every `layerkit` command shares: the Typer app, the consoles, the output formats and
`fails_cleanly`. Light on purpose: each command imports its own modules when it runs, so the
start-up that every invocation pays (and `analyze`'s race with the engine) stays short."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from typer.core import TyperGroup

from layerkit.errors import BuildError, LayerkitError, NotFound, UsageError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "PACKAGE_DIR",
    "LayerSource",
    "OutputFormat",
    "Printer",
    "State",
    "app",
    "check_archive_path",
    "check_image_ref",
    "configure_logging",
    "err",
    "examples",
    "explain",
    "fails_cleanly",
    "out",
]

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

_GLOBAL_FLAGS = ("--verbose", "-v")


class _Group(TyperGroup):
    """The root command group: `--verbose` is global but also accepted after the subcommand
    (`layerkit build --verbose`), as people type it; it is moved in front before parsing."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in _GLOBAL_FLAGS]
        rest = [a for a in args[:end] if a not in _GLOBAL_FLAGS]
        return super().parse_args(ctx, [*flags, *rest, *args[end:]])


app = typer.Typer(
    name="layerkit",
    cls=_Group,
    help="Build small, well-layered container images and run them as a self-organising cluster.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
# C0/C1 control characters other than tab and newline, shown escaped: names read from images
# (paths, tags, commands) must not drive the terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0))}


class Printer:
    """Plain text to stdout or stderr. Output is never styled, so rich (about 35 ms to import,
    and it would read `:name:` in a path as an emoji code) is loaded only for the build's
    progress display, through `console`."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr
        self._console: Console | None = None

    def print(self, text: str = "", *, markup: bool = False, end: str = "\n") -> None:
        del markup  # text is never read as markup
        stream = sys.stderr if self.stderr else sys.stdout
        stream.write(text.translate(_CONTROLS) + end)
        if self.stderr:
            stream.flush()

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr, highlight=False, soft_wrap=True)
        return self._console


err = Printer(stderr=True)
out = Printer()
PACKAGE_DIR = Path(__file__).resolve().parent.parent


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class LayerSource(StrEnum):
    """Where `analyze` and `squash` read an image's layers (`image.source` chooses for auto)."""
    auto = "auto"
    storage = "storage"
    save = "save"


class State:
    verbose = False


class _StderrHandler(logging.Handler):
    """Log records as plain lines on stderr through `err` (control characters escaped), read
    at emit time so that a test's captured stderr sees them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(self.format(record))
        except Exception:  # a log line must never fail the command
            self.handleError(record)


def configure_logging(verbose: bool) -> None:
    """One handler on the `layerkit` logger: warnings always, DEBUG (which path was taken and
    why, phase times, retries) under --verbose."""
    State.verbose = verbose
    root = logging.getLogger("layerkit")
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"
                                           if verbose else "%(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """A LayerkitError becomes one line (plus a hint) on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LayerkitError as exc:
            if isinstance(exc, BuildError) and exc.log_tail:
                err.print("\n".join(f"  | {line}" for line in exc.log_tail), markup=False)
            err.print(f"error: {' '.join(exc.message.split())}", markup=False)
            if exc.hint:
                err.print(f"hint: {exc.hint}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


# what a compressed `docker save` starts with, and how to undo it
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip it (or: gzip -dc FILE > image.tar)"),
               (b"\x28\xb5\x2f\xfd", "zstd", "unzstd it (or: zstd -dc FILE > image.tar)"),
               (b"BZh", "bzip2", "bunzip2 it"), (b"\xfd7zXZ\x00", "xz", "unxz it"))


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")


def check_image_ref(value: str, option: str) -> str:
    """A name[:tag] the engine will accept as a tag, checked before any work is done."""
    if not _REFERENCE.fullmatch(value) or len(value) > 255:
        raise UsageError(f"{option} {value!r}: not a valid image name[:tag]",
                         hint="lower-case name parts of letters, digits, '.', '_' or '-', "
                              "e.g. myapp:1-squashed")
    return value


def check_archive_path(path: Path) -> None:
    """An --archive that cannot be a `docker save` tar is refused with what to do instead:
    a directory, a missing file, a compressed save."""
    if path.is_dir():
        raise UsageError(f"--archive {path}: is a directory, not a saved image",
                         hint="name the tar that `docker save -o FILE IMAGE` wrote")
    if not path.is_file():
        raise NotFound(f"no archive at {path}",
                       hint="make one with `docker save -o FILE IMAGE`")
    with path.open("rb") as f:
        head = f.read(8)
    for magic, kind, fix in _COMPRESSED:
        if head.startswith(magic):
            raise UsageError(f"--archive {path}: is {kind}-compressed, not a tar",
                             hint=f"{fix}, then pass the .tar")


def examples(*lines: str) -> str:
    """A --help epilog of example command lines, kept as written (not re-wrapped)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def explain(ctx: typer.Context, param: str, value: object) -> None:
    """Under --verbose, say where a setting came from (option, environment or default)."""
    if not State.verbose:
        return
    source = ctx.get_parameter_source(param)
    origin = source.name.lower() if source is not None else "default"
    logger.debug("setting %s = %s (from %s)", param, value, origin)
