"""compose/docker-compose.yml starts the same cluster with Debian's docker-compose 1.29."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from layerkit.agent.serfagent import write_keyring
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import labelled_containers, labelled_networks
from tests.conftest import ROOT
from tests.engine.cluster_helpers import ClusterImages, backends, unique_name, wait_until

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"


def compose(project: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", project, *args],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_compose_cluster_scales(docker_client: DockerClient, cluster_images: ClusterImages,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if shutil.which("docker-compose") is None:
        if request.config.getoption("--require-docker"):
            pytest.fail("docker-compose is not installed (make setup installs it)")
        pytest.skip("docker-compose is not installed")
    project = unique_name("lkc").replace("-", "")
    keyring = tmp_path / "serf-keyring.json"
    write_keyring(keyring)
    env = {**os.environ, "LAYERKIT_CLUSTER": project, "LAYERKIT_PORT": "",
           "LAYERKIT_VERSION": cluster_images.lb.partition(":")[2],
           "LAYERKIT_SERF_KEYRING_FILE": str(keyring)}
    try:
        compose(project, env, "up", "-d", "--scale", "webapp=3")
        url = f"http://{compose(project, env, 'port', 'lb', '80').strip()}/"
        assert wait_until(lambda: len(backends(url, 12)) == 3, timeout=30)
        compose(project, env, "up", "-d", "--no-recreate", "--scale", "webapp=5")
        assert wait_until(lambda: len(backends(url, 20)) == 5, timeout=30)
        members = labelled_containers(docker_client, {"org.layerkit.project": project})
        assert {c.labels["org.layerkit.role"] for c in members} == {"lb", "web"}
        for member in members:  # the limits every container gets, as `up` gives them
            host = docker_client.api.inspect_container(member.id)["HostConfig"]
            assert (host["Memory"], host["PidsLimit"]) == (256 << 20, 256)
            assert host["LogConfig"] == {"Type": "json-file",
                                         "Config": {"max-file": "3", "max-size": "10m"}}
    finally:
        compose(project, env, "down", "-v", "--remove-orphans")
    assert labelled_containers(docker_client, {"org.layerkit.project": project}) == []
    assert labelled_networks(docker_client, {"org.layerkit.project": project}) == []
