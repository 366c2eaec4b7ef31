"""Faults absorbed: HAProxy's worker or master killed, Serf killed, the load balancer's PID 1
killed, the load balancer stopped and started. Each under a bounded request loop: the cluster
serves again by itself, requests fail only between the fault and the recovery, none after."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from layerkit.cluster import cluster
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    exec_in,
    labelled_containers,
    start_container,
    stop_container,
)
from tests.engine.cluster_helpers import (
    ClusterImages,
    LoadLoop,
    options,
    unique_name,
    url_of,
    wait_until,
)

WEB = 2
KILL_HAPROXY = """
import os, signal, sys
procs = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    except OSError:
        continue
    if status["Name"].strip() == "haproxy":
        procs[int(pid)] = int(status["PPid"])
masters = [p for p, parent in procs.items() if parent not in procs]
victims = masters if sys.argv[1] == "master" else [p for p, parent in procs.items()
                                                   if parent in masters]
for pid in victims:
    os.kill(pid, signal.SIGKILL)
print(len(victims))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def running(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    """A fixed port: with port 0 the engine would pick a new one at each restart."""
    name = unique_name()
    try:
        assert cluster.up(docker_client, options(cluster_images, name, port=_free_port()),
                          WEB).ready
        yield name
    finally:
        cluster.down(docker_client, name)


def _lb(client: DockerClient, name: str) -> ContainerInfo:
    (found,) = labelled_containers(client, cluster.labels(name, "lb"))
    return found


def _kill_haproxy(which: str) -> Callable[[DockerClient, ContainerInfo], None]:
    def fault(client: DockerClient, lb: ContainerInfo) -> None:
        code, output = exec_in(client, lb.id, ["python3", "-c", KILL_HAPROXY, which])
        assert code == 0, output
        assert int(output) >= 1
    return fault


def _kill_serf(client: DockerClient, lb: ContainerInfo) -> None:
    assert exec_in(client, lb.id, ["s6-svc", "-k", "/etc/services.d/serf"])[0] == 0


def _kill_pid1(client: DockerClient, lb: ContainerInfo) -> None:
    """A crash of the container's init, from the host (a `docker kill` is a manual stop to
    the restart policy): the engine restarts it."""
    pid = int(client.api.inspect_container(lb.id)["State"]["Pid"])
    if not os.path.exists(f"/proc/{pid}"):
        pytest.skip("the engine runs on another host: its PID 1 cannot be killed from here")
    os.kill(pid, signal.SIGKILL)


def _stop_start(client: DockerClient, lb: ContainerInfo) -> None:
    stop_container(client, lb.id)
    start_container(client, lb.id)


FAULTS = {"haproxy-worker": _kill_haproxy("worker"), "haproxy-master": _kill_haproxy("master"),
          "serf": _kill_serf, "pid1": _kill_pid1, "stop-start": _stop_start}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_load_balancer_recovers_by_itself(docker_client: DockerClient, running: str,
                                              fault: str) -> None:
    url = url_of(docker_client, running)
    # the module's cluster serves fully before the loop starts (an earlier fault may still heal)
    assert cluster.wait_ready(docker_client, running, WEB, timeout=60)
    with LoadLoop(url, interval=0.01, max_seconds=60, max_requests=20_000) as loop:
        assert wait_until(lambda: loop.ok > 20, timeout=10)
        started = time.monotonic()
        FAULTS[fault](docker_client, _lb(docker_client, running))
        assert cluster.wait_ready(docker_client, running, WEB, timeout=30)
        ok_before, failed_before = loop.ok, len(loop.failures)
        assert wait_until(lambda: loop.ok > ok_before + 50, timeout=20)
        recovered = time.monotonic()
        after = loop.failures[failed_before:]
    assert url_of(docker_client, running) == url  # published where it was
    assert after == [], after[:5]
    assert all(started <= t <= recovered for t in loop.failed_at)
    if fault in ("serf", "haproxy-worker", "haproxy-master"):
        # the servers stay while Serf rejoins; connections wait in the backlog of the sockets
        # the haproxy service keeps while HAProxy restarts: at most the one request in flight
        # on a killed process fails
        assert len(loop.failures) <= 1, loop.failures[:5]
