"""`layerkit logs` on one engine: every member's lines, merged in time order, by role."""

from __future__ import annotations

from typer.testing import CliRunner

from layerkit.cli.app import app
from layerkit.cluster import cluster, logs
from layerkit.engine.client import DockerClient
from tests.engine.cluster_helpers import unique_name

runner = CliRunner(env={"COLUMNS": "160", "TERM": "dumb"})


def test_logs_merge_the_members_of_a_single_engine_cluster(
        docker_client: DockerClient, built_images: dict[str, str]) -> None:
    name = unique_name("lkl")
    try:
        assert cluster.up(docker_client, cluster.ClusterOptions(name=name, port=0), 2).ready
        lines = logs.collect(docker_client, name)
        assert {x.role for x in lines} == {"lb", "web"}
        assert len({x.source for x in lines}) == 3
        keys = [logs.order_key(x.timestamp) for x in lines]
        assert keys == sorted(keys)
        result = runner.invoke(app, ["logs", "--name", name, "--role", "lb"])
        assert result.exit_code == 0, result.output
        assert "Serf agent running" in result.output
        assert f"layerkit-{name}-web" not in result.output
        bad = runner.invoke(app, ["logs", "--name", name, "--role", "db"])
        assert bad.exit_code == 2
    finally:
        cluster.down(docker_client, name)
    missing = runner.invoke(app, ["logs", "--name", name])
    assert missing.exit_code == 2
