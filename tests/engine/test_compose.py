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


def _compose_env(project: str, keyring: Path, lb_image: str, **web: str) -> dict[str, str]:
    write_keyring(keyring)
    return {**os.environ, "LAYERKIT_CLUSTER": project, "LAYERKIT_PORT": "",
            "LAYERKIT_VERSION": lb_image.partition(":")[2],
            "LAYERKIT_SERF_KEYRING_FILE": str(keyring), **web}


@pytest.fixture
def compose_tool(request: pytest.FixtureRequest) -> None:
    if shutil.which("docker-compose") is None:
        if request.config.getoption("--require-docker"):
            pytest.fail("docker-compose is not installed (make setup installs it)")
        pytest.skip("docker-compose is not installed")


@pytest.mark.usefixtures("compose_tool")
def test_compose_cluster_scales(docker_client: DockerClient, cluster_images: ClusterImages,
                                tmp_path: Path) -> None:
    project = unique_name("lkc").replace("-", "")
    env = _compose_env(project, tmp_path / "serf-keyring.json", cluster_images.lb,
                       LAYERKIT_WEB_IMAGE=cluster_images.web)
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


@pytest.mark.usefixtures("compose_tool")
def test_compose_runs_a_users_own_image(docker_client: DockerClient,
                                        cluster_images: ClusterImages, own_web_image: str,
                                        tmp_path: Path) -> None:
    """LAYERKIT_WEB_IMAGE, LAYERKIT_WEB_PORT and LAYERKIT_HEALTH: another app, port and
    health path (the app answers 404 on the default /healthz, so all three must arrive)."""
    project = unique_name("lkc").replace("-", "")
    env = _compose_env(project, tmp_path / "serf-keyring.json", cluster_images.lb,
                       LAYERKIT_WEB_IMAGE=own_web_image, LAYERKIT_WEB_PORT="8000",
                       LAYERKIT_HEALTH="/ping")
    try:
        compose(project, env, "up", "-d", "--scale", "webapp=2")
        url = f"http://{compose(project, env, 'port', 'lb', '80').strip()}/"
        assert wait_until(lambda: len(backends(url, 12)) == 2, timeout=30)
    finally:
        compose(project, env, "down", "-v", "--remove-orphans")
    assert labelled_containers(docker_client, {"org.layerkit.project": project}) == []
