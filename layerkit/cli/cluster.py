"""The cluster commands: up, scale, status, down."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from layerkit.cli.common import OutputFormat, app, err, fails_cleanly, out
from layerkit.errors import ClusterError

ClusterName = Annotated[str, typer.Option(
    "--name", "-n", envvar="LAYERKIT_CLUSTER", help="Cluster name; several run side by side.")]
WaitSeconds = Annotated[float, typer.Option(
    "--wait", help="Seconds to wait until every web app serves (0: do not wait).")]


@app.command("up")
@fails_cleanly
def up_cmd(
    *,
    scale: Annotated[int, typer.Option("--scale", help="Number of web apps.")] = 3,
    name: ClusterName = "demo",
    bind: Annotated[str, typer.Option("--bind", help="Host address the URL is published on.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Host port of the URL (0: any free one).")]
    = 8080,
    stats_port: Annotated[int, typer.Option(
        "--stats-port", help="Host port of the stats page, always on 127.0.0.1 (0: any).")] = 0,
    forget_after: Annotated[int, typer.Option(
        "--forget-after", help="Seconds until a crashed or removed member is no longer listed "
        "(Serf reaps every 15 s; `scale` keeps this).")] = 120,
    wait: WaitSeconds = 60.0,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Start a load balancer and N web apps on the cluster's own network; print the URL."""
    from layerkit.cluster import cluster
    from layerkit.cluster import render as report
    from layerkit.engine.client import connect

    opts = cluster.ClusterOptions(name=name, bind=bind, port=port, stats_port=stats_port,
                                  forget_after=forget_after)
    cluster.validate_options(opts)  # bad input is exit 2 before any engine is asked
    cluster.validate_scale(scale)
    client = connect(os.environ)
    result = cluster.up(client, opts, scale, wait=wait,
                        on_progress=lambda what: err.print(f"starting {what}", markup=False))
    out.print(report.up_json(result) if output is OutputFormat.json else report.up_text(result),
              markup=False)
    _fail_unless_ready(result.ready, wait, name, scale)


@app.command("scale")
@fails_cleanly
def scale_cmd(
    n: Annotated[int, typer.Argument(help="Number of web apps wanted.")],
    *,
    name: ClusterName = "demo",
    wait: WaitSeconds = 60.0,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Set the number of web apps live; replaces any removed behind layerkit's back."""
    from layerkit.cluster import cluster
    from layerkit.cluster import render as report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    cluster.validate_scale(n)
    result = cluster.scale(connect(os.environ), name, n, wait=wait)
    out.print(report.scale_json(result) if output is OutputFormat.json
              else report.scale_text(result), markup=False)
    _fail_unless_ready(result.ready, wait, name, n)


@app.command("status")
@fails_cleanly
def status_cmd(
    *,
    name: ClusterName = "demo",
    stats_password: Annotated[bool, typer.Option(
        "--stats-password", help="Print only the stats page's password.")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Containers, Serf members and HAProxy's view of each backend."""
    from layerkit.cluster import cluster
    from layerkit.cluster import render as report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    client = connect(os.environ)
    if stats_password:
        out.print(cluster.stats_password(client, name), markup=False)
        return
    result = cluster.status(client, name)
    out.print(report.cluster_status_json(result) if output is OutputFormat.json
              else report.cluster_status_table(result), markup=False)


@app.command("down")
@fails_cleanly
def down_cmd(
    *,
    name: ClusterName = "demo",
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Remove every container, network and volume labelled with the cluster's name."""
    from layerkit.cluster import cluster
    from layerkit.cluster import render as report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    result = cluster.down(connect(os.environ), name)
    out.print(report.down_json(result) if output is OutputFormat.json
              else report.down_text(result), markup=False)


def _fail_unless_ready(ready: bool, wait: float, name: str, n: int) -> None:
    if wait > 0 and not ready:
        raise ClusterError(f"cluster {name}: not all {n} web apps serve after {wait:.0f} s",
                           hint=f"`layerkit status --name {name}`")
