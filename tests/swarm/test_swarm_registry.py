"""Images through a registry (Debian's docker-registry on the harness network): `layerkit
push`, `up --swarm --registry` with services pinned by digest that other nodes pull, and a
registry that does not answer: exit 1, nothing left behind."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from layerkit.cli.app import app
from layerkit.cluster import swarm
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import labelled_networks
from layerkit.engine.images import find_image
from layerkit.engine.swarm import labelled_secrets
from tests.engine.cluster_helpers import unique_name
from tests.swarm.harness import Harness, load_images
from tests.swarm.traffic import backends

runner = CliRunner(env={"COLUMNS": "200", "TERM": "dumb"})


def cli(harness: Harness, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"DOCKER_HOST": harness.manager.docker_host})
    return result.exit_code, result.output


def test_push_then_up_pulls_the_same_bytes_on_every_node(harness: Harness,
                                                         manager: DockerClient,
                                                         registry: str) -> None:
    code, output = cli(harness, "push", "--registry", registry, "--format", "json")
    assert code == 0, output
    images = json.loads(output[output.index("{"):])["images"]
    assert len(images) == 3
    assert all(i["digest"].startswith("sha256:") for i in images)
    name = unique_name("swr")
    try:
        code, output = cli(harness, "up", "--swarm", "--registry", registry, "--scale", "3",
                           "--lb", "1", "--port", "8085", "--name", name)
        assert code == 0, output
        services = swarm.find_services(manager, name)
        for service in services.values():
            assert service.image.startswith(f"{registry}/layerkit/")
            assert "@sha256:" in service.image
        web_image = services["web"].image.split("@")[0]
        for node in harness.nodes[1:]:  # they had the image loaded, never under this name
            pulled = node.run("docker", "images", "--digests", "--format",
                              "{{.Repository}} {{.Digest}}", web_image)
            assert services["web"].image.split("@")[1] in pulled
    finally:
        swarm.down(manager, name)


def test_a_registry_that_does_not_answer_is_one_line_exit_1(harness: Harness,
                                                            manager: DockerClient,
                                                            registry: str) -> None:
    silent = f"{registry.rsplit(':', 1)[0]}:5999"  # the registry's host, a port nobody serves
    name = unique_name("swq")
    code, output = cli(harness, "up", "--swarm", "--registry", silent, "--name", name,
                       "--lb", "1")
    assert code == 1, output
    assert "Traceback" not in output
    assert silent in output
    assert not swarm.find_services(manager, name)
    assert not labelled_secrets(manager, {"org.layerkit.project": name})
    assert find_image(manager, f"{silent}/layerkit/webapp:0.1.0") is None
    code, output = cli(harness, "up", "--swarm", "--registry", "no/such thing", "--name", name)
    assert code == 2, output


def test_a_users_own_image_runs_as_the_swarm_web_apps(harness: Harness, manager: DockerClient,
                                                      registry: str, own_web_image: str) -> None:
    """`up --swarm --web-image`: the image (only on the manager) is checked there, pushed,
    pulled by the other nodes, and served on its own port and health path; one that answers
    404 on its health path is refused before any service, secret or network is made."""
    load_images([harness.manager], [own_web_image])
    name = unique_name("swo")
    try:
        code, output = cli(harness, "up", "--swarm", "--registry", registry, "--scale", "2",
                           "--lb", "1", "--port", "8086", "--name", name, "--format", "json",
                           "--web-image", own_web_image, "--health", "/nope")
        assert code == 2, output
        assert f"image {own_web_image} answered 404 to GET /nope on port 8000" in output
        assert swarm.find_services(manager, name) == {}
        assert not labelled_secrets(manager, {"org.layerkit.project": name})
        assert not labelled_networks(manager, {"org.layerkit.project": name})
        code, output = cli(harness, "up", "--swarm", "--registry", registry, "--scale", "2",
                           "--lb", "1", "--port", "8086", "--name", name, "--format", "json",
                           "--web-image", own_web_image, "--health", "/ping")
        assert code == 0, output
        result = json.loads(output[output.index("{"):])
        assert result["ready"]
        assert len(backends(result["urls"][0], harness.subnet, 12)) == 2
        web = swarm.find_services(manager, name)["web"]
        assert web.image.startswith(f"{registry}/layerkit/hello@sha256:")
    finally:
        swarm.down(manager, name)
