"""Every test here needs the engine: the session fixture skips them, or fails under
--require-docker."""

from __future__ import annotations

import pytest

from layerkit.engine.client import DockerClient
from tests.engine.cluster_helpers import (  # noqa: F401 - the cluster tests' images
    cluster_images,
    own_web_image,
)


@pytest.fixture(autouse=True)
def _engine(docker_client: DockerClient) -> DockerClient:
    return docker_client
