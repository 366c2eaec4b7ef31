"""The cluster commands: up, scale, status, down."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from layerkit.cli.common import (
    OutputFormat,
    app,
    check_image_ref,
    err,
    examples,
    fails_cleanly,
    out,
)
from layerkit.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from layerkit.cluster.swarm import SwarmOptions

ClusterName = Annotated[str, typer.Option(
    "--name", "-n", envvar="LAYERKIT_CLUSTER", help="Cluster name; several run side by side.")]
WaitSeconds = Annotated[float, typer.Option(
    "--wait", help="Seconds to wait until every web app serves (0: do not wait).")]


@app.command("up", epilog=examples(
    "layerkit up --scale 3",
    "layerkit up --scale 5 --name staging --bind 127.0.0.1",
    "layerkit up --web-image myapp:1.0 --web-port 8000 --health /ping",
    "DOCKER_HOST=tcp://manager:2375 layerkit up --swarm --scale 6 --lb 2 --vip 10.1.0.250/24"))
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
    memory: Annotated[str, typer.Option(
        "--memory", help="Memory limit of each container, like 256m (kept for `scale`).")]
    = "256m",
    pids: Annotated[int, typer.Option(
        "--pids", help="Processes and threads per container (kept for `scale`).")] = 256,
    log_size: Annotated[str, typer.Option(
        "--log-size", help="Docker's log of each container is rotated at this size.")]
    = "10m",
    log_files: Annotated[int, typer.Option(
        "--log-files", help="Rotated log files kept per container.")] = 3,
    web_image: Annotated[str | None, typer.Option(
        "--web-image", help="Image of the web apps: any image built on the shared base "
        "(default: the lab's web app).")] = None,
    web_port: Annotated[int, typer.Option(
        "--web-port", help="Port the web app listens on (0: the one its image declares).")]
    = 0,
    health: Annotated[str, typer.Option(
        "--health", help="Path HAProxy checks on each web app; 200 means healthy.")]
    = "/healthz",
    wait: WaitSeconds = 60.0,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
    swarm_mode: Annotated[bool, typer.Option(
        "--swarm", help="Deploy as Swarm services through a manager (DOCKER_HOST or local).")]
    = False,
    lb: Annotated[int | None, typer.Option(
        "--lb", help="Swarm: load balancers, each on a node of its own (default 2).")] = None,
    vip: Annotated[str | None, typer.Option(
        "--vip", help="Swarm: floating ADDRESS[/PREFIX] on the nodes' network (keepalived).")]
    = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Swarm: push the images to HOST:PORT; nodes pull them by digest.")]
    = None,
) -> None:
    """Start a load balancer and N web apps on the cluster's own network; print the URL."""
    from layerkit.cluster import cluster, swarm
    from layerkit.cluster import render as report
    from layerkit.engine.client import connect

    cluster.validate_wait(wait)
    if web_image is not None:
        _check_web_image(web_image)
    web_image = web_image or cluster.ClusterOptions.web_image
    if swarm_mode:
        _up_swarm(swarm.SwarmOptions(
            name=name, port=port, lb=2 if lb is None else lb, vip=vip, registry=registry,
            forget_after=forget_after, memory=memory, pids=pids, log_size=log_size,
            log_files=log_files, web_image=web_image, web_port=web_port, health=health),
            scale, wait=wait, output=output)
        return
    if lb is not None or vip is not None or registry is not None:
        raise UsageError("--lb, --vip and --registry need --swarm")
    opts = cluster.ClusterOptions(name=name, bind=bind, port=port, stats_port=stats_port,
                                  forget_after=forget_after, memory=memory, pids=pids,
                                  log_size=log_size, log_files=log_files,
                                  web_image=web_image, web_port=web_port, health=health)
    cluster.validate_options(opts)  # bad input is exit 2 before any engine is asked
    cluster.validate_scale(scale)
    client = connect(os.environ)
    if swarm.find_services(client, name):
        raise UsageError(f"cluster name {name!r} is already used by a Swarm cluster",
                         hint="choose another --name")
    result = cluster.up(client, opts, scale, wait=wait,
                        on_progress=lambda what: err.print(f"starting {what}", markup=False))
    out.print(report.up_json(result) if output is OutputFormat.json else report.up_text(result),
              markup=False)
    _fail_unless_ready(result.ready, wait, name, scale)


def _check_web_image(ref: str) -> None:
    """A name[:tag] (or name@digest, or an image ID) the engine can look up: a typo such as
    an upper-case letter is bad input, not an engine failure."""
    name, at, digest = ref.partition("@")
    check_image_ref(name, "--web-image")
    if at and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise UsageError(f"--web-image {ref!r}: the part after '@' is not a sha256 digest")


# a negative N reaches the range check (exit 2, "out of range") instead of being read as an option
@app.command("scale", context_settings={"ignore_unknown_options": True}, epilog=examples(
    "layerkit scale 8", "layerkit scale 2 --name staging"))
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
    from layerkit.cluster import cluster, swarm
    from layerkit.cluster import render as report
    from layerkit.cluster import swarmrender as swarm_report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    cluster.validate_scale(n)
    cluster.validate_wait(wait)
    client = connect(os.environ)
    if swarm.find_services(client, name):
        done = swarm.scale(client, name, n, wait=wait)
        out.print(swarm_report.scale_json(done) if output is OutputFormat.json
                  else swarm_report.scale_text(done), markup=False)
        _fail_unless_ready(done.ready, wait, name, n)
        return
    result = cluster.scale(client, name, n, wait=wait)
    out.print(report.scale_json(result) if output is OutputFormat.json
              else report.scale_text(result), markup=False)
    _fail_unless_ready(result.ready, wait, name, n)


@app.command("status", epilog=examples(
    "layerkit status",
    "layerkit status --name staging --format json"))
@fails_cleanly
def status_cmd(
    *,
    name: ClusterName = "demo",
    stats_password: Annotated[bool, typer.Option(
        "--stats-password", help="Print only the stats page's password.")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Containers, Serf members and HAProxy's view of each backend (Swarm: tasks and nodes; Serf
    and HAProxy for the load balancers on the node of the engine asked)."""
    from layerkit.cluster import cluster, swarm
    from layerkit.cluster import render as report
    from layerkit.cluster import swarmrender as swarm_report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    client = connect(os.environ)
    if not stats_password and swarm.find_services(client, name):
        done = swarm.status(client, name)
        out.print(swarm_report.status_json(done) if output is OutputFormat.json
                  else swarm_report.status_table(done), markup=False)
        return
    if stats_password:
        out.print(cluster.stats_password(client, name), markup=False)
        return
    result = cluster.status(client, name)
    out.print(report.cluster_status_json(result) if output is OutputFormat.json
              else report.cluster_status_table(result), markup=False)


@app.command("down", epilog=examples(
    "layerkit down",
    "layerkit down --name staging"))
@fails_cleanly
def down_cmd(
    *,
    name: ClusterName = "demo",
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Remove every container, network and volume labelled with the cluster's name (Swarm:
    its services, secrets and overlay network)."""
    from layerkit.cluster import cluster, swarm
    from layerkit.cluster import render as report
    from layerkit.cluster import swarmrender as swarm_report
    from layerkit.engine.client import connect

    cluster.validate_name(name)
    client = connect(os.environ)
    if swarm.find_services(client, name):
        done = swarm.down(client, name)
        out.print(swarm_report.down_json(done) if output is OutputFormat.json
                  else swarm_report.down_text(done), markup=False)
        return
    result = cluster.down(client, name)
    out.print(report.down_json(result) if output is OutputFormat.json
              else report.down_text(result), markup=False)


def _up_swarm(opts: SwarmOptions, scale: int, *, wait: float, output: OutputFormat) -> None:
    from layerkit.cluster import swarm
    from layerkit.cluster import swarmrender as report
    from layerkit.cluster.cluster import validate_scale
    from layerkit.engine.client import connect

    swarm.validate_options(opts)  # bad input is exit 2 before any engine is asked
    validate_scale(scale)
    result = swarm.up(connect(os.environ), opts, scale, wait=wait,
                      on_progress=lambda what: err.print(f"starting {what}", markup=False))
    out.print(report.up_json(result) if output is OutputFormat.json else report.up_text(result),
              markup=False)
    _fail_unless_ready(result.ready, wait, opts.name, scale)


def _fail_unless_ready(ready: bool, wait: float, name: str, n: int) -> None:
    if wait > 0 and not ready:
        raise ClusterError(f"cluster {name}: not all {n} web apps serve after {wait:.0f} s",
                           hint=f"`layerkit status --name {name}` shows HAProxy's check of each; "
                                "L4CON: the app does not listen on 0.0.0.0 at the web port")


@app.command("push", epilog=examples(
    "layerkit push --registry registry.lan:5000",
    "layerkit up --swarm --registry registry.lan:5000 --scale 6"))
@fails_cleanly
def push_cmd(
    *,
    registry: Annotated[str, typer.Option(
        "--registry", help="HOST:PORT of the registry the Swarm nodes pull from.")],
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """Push layerkit's cluster images (haproxy, webapp, keepalived) to a registry."""
    from layerkit.cluster import registry as pushing
    from layerkit.cluster import swarm
    from layerkit.cluster import swarmrender as report
    from layerkit.engine.client import connect

    pushing.validate_registry(registry)
    opts = swarm.SwarmOptions()
    pushed = pushing.push_all(connect(os.environ), registry,
                              [opts.lb_image, opts.web_image, opts.vip_image],
                              on_progress=lambda what: err.print(what, markup=False))
    out.print(report.push_json(pushed) if output is OutputFormat.json
              else report.push_text(pushed), markup=False)


@app.command("logs", epilog=examples(
    "layerkit logs",
    "layerkit logs --name staging --role lb --since 10m --follow"))
@fails_cleanly
def logs_cmd(
    *,
    name: ClusterName = "demo",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
    role: Annotated[str | None, typer.Option("--role", help="Only lb, web or vip.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only lines since a duration ago (10m, 2h) or an ISO time.")] = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] =
    OutputFormat.table,
) -> None:
    """The merged, time-ordered logs of every member of a cluster (one engine or Swarm)."""
    import datetime as dt

    from layerkit.cluster import logs
    from layerkit.cluster import swarmrender as report
    from layerkit.engine.client import connect

    start = logs.parse_since(since, dt.datetime.now(dt.UTC)) if since else 0
    client = connect(os.environ)
    if follow:
        for line in logs.follow(client, name, role=role, since=start):
            out.print(report.log_line(line), markup=False)
            sys.stdout.flush()  # a line as it comes, also into a pipe
        return
    lines = logs.collect(client, name, role=role, since=start)
    out.print(report.logs_json(lines) if output is OutputFormat.json
              else "\n".join(report.log_line(line) for line in lines), markup=False)

