"""`layerkit doctor`: the engine, the base image and disk space checked, and set up with --fix."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from layerkit.cli.common import OutputFormat, app, err, examples, fails_cleanly, out


@app.command("doctor", epilog=examples(
    "layerkit doctor", "sudo layerkit doctor --fix    # install docker.io, start dockerd",
    "DOCKER_HOST=tcp://127.0.0.1:2375 layerkit doctor --format json"))
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

    fixed: tuple[str, ...] = ()
    if fix:
        fixed = doctor.fix(os.environ, log=lambda text: err.print(f"doctor: {text}", markup=False))
    result = doctor.run_checks(base, os.environ)
    result = doctor.DoctorReport(result.checks, fixed)
    if output is OutputFormat.json:
        out.print(doctor.doctor_json(result), markup=False)
    else:
        for line in fixed:
            out.print(f"fixed: {line}", markup=False)
        out.print(doctor.doctor_table(result), markup=False)
    if not result.ok:
        raise typer.Exit(1)
