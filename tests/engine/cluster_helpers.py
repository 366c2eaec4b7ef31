"""Helpers for the cluster's engine tests and benchmark: HTTP to 127.0.0.1 only, bounded loops."""

from __future__ import annotations

import http.client
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from layerkit import __version__
from layerkit.build.build import build_all
from layerkit.build.specs import build_order, load_all
from layerkit.cluster import cluster
from layerkit.engine.client import DockerClient
from layerkit.engine.images import remove_image, tag_image
from tests.conftest import IMAGES, PACKAGE_DIR


@dataclass(frozen=True)
class ClusterImages:
    """This session's own tags of the images it built: another session rebuilding
    `layerkit/*:0.1.0` from its tree on the same engine cannot swap them under a test."""

    lb: str
    web: str


@pytest.fixture(scope="session")
def cluster_images(docker_client: DockerClient) -> Iterator[ClusterImages]:
    specs = load_all(IMAGES, PACKAGE_DIR)
    built = {b.name: b.image_id for b in build_all(
        docker_client, build_order(specs), specs, version=__version__, write_dockerfiles=False)}
    tag = f"lkt-{secrets.token_hex(4)}"
    refs = ClusterImages(f"layerkit/haproxy:{tag}", f"layerkit/webapp:{tag}")
    tag_image(docker_client, built["haproxy"], refs.lb)
    tag_image(docker_client, built["webapp"], refs.web)
    try:
        yield refs
    finally:
        for ref in (refs.lb, refs.web):
            remove_image(docker_client, ref)


OWN_APP = Path(__file__).parent / "images" / "hello"


@pytest.fixture(scope="session")
def own_web_image(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[str]:
    """A user's own app (tests/engine/images/hello: port 8000, health path /ping) built on the
    shared base from its spec, under this session's own tag."""
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(IMAGES / "base", root / "base")
    shutil.copytree(OWN_APP, root / "hello")
    specs = load_all(root, PACKAGE_DIR)
    tag = f"lkt-{secrets.token_hex(4)}"
    build_all(docker_client, build_order(specs), specs, version=tag, write_dockerfiles=False,
              tag_latest=False)
    try:
        yield f"layerkit/hello:{tag}"
    finally:
        for name in ("hello", "base"):
            remove_image(docker_client, f"layerkit/{name}:{tag}")


def options(images: ClusterImages, name: str, **kwargs: Any) -> cluster.ClusterOptions:
    """Cluster options on this session's images (port 0 unless given)."""
    kwargs.setdefault("port", 0)
    kwargs.setdefault("web_image", images.web)
    return cluster.ClusterOptions(name=name, lb_image=images.lb, **kwargs)

# `serf members` with the agent's RPC token (root only): what a test runs in a container
SERF_MEMBERS = ["python3", "-m", "layerkit.agent.serfagent", "--rpc", "members"]


def url_of(client: DockerClient, name: str) -> str:
    url = cluster.endpoints(client, name).url
    assert url is not None
    return url


def unique_name(prefix: str = "lkt") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", f"tests only talk to 127.0.0.1, not {url}"
    assert parts.port is not None
    return parts.hostname, parts.port


def get_backend(url: str, timeout: float = 5.0) -> str:
    """One request on a new connection; the address of the web app that answered."""
    return get_backend_at(*host_port(url), timeout=timeout)


def get_backend_at(host: str, port: int, timeout: float = 5.0) -> str:
    """The same, to an address the caller has checked is one the tests may talk to."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise AssertionError(f"HTTP {response.status}")
        return response.getheader("x-layerkit-server") or "?"
    finally:
        conn.close()


def backends(url: str, requests: int = 30) -> set[str]:
    return {get_backend(url) for _ in range(requests)}


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return True
        except (OSError, AssertionError, http.client.HTTPException):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class LoadLoop:
    """Requests at a steady pace in a thread, bounded in count and time.

    keep_alive=True reuses one client connection (reconnecting only when the server said it
    would close), so a connection broken by a reload shows up as a failure.
    """

    url: str
    keep_alive: bool = False
    interval: float = 0.02
    max_requests: int = 5000
    max_seconds: float = 90.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() of each failure
    seen: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.max_seconds + 10)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def _run(self) -> None:
        host, port = host_port(self.url)
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and self.total < self.max_requests \
                and time.monotonic() < deadline:
            if conn is None or not self.keep_alive:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                    server = response.getheader("x-layerkit-server", "")
                    self.seen.append((time.monotonic(), server))
                else:
                    self.failures.append(f"HTTP {response.status}")
                    self.failed_at.append(time.monotonic())
                if response.will_close or not self.keep_alive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                self.failed_at.append(time.monotonic())
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(self.interval)
        if conn is not None:
            conn.close()

    def last_seen(self, backend: str) -> float | None:
        times = [t for t, b in self.seen if b == backend]
        return max(times) if times else None
