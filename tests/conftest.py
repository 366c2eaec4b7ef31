"""Shared fixtures. Engine tests live in tests/engine/ and get the `engine` marker here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerkit import __version__
from layerkit.build.bootstrap import ensure_base
from layerkit.build.build import build_all
from layerkit.build.specs import build_order, load_all
from layerkit.engine.client import DockerClient, connect
from layerkit.errors import EngineUnavailable

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
PACKAGE_DIR = ROOT / "layerkit"
DATA = Path(__file__).resolve().parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-docker", action="store_true", default=False,
                     help="fail (instead of skip) engine tests when no engine answers (CI)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    engine_dirs = (str(ROOT / "tests" / "engine"), str(ROOT / "tests" / "swarm"))
    for item in items:
        if str(item.path).startswith(engine_dirs):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def docker_client(request: pytest.FixtureRequest) -> Iterator[DockerClient]:
    try:
        client = connect(os.environ, timeout=300)
    except EngineUnavailable as exc:
        if request.config.getoption("--require-docker"):
            pytest.fail(f"--require-docker: {exc.message}")
        pytest.skip(f"no Docker engine: {exc.message}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def rootfs_image(docker_client: DockerClient) -> str:
    """The Debian root filesystem the base stands on: present, pulled, or bootstrapped here."""
    spec = load_all(IMAGES, PACKAGE_DIR)["base"]
    return ensure_base(docker_client, spec.parent, allow_bootstrap=spec.bootstrap).ref


@pytest.fixture(scope="session")
def built_images(docker_client: DockerClient) -> dict[str, str]:
    """The project's images, built once per session (the engine's cache makes reruns quick)."""
    specs = load_all(IMAGES, PACKAGE_DIR)
    built = build_all(docker_client, build_order(specs), specs, version=__version__,
                      write_dockerfiles=False)
    return {b.name: b.ref for b in built}
