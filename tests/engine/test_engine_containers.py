"""The engine boundary's container calls against the real engine."""

from __future__ import annotations

from layerkit.engine.client import DockerClient
from layerkit.engine.containers import create_network, remove_network
from tests.engine.cluster_helpers import ClusterImages, unique_name


def test_a_network_with_an_endpoint_left_is_still_removed(
        docker_client: DockerClient, cluster_images: ClusterImages) -> None:
    """`down` removes a network even while the engine still counts an endpoint on it (here a
    container attached to it and still running): the endpoint is disconnected by force."""
    network = create_network(docker_client, unique_name("lkt-net"), {"org.layerkit.test": "1"})
    container = docker_client.containers.run(
        cluster_images.web, ["sleep", "60"], detach=True, network=network.name,
        labels={"org.layerkit.test": "1"})
    try:
        remove_network(docker_client, network.id)
        assert not docker_client.api.networks(ids=[network.id])
        container.reload()
        assert network.name not in container.attrs["NetworkSettings"]["Networks"]
    finally:
        container.remove(force=True)
        remove_network(docker_client, network.id)
