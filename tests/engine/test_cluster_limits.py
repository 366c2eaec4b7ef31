"""Limits and exposure of a running cluster, and sessions that stick: memory, pids and log
rotation in `docker inspect`, HAProxy's workers without root, the stats page only through its
published port, a cookie that keeps a client on its web app while servers come and go."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator

import pytest

from layerkit.cluster import cluster
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerInfo,
    exec_in,
    labelled_containers,
    stop_container,
)
from tests.engine.cluster_helpers import ClusterImages, host_port, options, unique_name, url_of

MEMORY, PIDS = "200m", 300


@pytest.fixture(scope="module")
def running(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    name = unique_name()
    try:
        opts = options(cluster_images, name, memory=MEMORY, pids=PIDS, log_size="5m",
                       log_files=2)
        assert cluster.up(docker_client, opts, 2).ready
        yield name
    finally:
        cluster.down(docker_client, name)


def _members(client: DockerClient, name: str, role: str) -> list[ContainerInfo]:
    return [c for c in labelled_containers(client, cluster.labels(name, role)) if c.running]


def test_every_container_has_its_limits_and_scale_keeps_them(docker_client: DockerClient,
                                                             running: str) -> None:
    assert cluster.scale(docker_client, running, 3).ready  # a new web app, made by `scale`
    every = labelled_containers(docker_client, {cluster.PROJECT_LABEL: running})
    assert len(every) == 4
    for container in every:
        host = docker_client.api.inspect_container(container.id)["HostConfig"]
        assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
            200 << 20, 200 << 20, PIDS), container.name
        assert host["LogConfig"] == {"Type": "json-file",
                                     "Config": {"max-file": "2", "max-size": "5m"}}


PROCESSES = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    if status["Name"].strip() == "haproxy":
        print(status["PPid"].strip(), pid, status["Uid"].split()[0])
"""


def test_haproxy_workers_run_without_root(docker_client: DockerClient, running: str) -> None:
    (lb,) = _members(docker_client, running, "lb")
    code, output = exec_in(docker_client, lb.id, ["python3", "-c", PROCESSES])
    assert code == 0, output
    rows = [line.split() for line in output.splitlines()]
    pids = {pid for _, pid, _ in rows}
    masters = [uid for ppid, _, uid in rows if ppid not in pids]
    workers = [uid for ppid, _, uid in rows if ppid in pids]
    assert masters == ["0"]  # keeps root to re-exec on a reload
    assert workers
    assert "0" not in workers


def _stats_status(url: str, password: str) -> int:
    host, port = host_port(url)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    try:
        conn.request("GET", "/stats", headers={"Authorization": f"Basic {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


FROM_INSIDE = """
import base64, sys, urllib.request
request = urllib.request.Request("http://lb:8404/stats", headers={
    "Authorization": "Basic " + base64.b64encode(sys.argv[1].encode()).decode()})
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except Exception as exc:
    print(type(exc).__name__)
"""


def test_the_stats_page_answers_only_its_published_port(docker_client: DockerClient,
                                                        running: str) -> None:
    password = cluster.stats_password(docker_client, running)
    stats_url = cluster.endpoints(docker_client, running).stats_url
    assert stats_url is not None
    assert _stats_status(stats_url, password) == 200
    web = _members(docker_client, running, "web")[0]
    code, output = exec_in(docker_client, web.id,
                           ["python3", "-c", FROM_INSIDE, f"admin:{password}"], user="app")
    assert code == 0, output
    assert output.strip() != "200", "a web app reached the stats page"


def _get(url: str, cookie: str | None) -> tuple[str, int, str | None]:
    """One request on a new connection: (backend, sessionViews, cookies set)."""
    host, port = host_port(url)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200
        cookies = [v.split(";", 1)[0] for k, v in response.getheaders()
                   if k.lower() == "set-cookie"]
        return response.getheader("x-backend-ip") or "", body["sessionViews"], \
            "; ".join(cookies) or None
    finally:
        conn.close()


def test_a_client_keeps_its_web_app_until_it_leaves(docker_client: DockerClient,
                                                    running: str) -> None:
    assert cluster.scale(docker_client, running, 3).ready
    url = url_of(docker_client, running)
    jar: dict[str, str] = {}
    seen = []
    for _ in range(6):
        backend, views, set_cookie = _get(url, "; ".join(f"{k}={v}" for k, v in jar.items()))
        for pair in (set_cookie or "").split("; "):
            if "=" in pair:
                key, _, value = pair.partition("=")
                jar[key] = value
        seen.append((backend, views))
    assert {b for b, _ in seen} == {seen[0][0]}, seen  # one web app served them all
    assert [v for _, v in seen] == [1, 2, 3, 4, 5, 6]
    assert "LKSRV" in jar
    # its web app leaves: the same cookie is served elsewhere, without an error
    net = cluster.network_name(running)
    (leaving,) = [c for c in _members(docker_client, running, "web")
                  if c.addresses.get(net) == seen[0][0]]
    stop_container(docker_client, leaving.id)
    backend, views, _ = _get(url, "; ".join(f"{k}={v}" for k, v in jar.items()))
    assert backend != seen[0][0]
    assert views == 1
