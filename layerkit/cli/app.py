"""The `layerkit` command: the Typer app with its global options; each command family is a
module beside this one (options, progress, rendering, exit codes; no business logic).

Commands import the modules they use inside their bodies: `layerkit analyze` then loads
neither the cluster nor the build code, and `--help` loads neither.
"""

from __future__ import annotations

from typing import Annotated

import typer

from layerkit import __version__
from layerkit.cli.common import app, configure_logging, out

# each command module adds its commands to `app` when imported, and --help lists them in this order
# isort: split
from layerkit.cli import doctor, build, analyze, diff, squash, cluster  # noqa: I001

__all__ = ["COMMAND_MODULES", "app", "main"]
COMMAND_MODULES = (doctor, build, analyze, diff, squash, cluster)


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
    configure_logging(verbose)


def main() -> None:
    app(prog_name="layerkit")


if __name__ == "__main__":  # pragma: no cover
    main()
