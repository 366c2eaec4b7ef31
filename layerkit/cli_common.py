"""What every `layerkit` command shares: the Typer app, the consoles, the output formats and
`fails_cleanly`. Light on purpose: each command imports its own modules when it runs, so the
start-up that every invocation pays (and `analyze`'s race with the engine) stays short."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from .errors import BuildError, LayerkitError

__all__ = ["PACKAGE_DIR", "OutputFormat", "State", "app", "err", "fails_cleanly", "out"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="layerkit",
    help="Build small, well-layered container images and run them as a self-organising cluster.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
PACKAGE_DIR = Path(__file__).resolve().parent


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class State:
    verbose = False


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
