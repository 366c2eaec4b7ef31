"""`layerkit doctor` against the running engine."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from layerkit.cli.app import app
from layerkit.engine.client import DockerClient

runner = CliRunner(env={"COLUMNS": "160"})


def test_doctor_reports_the_engine(docker_client: DockerClient) -> None:
    result = runner.invoke(app, ["doctor", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "layerkit/doctor/v1"
    checks = {c["name"]: c for c in data["checks"]}
    version = docker_client.version()
    assert version["Version"] in checks["engine version"]["detail"]
    assert version["ApiVersion"] in checks["engine version"]["detail"]
    assert checks["storage driver"]["detail"].startswith(docker_client.info()["Driver"])
    assert checks["base image"]["status"] == "ok"
    assert data["ok"] is True


def test_doctor_table(docker_client: DockerClient) -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "engine version" in result.stdout
    assert "free disk" in result.stdout
