"""Insiders kept out: the web app's user against the key and the agent, and an agent holding the
key that advertises addresses no backend may have. Real containers, HAProxy and Serf."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from layerkit.cluster import cluster
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    create_network,
    exec_in,
    get_file,
    inspect_container,
    labelled_containers,
    labelled_networks,
    put_files,
)
from tests.engine.cluster_helpers import (
    SERF_MEMBERS,
    ClusterImages,
    backends,
    options,
    unique_name,
    url_of,
    wait_until,
)

EVENT_LOG = "/var/log/layerkit/events.log"


@pytest.fixture(scope="module")
def running(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    name = unique_name()
    try:
        assert cluster.up(docker_client, options(cluster_images, name), 1).ready
        yield name
    finally:
        cluster.down(docker_client, name)


def _one(client: DockerClient, name: str, role: str) -> ContainerInfo:
    (found,) = labelled_containers(client, cluster.labels(name, role))
    return found


def test_the_web_apps_user_can_neither_read_the_key_nor_use_the_agent(
        docker_client: DockerClient, running: str) -> None:
    web = _one(docker_client, running, "web")
    for path in (cluster.KEYRING_PATH, "/run/layerkit/serf-rpc-token", "/run/layerkit/serf.json"):
        code, output = exec_in(docker_client, web.id, ["cat", path], user="app")
        assert code != 0, f"app read {path}"
        assert "Permission denied" in output
    for argv in (["serf", "members"], ["serf", "keys", "-list"],
                 ["serf", "keys", "-install", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
                 SERF_MEMBERS):
        code, output = exec_in(docker_client, web.id, argv, user="app")
        assert code != 0, f"app ran {argv}: {output}"
    # the agent answers only with the token: root without it is refused too, with it served
    assert exec_in(docker_client, web.id, ["serf", "members"])[0] != 0
    code, output = exec_in(docker_client, web.id, SERF_MEMBERS)
    assert code == 0, output
    assert running in output


def _outsider(client: DockerClient, name: str, image: str, keyring: bytes,
              extra_network: str | None = None) -> str:
    """A Serf agent holding the cluster's key on its network (and `extra_network`); it starts
    once its config is handed in, so that the config can name its own addresses."""
    created = client.containers.create(
        image,
        ["sh", "-c", "while [ ! -s /etc/layerkit/outsider.json ]; do sleep 0.2; done; "
                     "exec serf agent -config-file=/etc/layerkit/outsider.json"],
        network=cluster.network_name(name), labels=cluster.labels(name, "test-outsider"),
        user="root")
    if extra_network is not None:
        client.networks.get(extra_network).connect(created)
    created.start()
    put_files(client, str(created.id), {cluster.KEYRING_PATH: (keyring, 0o600)})
    return str(created.id)


def _advertise(client: DockerClient, ref: str, node: str, address: str) -> None:
    config = {"node_name": node, "bind": "0.0.0.0:7946", "advertise": f"{address}:7946",
              "tags": {"role": "web"}, "retry_join": ["lb"], "retry_interval": "1s",
              "keyring_file": cluster.KEYRING_PATH, "log_level": "warn"}
    put_files(client, ref, {"/etc/layerkit/outsider.json": (json.dumps(config).encode(), 0o600)})


def test_an_agent_with_the_key_cannot_advertise_a_forbidden_address(
        docker_client: DockerClient, running: str, cluster_images: ClusterImages) -> None:
    lb, web = _one(docker_client, running, "lb"), _one(docker_client, running, "web")
    net = cluster.network_name(running)
    (network,) = labelled_networks(docker_client, cluster.labels(running, "network"))
    other = unique_name("lkt-other")
    create_network(docker_client, other, cluster.labels(running, "test-network"))
    keyring = get_file(docker_client, lb.id, cluster.KEYRING_PATH)
    wanted = {"bad-loopback": "127.0.0.1", "bad-gateway": network.gateways[0],
              "bad-linklocal": "169.254.7.7", "bad-lb": lb.addresses[net],
              "bad-duplicate": web.addresses[net], "bad-outside": ""}
    refs = {node: _outsider(docker_client, running, cluster_images.web, keyring,
                            other if node == "bad-outside" else None) for node in wanted}
    wanted["bad-outside"] = inspect_container(docker_client, refs["bad-outside"]).addresses[other]
    for node, address in wanted.items():
        _advertise(docker_client, refs[node], node, address)

    def log() -> list[dict[str, object]]:
        text = get_file(docker_client, lb.id, EVENT_LOG).decode()
        return [json.loads(ln) for ln in text.splitlines() if '"outcome"' in ln]

    def rejected() -> dict[str, str]:
        found = {}
        for record in log():
            for line in record.get("rejected") or []:  # type: ignore[attr-defined]
                node, _, reason = str(line).partition(": ")
                found[node.strip("'")] = reason
        return found

    assert wait_until(lambda: set(wanted) <= set(rejected()), timeout=30), rejected()
    reasons = rejected()
    assert "loopback" in reasons["bad-loopback"]
    assert "gateway" in reasons["bad-gateway"]
    assert "link-local" in reasons["bad-linklocal"]
    assert "load balancer's own" in reasons["bad-lb"]
    assert "another member's" in reasons["bad-duplicate"]
    assert "outside the cluster's network" in reasons["bad-outside"]
    # none of them was ever a backend: every change is logged with the backends it left
    assert not any(str(b).startswith("bad-") for r in log()
                   for b in r.get("backends") or [])  # type: ignore[attr-defined]
    config = get_file(docker_client, lb.id, "/etc/haproxy/haproxy.cfg").decode()
    assert "bad-" not in config
    view = cluster.lb_view(docker_client, lb)
    assert view is not None
    assert [s.name for s in view.servers if s.name.startswith("bad-")] == []
    assert backends(url_of(docker_client, running), 10) == {web.addresses[net]}
