"""The images build on a real engine, stand on one shared base, and run as designed."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerkit import __version__
from layerkit.build.build import build_all
from layerkit.build.specs import load_all
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import Container
from tests.conftest import IMAGES, PACKAGE_DIR, ROOT

TEST_LABELS = {"org.layerkit.test": "1"}
OWNERS_OF_WEBAPP = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    if argv[:2] == [b"python3", b"/opt/layerkit/webapp.py"]:
        print(os.stat(f"/proc/{pid}").st_uid)
"""


def run_container(client: DockerClient, ref: str, **kwargs: object) -> Container:
    name = f"lk-test-{uuid.uuid4().hex[:8]}"
    return client.containers.run(ref, detach=True, name=name, labels=TEST_LABELS, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def webapp(docker_client: DockerClient, built_images: dict[str, str]) -> Iterator[Container]:
    container = run_container(docker_client, built_images["webapp"],
                              ports={"3000/tcp": ("127.0.0.1", None)}, environment={"TAG": "t1"})
    try:
        yield container
    finally:
        container.remove(force=True)


def published_port(container: Container, port: str) -> int:
    container.reload()
    return int(container.ports[port][0]["HostPort"])


def wait_http(port: int, path: str = "/healthz", timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered on 127.0.0.1:{port}{path}")
        time.sleep(0.2)


def test_three_images_build_and_are_tagged(docker_client: DockerClient,
                                           built_images: dict[str, str]) -> None:
    assert set(built_images) == {"base", "haproxy", "webapp", "keepalived"}
    for name, ref in built_images.items():
        image = docker_client.images.get(ref)
        assert f"layerkit/{name}:latest" in image.tags
        assert image.labels["org.layerkit.image"] == name
        assert image.labels["org.layerkit.version"] == __version__


def test_children_start_with_exactly_the_base_layers(docker_client: DockerClient,
                                                     built_images: dict[str, str]) -> None:
    base = docker_client.images.get(built_images["base"]).attrs["RootFS"]["Layers"]
    for name in ("haproxy", "webapp"):
        layers = docker_client.images.get(built_images[name]).attrs["RootFS"]["Layers"]
        assert layers[: len(base)] == base, f"{name} does not share the base's layers"
        assert len(layers) > len(base)


@pytest.mark.parametrize("name", ["base", "haproxy", "webapp"])
def test_pid1_is_s6_and_serf_runs(docker_client: DockerClient, built_images: dict[str, str],
                                  name: str) -> None:
    container = run_container(docker_client, built_images[name])
    try:
        deadline = time.monotonic() + 20
        while True:
            code, output = container.exec_run(
                ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; "
                             "cat /proc/[0-9]*/comm 2>/dev/null; true"])
            procs = output.decode().split("\n")
            if "serf" in procs or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert code == 0
        assert procs[0].split()[0] == "s6-svscan"
        assert "serf" in procs
        code, output = container.exec_run(["serf", "version"])
        assert code == 0
        assert b"Agent Protocol" in output
    finally:
        container.remove(force=True)


def test_webapp_answers_json(webapp: Container) -> None:
    port = published_port(webapp, "3000/tcp")
    wait_http(port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200
    assert set(body) == {"hello", "ip", "host", "tag", "sessionViews", "id"}
    assert body["tag"] == "t1"
    assert body["sessionViews"] == 1
    assert resp.getheader("x-backend-ip") == body["ip"]
    cookie = resp.getheader("Set-Cookie", "").split(";")[0]
    assert cookie.startswith("NODESESSID=")
    conn.request("GET", "/", headers={"Cookie": cookie})
    second = json.loads(conn.getresponse().read())
    assert second["sessionViews"] == 2
    assert second["id"] == body["id"]
    conn.request("POST", "/delay", body=json.dumps({"delay": 300}),
                 headers={"Content-Type": "application/json"})
    delay_resp = conn.getresponse()
    assert (delay_resp.status, json.loads(delay_resp.read())["delay"]) == (200, 300)
    started = time.monotonic()
    conn.request("GET", "/")
    conn.getresponse().read()
    assert time.monotonic() - started >= 0.3
    owners = webapp.exec_run(["python3", "-c", OWNERS_OF_WEBAPP]).output.decode().split()
    assert owners == ["10001"]


def test_source_edit_rebuilds_only_the_last_layers(docker_client: DockerClient,
                                                   built_images: dict[str, str],
                                                   tmp_path: Path) -> None:
    package = tmp_path / "layerkit"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    webapp_py = package / "agent" / "webapp.py"
    webapp_py.write_text(webapp_py.read_text() + f"\n# edit {uuid.uuid4().hex}\n")
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    # A copy under another name, so the project's own tags are never touched.
    name = f"webapp-edit-{uuid.uuid4().hex[:6]}"
    (images / "webapp").rename(images / name)
    specs = load_all(images, package)
    built = []
    try:
        built = build_all(docker_client, [specs[name]], specs, version=__version__,
                          tag_latest=False, write_dockerfiles=False)
        (app,) = built
        original = docker_client.images.get(built_images["webapp"]).attrs["RootFS"]["Layers"]
        edited = docker_client.images.get(app.image_id).attrs["RootFS"]["Layers"]
        assert edited[:-1] == original[:-1]
        assert edited[-1] != original[-1]
        # Only the source COPY and the metadata after it ran again (FROM is never "cached").
        rebuilt = app.steps - app.cached_steps - 1
        assert rebuilt == 1 + len(specs[name].env) + 2  # COPY, ENV..., EXPOSE, LABEL
    finally:
        for b in built:
            docker_client.images.remove(b.ref)


def test_interrupted_build_leaves_no_containers(docker_client: DockerClient,
                                                built_images: dict[str, str],
                                                tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    script = tmp_path / "slow_build.py"
    script.write_text(f"""
import faulthandler, signal, sys
from pathlib import Path
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks where it hangs
# Ctrl-C as at a terminal, even when this runs under something that ignores SIGINT (a job
# started in the background by a shell without job control: Python then keeps it ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from layerkit.build.build import build_one
from layerkit.build.dockerfile import Generated
from layerkit.engine.client import connect
from layerkit.build.specs import load
spec_dir = Path({str(tmp_path)!r}) / "slow"
spec_dir.mkdir()
(spec_dir / "image.toml").write_text('parent = "{built_images['base']}"\\n')
spec = load(spec_dir / "image.toml", Path("."))
text = "FROM {built_images['base']}\\nRUN echo started-{marker} && sleep 60\\n"
build_one(connect(), spec, Generated(text, ()), version="interrupted", tag_latest=False,
          on_event=lambda ev: print(ev.kind, ev.text, flush=True))
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if f"started-{marker}" in line and line.startswith("log"):
                break
            assert time.monotonic() < deadline, "the slow step never started"
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:  # show where it hangs, then fail
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            raise
        assert code != 0
    finally:
        proc.kill()
    leftovers = [c for c in docker_client.containers.list(all=True)
                 if marker in " ".join(c.attrs["Config"].get("Cmd") or [])]
    assert leftovers == []
    assert not docker_client.images.list(name="layerkit/slow")


def test_failing_step_shows_instruction_and_log(built_images: dict[str, str],
                                                tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(IMAGES / "base", images / "base")
    broken = images / f"broken-{uuid.uuid4().hex[:6]}"
    broken.mkdir()
    (broken / "image.toml").write_text(
        'parent = "base"\n[[packages]]\ninstall = ["layerkit-no-such-package"]\n')
    proc = subprocess.run([sys.executable, "-m", "layerkit", "build", "--images", str(images),
                           broken.name], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    error = next(line for line in lines if line.startswith("error: "))
    assert f"building {broken.name} failed" in error
    assert any(line.startswith("hint: failing step: RUN set -eux") for line in lines)
    assert any("layerkit-no-such-package" in line and line.startswith("  | ") for line in lines)
    assert "Traceback" not in proc.stderr
