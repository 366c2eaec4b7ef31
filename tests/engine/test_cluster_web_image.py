"""A user's own image as the cluster's web apps (`up --web-image/--web-port/--health`), and
the images refused before the cluster changes: no agent, another PID 1, a port that never
answers, a health path that answers 404, and a rebuilt image that `scale` would start."""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
from collections.abc import Iterator

import pytest

from layerkit import __version__
from layerkit.cluster import cluster, ports
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import exec_in, labelled_containers, labelled_networks
from layerkit.engine.images import find_image, remove_image, tag_image
from layerkit.errors import NotFound, UsageError
from tests.conftest import ROOT
from tests.engine.cluster_helpers import (
    ClusterImages,
    backends,
    options,
    unique_name,
    url_of,
    wait_until,
)
from tests.swarm.harness import REGISTRY_DOCKERFILE, built


def derived(client: DockerClient, parent: str, lines: str) -> str:
    """An image made from `parent` by a few Dockerfile lines, tagged for this test only."""
    tag = f"layerkit/{unique_name('lkt-derived')}:test"
    dockerfile = f"FROM {parent}\n{lines}\n".encode()
    for _ in client.api.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, decode=True):
        pass
    assert find_image(client, tag) is not None, f"could not build {tag}"
    return tag


@pytest.fixture
def made_by_test(docker_client: DockerClient) -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    for tag in tags:
        remove_image(docker_client, tag)


def nothing_left(client: DockerClient, name: str) -> bool:
    project = {cluster.PROJECT_LABEL: name}
    return not labelled_containers(client, project) and not labelled_networks(client, project)


def test_own_image_serves_with_its_port_and_health_path(
        docker_client: DockerClient, cluster_images: ClusterImages, own_web_image: str) -> None:
    name = unique_name()
    opts = options(cluster_images, name, web_image=own_web_image, health="/ping")
    try:
        result = cluster.up(docker_client, opts, 2)
        assert result.ready
        url = url_of(docker_client, name)
        assert len(backends(url, 12)) == 2
        status = cluster.status(docker_client, name)
        assert {s.address.rpartition(":")[2] for s in status.servers} == {"8000"}  # its EXPOSE
        lb = labelled_containers(docker_client, cluster.labels(name, "lb"))[0]
        code, config = exec_in(docker_client, lb.id, ["cat", "/etc/haproxy/haproxy.cfg"])
        assert code == 0
        assert "option httpchk GET /ping\n" in config
        # `scale` makes the new ones from the same image, port and health path
        assert cluster.scale(docker_client, name, 3).ready
        webs = labelled_containers(docker_client, cluster.labels(name, "web"))
        own = find_image(docker_client, own_web_image)
        assert own is not None
        assert {c.image for c in webs} == {own.id}
        assert wait_until(lambda: len(backends(url, 18)) == 3, timeout=15)
    finally:
        cluster.down(docker_client, name)


@pytest.mark.parametrize(("lines", "web", "expected", "hint"), [
    ("RUN rm -rf /etc/services.d/serf", {"health": "/ping"},
     "has no layerkit agent (/etc/services.d/serf/run is missing)", 'parent = "base"'),
    ('CMD ["python3", "/srv/hello/app.py"]', {"health": "/ping"},
     "runs 'python3' as PID 1, not s6-svscan", "not as its cmd"),
    ("", {"health": "/nope"}, "answered 404 to GET /nope on port 8000", "--health"),
    ("", {"health": "/ping", "web_port": 8001},
     "GET /ping on port 8001 got no 200 within 3 s (last: [Errno 111] Connection refused)",
     "--web-port"),
    ("EXPOSE 9000", {"health": "/ping"}, "exposes 8000, 9000: which one is the web app's?",
     "--web-port"),
    # the missing agent is the reason, not the port question it would also raise
    ("EXPOSE 9000\nRUN rm -rf /etc/services.d/serf", {"health": "/ping"},
     "has no layerkit agent", 'parent = "base"'),
    ("RUN sed -i 's/0.0.0.0/127.0.0.1/' /srv/hello/app.py", {"health": "/ping"},
     "listens on port 8000 on the loopback only", "0.0.0.0"),
    # a service that fails at once: the reason is its own last log line
    ("RUN sed -i 's/setuidgid nobody/setuidgid lkt-nosuchuser/' /etc/services.d/hello/run",
     {"health": "/ping"}, "got no 200 within 3 s", "lkt-nosuchuser"),
], ids=["no-agent", "other-pid-1", "health-404", "port-never-answers", "two-ports",
        "no-agent-two-ports", "loopback-only", "service-fails"])
def test_an_image_that_cannot_serve_is_refused_before_anything_is_made(
        docker_client: DockerClient, cluster_images: ClusterImages, own_web_image: str,
        made_by_test: list[str], lines: str, web: dict[str, object], expected: str,
        hint: str) -> None:
    image = own_web_image
    if lines:
        image = derived(docker_client, own_web_image, lines)
        made_by_test.append(image)
    name = unique_name()
    opts = options(cluster_images, name, web_image=image, **web)
    try:
        with pytest.raises(UsageError) as refused:
            cluster.up(docker_client, opts, 2, check_timeout=3)
        assert expected in str(refused.value)
        assert hint in (refused.value.hint or "")
    finally:
        cluster.down(docker_client, name)
    assert nothing_left(docker_client, name)
    # the checking container is gone too: no container of the image is left
    assert not docker_client.api.containers(all=True, filters={"ancestor": image})


def test_the_cli_refuses_in_one_line_with_exit_2(
        docker_client: DockerClient, cluster_images: ClusterImages, own_web_image: str,
        made_by_test: list[str]) -> None:
    image = derived(docker_client, own_web_image, "RUN rm -rf /etc/services.d/serf")
    made_by_test.append(image)
    name = unique_name()
    done = subprocess.run(
        [sys.executable, "-m", "layerkit", "up", "--name", name, "--port", "0",
         "--web-image", image, "--health", "/ping"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: image {image} has no layerkit agent "
                      "(/etc/services.d/serf/run is missing)"]
    assert nothing_left(docker_client, name)


def test_scale_refuses_a_rebuilt_image_that_cannot_serve(
        docker_client: DockerClient, cluster_images: ClusterImages, own_web_image: str,
        made_by_test: list[str]) -> None:
    """`up` ran a good image; the tag now names one without the agent: `scale` refuses to
    start it and leaves the running cluster as it was."""
    tag = f"layerkit/{unique_name('lkt-app')}:test"
    good = find_image(docker_client, own_web_image)
    assert good is not None
    tag_image(docker_client, good.id, tag)
    made_by_test.append(tag)
    name = unique_name()
    try:
        assert cluster.up(docker_client, options(cluster_images, name, web_image=tag,
                                                 health="/ping"), 1).ready
        broken = derived(docker_client, own_web_image, "RUN rm -rf /etc/services.d/serf")
        made_by_test.append(broken)
        rebuilt = find_image(docker_client, broken)
        assert rebuilt is not None
        tag_image(docker_client, rebuilt.id, tag)
        with pytest.raises(UsageError, match="has no layerkit agent"):
            cluster.scale(docker_client, name, 3)
        webs = labelled_containers(docker_client, cluster.labels(name, "web"))
        assert [c.image for c in webs] == [good.id]
        assert cluster.scale(docker_client, name, 0).after == 0  # fewer needs no check
    finally:
        cluster.down(docker_client, name)


@pytest.fixture
def local_registry(docker_client: DockerClient, cluster_images: ClusterImages) -> Iterator[str]:
    """Debian's docker-registry in a container published on 127.0.0.1 (the engine takes a
    registry on the loopback without TLS): its HOST:PORT, removed afterwards. It is built on
    layerkit's base, which the session's images fixture has built."""
    image = built("registry", REGISTRY_DOCKERFILE, "layerkit/base:" + __version__)
    port = ports.choose_free("127.0.0.1")
    container = docker_client.containers.run(
        image, detach=True, ports={"5000/tcp": ("127.0.0.1", port)},
        labels={"org.layerkit.test": "registry"})
    try:
        assert wait_until(lambda: _answers(port), timeout=30), "the registry did not start"
        yield f"127.0.0.1:{port}"
    finally:
        container.remove(force=True, v=True)


def _answers(port: int) -> bool:
    """The registry's API root answers (the engine's proxy accepts connections before)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def test_an_image_only_in_a_registry_is_pulled(
        docker_client: DockerClient, cluster_images: ClusterImages, own_web_image: str,
        local_registry: str) -> None:
    """`up --web-image REGISTRY/NAME:TAG` on an engine that lacks it pulls it, checks it and
    runs it; a name the registry does not have is one clear error, nothing made."""
    remote = f"{local_registry}/{unique_name('lkt-app')}:test"
    tag_image(docker_client, own_web_image, remote)
    pushed = list(docker_client.api.push(remote, stream=True, decode=True))
    assert not [item for item in pushed if "error" in item], pushed[-3:]
    remove_image(docker_client, remote)
    assert find_image(docker_client, remote) is None
    name = unique_name()
    try:
        result = cluster.up(docker_client, options(cluster_images, name, web_image=remote,
                                                   health="/ping"), 2)
        assert result.ready
        assert len(backends(url_of(docker_client, name), 12)) == 2
    finally:
        cluster.down(docker_client, name)
        remove_image(docker_client, remote)
    missing = options(cluster_images, name, web_image=f"{local_registry}/no-such-app:1")
    with pytest.raises(NotFound, match="is not in the engine and could not be pulled"):
        cluster.up(docker_client, missing, 1)
    assert nothing_left(docker_client, name)
