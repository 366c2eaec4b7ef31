"""Membership edge cases: start order, agents without the key, hostile names; side by side; down."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from layerkit.cluster import cluster, launch
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    create_network,
    exec_in,
    get_file,
    inspect_container,
    kill_container,
    labelled_containers,
    labelled_networks,
    labelled_volumes,
    put_files,
    remove_container,
    stop_container,
)
from layerkit.errors import EngineError
from tests.engine.cluster_helpers import (
    SERF_MEMBERS,
    ClusterImages,
    backends,
    options,
    unique_name,
    url_of,
    wait_until,
)


@pytest.fixture
def cluster_name(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    name = unique_name()
    try:
        yield name
    finally:
        cluster.down(docker_client, name)


def lb(client: DockerClient, name: str) -> ContainerInfo:
    (found,) = labelled_containers(client, cluster.labels(name, "lb"))
    return found


def test_web_apps_started_before_the_load_balancer_join_it(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    opts = options(cluster_images, cluster_name)
    made = cluster.new_secrets()
    create_network(docker_client, cluster.network_name(cluster_name),
                   cluster.labels(cluster_name, "network"))
    launch.launch_webs(docker_client, opts, launch.member_files(made), 2)
    webs = labelled_containers(docker_client, cluster.labels(cluster_name, "web"))
    # their agents run and keep retrying to join `lb`, which does not exist yet
    assert wait_until(lambda: all(exec_in(docker_client, w.id, SERF_MEMBERS)[0] == 0
                                  for w in webs),
                      timeout=20)
    launch.launch(docker_client, launch.lb_spec(opts), launch.member_files(made))
    assert cluster.wait_ready(docker_client, cluster_name, 2, timeout=30)
    assert len(backends(url_of(docker_client, cluster_name), 20)) == 2


def _events(client: DockerClient, balancer: ContainerInfo) -> bytes:
    return get_file(client, balancer.id, "/var/log/layerkit/events.log")


def _serf_container(client: DockerClient, name: str, image: str, config: dict[str, object],
                    keyring: bytes | None) -> str:
    """A bare Serf agent on the cluster's network, as an outsider would run one."""
    container = client.containers.create(
        image,
        ["serf", "agent", "-config-file=/etc/layerkit/outsider.json"],
        network=cluster.network_name(name), labels=cluster.labels(name, "test-outsider"))
    files = {"/etc/layerkit/outsider.json": (json.dumps(config).encode(), 0o600)}
    if keyring is not None:
        files[cluster.KEYRING_PATH] = (keyring, 0o600)
    put_files(client, str(container.id), files)
    container.start()
    return str(container.id)


def _outsider_config(node: str, keyring: bool, **tags: str) -> dict[str, object]:
    config: dict[str, object] = {
        "node_name": node, "bind": "0.0.0.0:7946", "tags": {"role": "web", **tags},
        "retry_join": ["lb"], "retry_interval": "1s", "log_level": "warn"}
    if keyring:
        config["keyring_file"] = cluster.KEYRING_PATH
    return config


def _members(client: DockerClient, name: str) -> list[str]:
    view = cluster.lb_view(client, lb(client, name))
    assert view is not None
    return [m.name for m in view.members]


def test_agent_without_the_key_never_becomes_a_backend(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    cluster.up(docker_client, options(cluster_images, cluster_name), 1)
    outsider = _serf_container(docker_client, cluster_name, cluster_images.web,
                               _outsider_config("outsider-1", keyring=False), None)
    try:
        # it keeps trying to join for a while; it never shows up anywhere on the inside
        assert not wait_until(lambda: any("outsider" in m for m in
                                          _members(docker_client, cluster_name)), timeout=8)
        config = get_file(docker_client, lb(docker_client, cluster_name).id,
                          "/etc/haproxy/haproxy.cfg").decode()
        assert "outsider" not in config
        assert len(backends(url_of(docker_client, cluster_name), 10)) == 1
    finally:
        remove_container(docker_client, outsider)


HOSTILE = [
    ("web-x\n    server evil 10.9.9.9:80 check\nlisten pwn", {}),
    ("web-y", {"port": "3000 check\n    server evil2 10.9.9.8:80"}),
    ('web"z ${HOME}', {}),
]


def test_hostile_member_names_never_reach_haproxy_cfg(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    cluster.up(docker_client, options(cluster_images, cluster_name), 1)
    balancer = lb(docker_client, cluster_name)
    # an insider gone bad holds the key
    keyring = get_file(docker_client, balancer.id, cluster.KEYRING_PATH)
    hostile = [_serf_container(docker_client, cluster_name, cluster_images.web,
                               _outsider_config(node, keyring=True, **tags), keyring)
               for node, tags in HOSTILE]
    try:
        assert wait_until(lambda: len(_members(docker_client, cluster_name)) == 2 + len(HOSTILE),
                          timeout=20)
        assert wait_until(lambda: b"rejected" in _events(docker_client, balancer)
                          and b"web-y" in _events(docker_client, balancer), timeout=10)
        config = get_file(docker_client, balancer.id, "/etc/haproxy/haproxy.cfg").decode()
        assert "evil" not in config
        assert "10.9.9" not in config
        assert "${HOME}" not in config
        servers = [ln for ln in config.splitlines() if ln.strip().startswith("server ")]
        assert len(servers) == 1
        assert len(backends(url_of(docker_client, cluster_name), 10)) == 1
    finally:
        for container in hostile:
            remove_container(docker_client, container)


def test_two_clusters_stay_separate_and_down_leaves_nothing(docker_client: DockerClient,
                                                            cluster_images: ClusterImages) -> None:
    names = [unique_name(), unique_name()]
    try:
        for name in names:
            assert cluster.up(docker_client, options(cluster_images, name), 2).ready
        seen = [backends(url_of(docker_client, name), 20) for name in names]
        assert [len(s) for s in seen] == [2, 2]
        assert not seen[0] & seen[1]
        for name in names:
            assert all(m.startswith(f"{name}-") for m in _members(docker_client, name))
        cluster.down(docker_client, names[0])
        project = {cluster.PROJECT_LABEL: names[0]}
        assert labelled_containers(docker_client, project) == []
        assert labelled_networks(docker_client, project) == []
        assert labelled_volumes(docker_client, project) == []
        assert backends(url_of(docker_client, names[1]), 10) == seen[1]
    finally:
        for name in names:
            cluster.down(docker_client, name)


def test_failed_and_left_members_are_forgotten(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    """A killed app (failed: no leave) and a stopped one (left) stop being listed once the
    cluster's forget time has passed (plus Serf's 15 s reap period); the others stay."""
    opts = options(cluster_images, cluster_name, forget_after=3)
    assert cluster.up(docker_client, opts, 3).ready
    webs = labelled_containers(docker_client, cluster.labels(cluster_name, "web"))
    killed, stopped, kept = webs
    names = {c.id: exec_in(docker_client, c.id, ["hostname"])[1].strip() for c in webs}
    kill_container(docker_client, killed.id)
    stop_container(docker_client, stopped.id, timeout=10)

    def listed(container: ContainerInfo) -> bool:
        return any(m.startswith(f"{names[container.id]}-")
                   for m in _members(docker_client, cluster_name))

    assert listed(kept)
    assert wait_until(lambda: not listed(killed) and not listed(stopped), timeout=60)
    assert listed(kept)
    assert len(backends(url_of(docker_client, cluster_name), 10)) == 1
    # `scale` makes new apps with the setting `up` was given (kept in the network's labels)
    assert cluster.scale(docker_client, cluster_name, 4).ready
    now = labelled_containers(docker_client, cluster.labels(cluster_name, "web"))
    assert {c.id for c in now} - {c.id for c in webs}
    for container in now:
        assert "LAYERKIT_SERF_FORGET=3" in inspect_container(docker_client, container.id).env


def _interrupt_at(stage: str) -> Callable[[str], None]:
    def progress(what: str) -> None:
        if stage in what:
            raise KeyboardInterrupt
    return progress


def test_an_interrupted_up_removes_exactly_what_it_made(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    """Ctrl-C once the load balancer runs: the network and the load balancer go; a volume that
    carries the cluster's label but that `up` did not make stays."""
    volume = docker_client.api.create_volume(
        name=unique_name("lkt-vol"), labels=cluster.labels(cluster_name, "test-volume"))["Name"]
    try:
        with pytest.raises(KeyboardInterrupt):
            cluster.up(docker_client, options(cluster_images, cluster_name), 3, wait=0,
                       on_progress=_interrupt_at("web apps"))
        project = {cluster.PROJECT_LABEL: cluster_name}
        assert labelled_containers(docker_client, project) == []
        assert labelled_networks(docker_client, project) == []
        assert [v.name for v in labelled_volumes(docker_client, project)] == [volume]
    finally:
        docker_client.api.remove_volume(volume, force=True)


def test_a_failed_up_leaves_what_it_did_not_make(
        docker_client: DockerClient, cluster_name: str, cluster_images: ClusterImages) -> None:
    """The load balancer's name is taken by someone else's container: `up` fails, removes its
    network and leaves that container alone."""
    opts = options(cluster_images, cluster_name)
    squatter = docker_client.containers.create(cluster_images.web, ["true"],
                                               name=launch.lb_spec(opts).name)
    try:
        with pytest.raises(EngineError):
            cluster.up(docker_client, opts, 1, wait=0)
        assert labelled_networks(docker_client, {cluster.PROJECT_LABEL: cluster_name}) == []
        squatter.reload()
        assert squatter.status == "created"
    finally:
        squatter.remove(force=True)
