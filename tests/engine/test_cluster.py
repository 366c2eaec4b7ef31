"""The dynamic cluster against the real engine, HAProxy and Serf (one cluster for the module).

HTTP goes only to the ports the cluster publishes on 127.0.0.1; every load loop is bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from layerkit.agent import handler
from layerkit.cli.app import app
from layerkit.cluster import cluster, ports
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    exec_in,
    get_file,
    inspect_container,
    kill_container,
    labelled_containers,
    put_files,
    remove_container,
)
from tests.conftest import IMAGES
from tests.engine.cluster_helpers import (
    ClusterImages,
    LoadLoop,
    backends,
    options,
    unique_name,
    url_of,
    wait_until,
)

HANDLER = ["python3", "-m", "layerkit.agent.handler"]


@pytest.fixture(scope="module")
def running(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    """A cluster of three web apps, removed at the end whatever happened."""
    name = unique_name()
    try:
        result = cluster.up(docker_client, options(cluster_images, name), 3)
        assert result.ready, "three web apps did not all serve within the wait"
        yield name
    finally:
        cluster.down(docker_client, name)


def webs(client: DockerClient, name: str) -> list[ContainerInfo]:
    return [c for c in labelled_containers(client, cluster.labels(name, "web"))
            if c.status == "running"]


def lb(client: DockerClient, name: str) -> ContainerInfo:
    (found,) = labelled_containers(client, cluster.labels(name, "lb"))
    return found


def test_up_three_distinct_backends_answer(docker_client: DockerClient, running: str) -> None:
    assert len(backends(url_of(docker_client, running))) == 3


def test_scale_to_six_then_two(docker_client: DockerClient, running: str) -> None:
    url = url_of(docker_client, running)
    result = cluster.scale(docker_client, running, 6)
    assert result.ready
    assert len(backends(url, 40)) == 6
    with LoadLoop(url, max_seconds=60) as loop:  # four graceful leaves at once
        result = cluster.scale(docker_client, running, 2)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 20
    assert result.ready
    assert len(backends(url, 20)) == 2
    assert len(webs(docker_client, running)) == 2


def test_scale_is_idempotent_and_restores_removed(docker_client: DockerClient,
                                                  running: str) -> None:
    again = cluster.scale(docker_client, running, 2)
    assert again.started == ()
    assert again.removed == ()
    remove_container(docker_client, webs(docker_client, running)[0].id)
    restored = cluster.scale(docker_client, running, 2)
    assert len(restored.started) == 1
    assert restored.ready
    assert len(backends(url_of(docker_client, running), 20)) == 2


def test_kill_under_load_fails_no_request(docker_client: DockerClient, running: str) -> None:
    cluster.scale(docker_client, running, 3)
    url = url_of(docker_client, running)
    victim = webs(docker_client, running)[0]
    victim_ip = inspect_container(docker_client, victim.id).addresses[
        cluster.network_name(running)]
    with LoadLoop(url, max_seconds=30) as loop:
        assert wait_until(lambda: loop.last_seen(victim_ip) is not None, timeout=10)
        kill_container(docker_client, victim.id)
        killed_at = time.monotonic()
        # HAProxy stops sending it traffic: its server is DOWN (health check) or gone (Serf)
        assert wait_until(lambda: not _in_rotation(docker_client, running, victim_ip),
                          timeout=10, interval=0.1)
        out_after = time.monotonic() - killed_at
        ok_before = loop.ok
        assert wait_until(lambda: loop.ok > ok_before + 50, timeout=10)
    assert loop.failures == [], loop.failures[:5]
    assert out_after < 3.5


def _in_rotation(client: DockerClient, name: str, ip: str) -> bool:
    view = cluster.lb_view(client, lb(client, name))
    assert view is not None
    return any(s.address.startswith(f"{ip}:") and s.status.startswith("UP")
               for s in view.servers)


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connections"])
def test_twenty_reloads_under_load_fail_no_request(docker_client: DockerClient, running: str,
                                                   keep_alive: bool) -> None:
    cluster.scale(docker_client, running, 3)
    balancer = lb(docker_client, running)
    with LoadLoop(url_of(docker_client, running), keep_alive=keep_alive, interval=0.005,
                  max_seconds=40) as loop:
        assert wait_until(lambda: loop.ok > 20, timeout=10)
        for _ in range(20):
            code, output = exec_in(docker_client, balancer.id,
                                   ["s6-svc", "-2", "/etc/services.d/haproxy"])
            assert code == 0, output
            time.sleep(0.3)
        time.sleep(0.5)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 200


def test_status_shows_three_views_and_no_secret(docker_client: DockerClient,
                                                running: str) -> None:
    result = CliRunner().invoke(app, ["status", "--name", running, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == "layerkit/status/v1"
    assert {c["role"] for c in doc["containers"]} == {"lb", "web"}
    assert {m["role"] for m in doc["members"] if m["status"] == "alive"} == {"lb", "web"}
    assert all(b["status"].startswith("UP") for b in doc["backends"])
    key = json.loads(get_file(docker_client, lb(docker_client, running).id,
                              cluster.KEYRING_PATH))[0]
    password = cluster.stats_password(docker_client, running)
    table = CliRunner().invoke(app, ["status", "--name", running])
    for text in (result.output, table.output):
        assert key not in text
        assert password not in text
    inspect = json.dumps(docker_client.api.inspect_container(lb(docker_client, running).id))
    assert key not in inspect
    assert password not in inspect


def test_crashed_parts_come_back(docker_client: DockerClient, running: str) -> None:
    """s6 restarts a dead Serf agent; the engine restarts a container whose PID 1 exited."""
    target = webs(docker_client, running)[0]
    code, _ = exec_in(docker_client, target.id, ["s6-svc", "-k", "/etc/services.d/serf"])
    assert code == 0
    code, _ = exec_in(docker_client, target.id, ["s6-svscanctl", "-t", "/etc/services.d"])

    def restarted() -> bool:
        now = inspect_container(docker_client, target.id)
        return now.restarts >= 1 and now.status == "running"

    assert wait_until(restarted, timeout=30)
    assert cluster.wait_ready(docker_client, running, len(webs(docker_client, running)),
                              timeout=30)
    # the load balancer too: it comes back, rejoins the web apps and serves them all
    balancer = lb(docker_client, running)
    exec_in(docker_client, balancer.id, ["s6-svscanctl", "-t", "/etc/services.d"])

    def lb_restarted() -> bool:
        now = inspect_container(docker_client, balancer.id)
        return now.restarts >= 1 and now.status == "running"

    assert wait_until(lb_restarted, timeout=30)
    count = len(webs(docker_client, running))
    assert cluster.wait_ready(docker_client, running, count, timeout=30)
    assert len(backends(url_of(docker_client, running), 6 * count)) == count


def test_scale_recreates_a_removed_load_balancer(docker_client: DockerClient,
                                                 running: str) -> None:
    """Published where it was: the ports `up` chose for port 0 lie below the kernel's
    ephemeral range (a restarted load balancer never finds them held by a client's source
    port) and are kept for the recreated one."""
    before = cluster.endpoints(docker_client, running)
    for url in (before.url, before.stats_url):
        assert url is not None
        assert int(url.split(":")[2].split("/")[0]) < ports.ephemeral_start()
    remove_container(docker_client, lb(docker_client, running).id)
    result = cluster.scale(docker_client, running, 2)
    assert result.ready
    assert cluster.endpoints(docker_client, running) == before
    assert len(backends(url_of(docker_client, running), 20)) == 2


def test_invalid_render_keeps_the_running_config(docker_client: DockerClient,
                                                 running: str) -> None:
    """A render that `haproxy -c` refuses is logged and changes nothing; fixed, it goes in."""
    cluster.scale(docker_client, running, 2)
    balancer = lb(docker_client, running)
    template = (IMAGES / "haproxy" / "haproxy.cfg.j2").read_bytes()
    before = get_file(docker_client, balancer.id, "/etc/haproxy/haproxy.cfg")
    put_files(docker_client, balancer.id, {"/etc/layerkit/haproxy.cfg.j2":
              (template + b"\nbackend broken\n    no-such-keyword 1\n", 0o644)})
    try:
        cluster.scale(docker_client, running, 3, wait=0)
        assert wait_until(lambda: b'"invalid"' in get_file(docker_client, balancer.id,
                                                           "/var/log/layerkit/events.log"),
                          timeout=20)
        assert get_file(docker_client, balancer.id, "/etc/haproxy/haproxy.cfg") == before
        assert len(backends(url_of(docker_client, running), 10)) == 2
    finally:
        put_files(docker_client, balancer.id, {"/etc/layerkit/haproxy.cfg.j2": (template, 0o644)})
    exec_in(docker_client, balancer.id, ["python3", "-m", "layerkit.agent.handler", "--release"])
    assert cluster.wait_ready(docker_client, running, 3, timeout=20)


def _outcomes(client: DockerClient, balancer: ContainerInfo) -> list[dict[str, object]]:
    text = get_file(client, balancer.id, "/var/log/layerkit/events.log").decode()
    return [r for r in map(json.loads, text.splitlines()) if r.get("kind") == "outcome"]


def test_membership_changes_go_live_without_a_reload(docker_client: DockerClient,
                                                     running: str) -> None:
    cluster.scale(docker_client, running, 2)
    balancer = lb(docker_client, running)
    before = len(_outcomes(docker_client, balancer))
    with LoadLoop(url_of(docker_client, running), keep_alive=True, max_seconds=60) as loop:
        assert cluster.scale(docker_client, running, 4).ready
        assert cluster.scale(docker_client, running, 2).ready
    assert loop.failures == [], loop.failures[:5]
    actions = [r["action"] for r in _outcomes(docker_client, balancer)[before:]]
    assert "runtime" in actions
    assert "reload" not in actions, actions
    # haproxy.cfg is kept in step: what a restart would start with is what runs
    config = get_file(docker_client, balancer.id, "/etc/haproxy/haproxy.cfg").decode()
    view = cluster.lb_view(docker_client, balancer)
    assert view is not None
    assert {s.name for s in view.servers} == handler.server_names(config)


def test_a_reload_that_fails_once_is_retried(docker_client: DockerClient, running: str) -> None:
    """A template change needs a reload; s6-svc fails the first time; HAProxy still ends with
    the new config and the right servers."""
    cluster.scale(docker_client, running, 2)
    balancer = lb(docker_client, running)
    template = (IMAGES / "haproxy" / "haproxy.cfg.j2").read_bytes()
    before = len(_outcomes(docker_client, balancer))
    failing_once = (b"#!/bin/sh\n[ -e /run/s6-failed-once ] || { touch /run/s6-failed-once; "
                    b"echo injected failure >&2; exit 111; }\nexec /usr/bin/s6-svc \"$@\"\n")
    put_files(docker_client, balancer.id, {
        "/usr/local/bin/s6-svc": (failing_once, 0o755),
        "/etc/layerkit/haproxy.cfg.j2": (template.replace(b"retries 3", b"retries 2"), 0o644)})
    try:
        code, output = exec_in(docker_client, balancer.id, HANDLER)
        assert code == 0, output
        # this run, or lbwatch's periodic one if it came first, made the reload
        (done,) = [r for r in _outcomes(docker_client, balancer)[before:]
                   if r["action"] == "reload"]
        # the first attempt failed; a later one took (the second, unless a loaded machine made
        # the new worker slower than the settle time)
        assert int(str(done["attempts"])) >= 2, done
        assert cluster.wait_ready(docker_client, running, 2, timeout=10)
        assert b"retries 2" in get_file(docker_client, balancer.id, "/etc/haproxy/haproxy.cfg")
    finally:
        exec_in(docker_client, balancer.id, ["rm", "-f", "/usr/local/bin/s6-svc"])
        put_files(docker_client, balancer.id, {"/etc/layerkit/haproxy.cfg.j2": (template, 0o644)})
        exec_in(docker_client, balancer.id, HANDLER)
    assert cluster.wait_ready(docker_client, running, 2, timeout=10)


def test_the_load_balancers_serf_restarted_under_load_fails_no_request(
        docker_client: DockerClient, running: str) -> None:
    cluster.scale(docker_client, running, 3)
    balancer = lb(docker_client, running)
    with LoadLoop(url_of(docker_client, running), interval=0.01, max_seconds=40) as loop:
        assert wait_until(lambda: loop.ok > 20, timeout=10)
        for _ in range(3):
            code, _ = exec_in(docker_client, balancer.id,
                              ["s6-svc", "-k", "/etc/services.d/serf"])
            assert code == 0
            time.sleep(3)
        assert cluster.wait_ready(docker_client, running, 3, timeout=20)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 100  # requests went on through the three restarts
