"""The swarm harness as a session fixture: three engines in containers, joined, images loaded;
all of it removed at the end of the session whatever happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from layerkit import __version__
from layerkit.engine.client import DockerClient, connect
from tests.engine.cluster_helpers import own_web_image  # noqa: F401 - a user's own app
from tests.swarm.harness import Harness, start_registry, swarm_harness

IMAGES = [f"layerkit/{name}:{__version__}" for name in ("haproxy", "webapp", "keepalived")]


@pytest.fixture(scope="session")
def harness(docker_client: DockerClient, built_images: dict[str, str]) -> Iterator[Harness]:
    with swarm_harness(IMAGES, base=built_images["base"]) as made:
        yield made


@pytest.fixture(scope="session")
def manager(harness: Harness) -> Iterator[DockerClient]:
    """A client of the first node's engine, a Swarm manager, over the harness network."""
    client = connect({"DOCKER_HOST": harness.manager.docker_host})
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(harness: Harness, built_images: dict[str, str]) -> str:
    """HOST:PORT of Debian's docker-registry on the harness network (gone with the harness)."""
    return start_registry(harness, built_images["base"])
