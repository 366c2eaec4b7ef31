"""`down` on a Swarm cluster, a second cluster beside a first, members without the key, and
bad input: one line, exit 2 or 1, nothing half-created."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time

from typer.testing import CliRunner

from layerkit import __version__
from layerkit.cli.app import app
from layerkit.cluster import cluster, swarm, swarmvip
from layerkit.engine.client import DockerClient
from layerkit.engine.swarm import (
    SecretRef,
    ServiceRequest,
    create_secret,
    create_service,
    labelled_secrets,
    labelled_services,
    remove_secret,
    remove_service,
    service_tasks,
    tasks_of,
)
from tests.engine.cluster_helpers import unique_name, wait_until
from tests.swarm.harness import Harness, Node
from tests.swarm.traffic import backends

runner = CliRunner(env={"COLUMNS": "160", "TERM": "dumb"})


def cli(host: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"DOCKER_HOST": host})
    return result.exit_code, result.output


def labelled_on(node: Node, name: str) -> list[str]:
    """Containers and networks carrying the cluster's label on one node's engine."""
    label = f"label=org.layerkit.project={name}"
    return (node.run("docker", "ps", "-aq", "--filter", label).split()
            + node.run("docker", "network", "ls", "-q", "--filter", label).split())


def nothing_left(harness: Harness, manager: DockerClient, name: str) -> bool:
    project = {"org.layerkit.project": name}
    return not (labelled_services(manager, project) or labelled_secrets(manager, project)
                or any(labelled_on(node, name) for node in harness.nodes))


def test_down_removes_one_cluster_everywhere_and_leaves_the_other(
        harness: Harness, manager: DockerClient) -> None:
    """Two clusters with floating addresses whose names hash to the same VRRP router id: the
    second takes another id, both addresses serve, and `down` of one leaves the other whole."""
    first = unique_name("swa")
    second = next(n for n in (unique_name("swb") for _ in range(5000))
                  if swarmvip.vrid(n) == swarmvip.vrid(first))
    prefix = harness.subnet.prefixlen
    try:
        a = swarm.up(manager, swarm.SwarmOptions(
            name=first, port=8081, lb=1, vip=f"{harness.free_address(5)}/{prefix}"), 2, wait=60)
        b = swarm.up(manager, swarm.SwarmOptions(
            name=second, port=8082, lb=2, vip=f"{harness.free_address(6)}/{prefix}"), 2, wait=60)
        assert a.ready
        assert b.ready
        ids = {swarm.find_services(manager, n)["vip"].labels[swarmvip.VRID_LABEL]
               for n in (first, second)}
        assert len(ids) == 2
        assert len(backends(b.urls[0], harness.subnet, 8)) == 2
        code, output = cli(harness.manager.docker_host, "down", "--name", second)
        assert code == 0, output
        # the manager forgets the tasks once stopped; each node removes their containers
        assert wait_until(lambda: nothing_left(harness, manager, second), timeout=30)
        assert len(backends(a.urls[0], harness.subnet, 8)) == 2
        assert swarm.wait_ready(manager, first, 2, timeout=10)
    finally:
        swarm.down(manager, first)
        swarm.down(manager, second)
    assert wait_until(lambda: nothing_left(harness, manager, first), timeout=30)


def _keyring() -> bytes:
    return json.dumps([base64.b64encode(secrets.token_bytes(32)).decode()]).encode()


def test_members_without_the_key_never_become_backends(harness: Harness,
                                                       manager: DockerClient) -> None:
    """On the cluster's own network, joining its load balancers: one web service with another
    key, one with no key at all. Neither is ever served."""
    name = unique_name("swk")
    made: list[str] = []
    foreign: SecretRef | None = None
    try:
        up = swarm.up(manager, swarm.SwarmOptions(name=name, port=8083, lb=1), 2, wait=60)
        assert up.ready
        web = swarm.find_services(manager, name)["web"]
        foreign = create_secret(manager, f"lkt-{name}-foreign", _keyring(),
                                {"org.layerkit.test": name})
        base_env = {k: v for k, v in web.env.items() if k != "LAYERKIT_SERF_KEYRING"}
        for suffix, key in (("otherkey", foreign), ("nokey", None)):
            env = dict(base_env)
            if key is not None:
                env["LAYERKIT_SERF_KEYRING"] = "/run/secrets/serf-keyring"
            made.append(create_service(manager, ServiceRequest(
                name=f"lkt-{name}-{suffix}", image=f"layerkit/webapp:{__version__}",
                labels={"org.layerkit.test": name}, env=env, replicas=2,
                networks=(f"layerkit-{name}",),
                secrets=(SecretRef(key.secret_id, key.secret_name, "serf-keyring"),)
                if key else ())))

        def intruders() -> set[str]:
            return {a for sid in made for t in service_tasks(manager, sid)
                    if t.state == "running" for a in t.addresses}

        assert wait_until(lambda: len(intruders()) == 4, timeout=60)
        seen: set[str] = set()
        for _ in range(8):  # several of Serf's join retries and handler runs
            seen |= backends(up.urls[0], harness.subnet, 10)
            time.sleep(1)
        assert len(seen) == 2
        assert not seen & intruders()
    finally:
        for sid in made:
            remove_service(manager, sid)
        swarm.down(manager, name)
        if foreign is not None:
            wait_until(lambda: not tasks_of(manager, set(made)), timeout=30)
            remove_secret(manager, foreign.secret_id)


def test_bad_input_is_one_line_and_leaves_nothing(harness: Harness,
                                                  manager: DockerClient) -> None:
    host = harness.manager.docker_host
    name = unique_name("swx")
    cases = [
        (["--lb", "4"], "more than the 3 active nodes"),
        (["--vip", "10.255.0.9/24"], "outside the nodes' network"),
        (["--vip", "not-an-address"], "not an IPv4 address"),
        (["--port", "0"], "fixed port"),
    ]
    for extra, words in cases:
        code, output = cli(host, "up", "--swarm", "--name", name, "--wait", "0", *extra)
        assert code == 2, output
        assert words in output
        assert "Traceback" not in output
    assert nothing_left(harness, manager, name)


def test_an_engine_that_is_no_manager_is_refused(docker_client: DockerClient) -> None:
    """The machine's own engine is not in swarm mode: refused before anything is made."""
    env_host = os.environ.get("DOCKER_HOST", "")
    code, output = cli(env_host, "up", "--swarm", "--name", unique_name("swn"), "--wait", "0")
    assert code == 2, output
    assert "not a Swarm manager" in output


def test_a_name_used_by_a_single_engine_cluster_is_refused(harness: Harness,
                                                          manager: DockerClient) -> None:
    name = unique_name("swm")
    try:
        cluster.up(manager, cluster.ClusterOptions(name=name, port=0), 0, wait=0)
        code, output = cli(harness.manager.docker_host, "up", "--swarm", "--name", name)
        assert code == 2, output
        assert "single-engine" in output
        assert not swarm.find_services(manager, name)
    finally:
        cluster.down(manager, name)


def test_a_name_used_by_a_swarm_cluster_is_refused_on_one_engine(harness: Harness,
                                                                 manager: DockerClient) -> None:
    name = unique_name("swo")
    try:
        assert swarm.up(manager, swarm.SwarmOptions(name=name, port=8086, lb=1), 1,
                        wait=0).web == 1
        code, output = cli(harness.manager.docker_host, "up", "--name", name, "--port", "0")
        assert code == 2, output
        assert "Swarm cluster" in output
    finally:
        swarm.down(manager, name)
