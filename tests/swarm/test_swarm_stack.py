"""compose/stack.yml (+ stack-vip.yml) deploys the same cluster with `docker stack deploy`:
web apps behind the floating address, and layerkit's status, scale and down work on it."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from layerkit.agent.serfagent import write_keyring
from layerkit.cli.app import app
from layerkit.cluster import swarm, swarmvip
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import labelled_networks
from tests.conftest import ROOT
from tests.engine.cluster_helpers import unique_name, wait_until
from tests.swarm.harness import Harness
from tests.swarm.traffic import backends

STACK, VIP_STACK = ROOT / "compose" / "stack.yml", ROOT / "compose" / "stack-vip.yml"
runner = CliRunner(env={"COLUMNS": "160", "TERM": "dumb"})


def free_overlay_subnet(manager: DockerClient) -> str:
    """A /24 of 10.200-250.x.0 that no network of the swarm uses."""
    used = [ipaddress.ip_network(s) for n in labelled_networks(manager, {}) for s in n.subnets]
    while True:
        candidate = ipaddress.ip_network(
            f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)


def test_stack_file_deploys_the_same_cluster(harness: Harness, manager: DockerClient,
                                             tmp_path: Path) -> None:
    assert shutil.which("docker") is not None
    name = unique_name("sts").replace("-", "")
    keyring, password = tmp_path / "serf-keyring.json", tmp_path / "stats-password"
    write_keyring(keyring)
    password.write_text(secrets.token_urlsafe(18) + "\n")
    vip = f"{harness.free_address(3)}/{harness.subnet.prefixlen}"
    env = {**os.environ, "DOCKER_HOST": harness.manager.docker_host, "LAYERKIT_CLUSTER": name,
           "LAYERKIT_SUBNET": free_overlay_subnet(manager), "LAYERKIT_PORT": "8095",
           "LAYERKIT_VIP": vip, "LAYERKIT_VRID": str(swarmvip.vrid(name)),
           "LAYERKIT_SERF_KEYRING_FILE": str(keyring),
           "LAYERKIT_STATS_PASSWORD_FILE": str(password)}
    url = f"http://{harness.free_address(3)}:8095/"
    try:
        done = subprocess.run(["docker", "stack", "deploy", "-c", str(STACK), "-c",
                               str(VIP_STACK), name], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert wait_until(lambda: len(backends(url, harness.subnet, 12)) == 3, timeout=90)
        status = swarm.status(manager, name)
        assert {t.role for t in status.tasks} == {"vip", "lb", "web"}
        assert status.vip_node is not None
        for role in ("web", "lb"):
            task = manager.api.inspect_service(f"{name}_{role}")["Spec"]["TaskTemplate"]
            assert task["Resources"]["Limits"]["MemoryBytes"] == 256 << 20, role
            assert task["LogDriver"]["Options"] == {"max-size": "10m", "max-file": "3"}, role
        result = runner.invoke(app, ["scale", "5", "--name", name],
                               env={"DOCKER_HOST": harness.manager.docker_host})
        assert result.exit_code == 0, result.output
        assert len(backends(url, harness.subnet, 20)) == 5
    finally:
        result = runner.invoke(app, ["down", "--name", name],
                               env={"DOCKER_HOST": harness.manager.docker_host})
    assert result.exit_code == 0, result.output
    assert not swarm.find_services(manager, name)
