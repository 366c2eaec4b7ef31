"""A cache you can trust: --no-cache for the images named only, a failed build moves no tag
and leaves no image of its own behind, its log is plain text that names the step once."""

from __future__ import annotations

import json
import re
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
from layerkit.build import build as build_module
from layerkit.build.build import build_all
from layerkit.build.specs import build_order, load_all
from layerkit.engine import images as engine
from layerkit.engine.client import DockerClient
from layerkit.errors import EngineError, SquashError
from layerkit.squash import squash as squash_module
from tests.conftest import IMAGES, PACKAGE_DIR, ROOT


@pytest.fixture
def images(tmp_path: Path, docker_client: DockerClient,
           built_images: dict[str, str]) -> Iterator[tuple[Path, str]]:
    """A copy of the base spec plus room for test specs named lkt-<random>-*; their tags
    are removed afterwards."""
    root = tmp_path / "images"
    shutil.copytree(IMAGES / "base", root / "base")
    prefix = f"lkt-{uuid.uuid4().hex[:6]}"
    try:
        yield root, prefix
    finally:
        for image in docker_client.api.images(name=None):
            for tag in image.get("RepoTags") or ():
                if tag.startswith(f"layerkit/{prefix}"):
                    docker_client.api.remove_image(tag)


def spec(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "image.toml").write_text(text)


def build(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerkit", "build", "--images", str(root),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def test_no_cache_applies_to_the_named_image_only(images: tuple[Path, str]) -> None:
    root, prefix = images
    spec(root, f"{prefix}-a", 'parent = "base"\n[[steps]]\nrun = "echo a > /a"\n')
    proc = build(root, f"{prefix}-a", "--no-cache", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    built = {i["name"]: i for i in json.loads(proc.stdout)["images"]}
    assert built["base"]["cached_steps"] == built["base"]["steps"] - 1  # all but FROM
    assert built[f"{prefix}-a"]["cached_steps"] == 0


def test_failed_build_moves_no_tag_and_leaves_none_of_its_images(
        images: tuple[Path, str], docker_client: DockerClient) -> None:
    root, prefix = images
    parent, child = f"{prefix}-p", f"{prefix}-c"
    spec(root, parent, 'parent = "base"\n[[steps]]\nrun = "echo one > /p"\n')
    first = build(root, parent)
    assert first.returncode == 0, first.stderr
    before = engine.image_info(docker_client, f"layerkit/{parent}:{__version__}").id
    marker = uuid.uuid4().hex
    spec(root, parent, f'parent = "base"\n[[steps]]\nrun = "echo {marker} > /p"\n')
    spec(root, child, f'parent = "{parent}"\n[[steps]]\n'
                      "run = \"printf '\\\\033[91mE: no such thing\\\\033[0m\\\\n' >&2; "
                      'exit 3"\n')
    proc = build(root, "-v", child)
    assert proc.returncode == 1
    # the parent built anew in this run: its tag stays where it was, its image is gone
    assert engine.image_info(docker_client, f"layerkit/{parent}:{__version__}").id == before
    after_marker = proc.stderr[proc.stderr.index(f"RUN echo {marker}"):]
    new_ids = re.findall(rf"^{parent}:\s+---> ([0-9a-f]{{12}})$", after_marker, re.MULTILINE)
    assert new_ids
    assert all(engine.find_image(docker_client, short) is None for short in new_ids)
    assert engine.find_image(docker_client, f"layerkit/{child}:{__version__}") is None
    # plain text: no colour codes, and the command shown once (in the hint)
    assert "\x1b" not in proc.stderr
    assert "\\x1b" not in proc.stderr
    assert "E: no such thing" in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert "exit 3" not in error
    assert "exited with code 3" in error
    assert any(line.startswith("hint: failing step: RUN printf")
               for line in proc.stderr.splitlines())


def test_a_build_stage_ships_only_its_artefact_and_stays_cached(
        images: tuple[Path, str], docker_client: DockerClient) -> None:
    root, prefix = images
    name = f"{prefix}-s"
    spec(root, name, 'parent = "base"\n[args]\nWORD = "plain"\n'
                     '[[stages]]\nname = "b"\nrun = ["mkdir -p /out && echo $WORD > /out/art"]\n'
                     '[[artifacts]]\nstage = "b"\nsrc = "/out/art"\ndest = "/usr/local/art"\n')
    proc = build(root, name, "--build-arg", "WORD=chosen")
    assert proc.returncode == 0, proc.stderr
    ref = f"layerkit/{name}:{__version__}"
    container = docker_client.containers.run(
        ref, ["sh", "-c", "cat /usr/local/art; test -e /out && echo stage-leaked; true"],
        detach=True, labels={"org.layerkit.test": "1"})
    try:
        container.wait(timeout=30)
        assert container.logs().decode().split() == ["chosen"]
    finally:
        container.remove(force=True)
    stage = engine.find_image(docker_client, f"{ref}-b")  # tagged: no dangling stage image
    assert stage is not None
    again = build(root, name, "--build-arg", "WORD=chosen", "--format", "json")
    assert again.returncode == 0, again.stderr
    (image,) = [i for i in json.loads(again.stdout)["images"] if i["name"] == name]
    assert image["cached_steps"] == image["steps"] - 2  # all but the two FROMs


RUN_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from layerkit.cli.app import main; sys.argv[0] = 'layerkit'; main()")


def test_ctrl_c_in_a_no_cache_rebuild_then_a_plain_build_is_all_cached(
        images: tuple[Path, str], docker_client: DockerClient) -> None:
    root, prefix = images
    name = f"{prefix}-i"
    spec(root, name, 'parent = "base"\n[[steps]]\nrun = "echo one > /one"\n'
                     '[[steps]]\nrun = "sleep 6"\n')
    assert build(root, name).returncode == 0
    ref = f"layerkit/{name}:{__version__}"
    before = engine.image_info(docker_client, ref).id
    proc = subprocess.Popen([sys.executable, "-c", RUN_CLI, "build", "--images", str(root),
                             name, "--no-cache"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "RUN sleep 6" in line:
                break
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
    finally:
        proc.kill()
    assert engine.image_info(docker_client, ref).id == before
    again = build(root, name, "--format", "json")
    assert again.returncode == 0, again.stderr
    (image,) = [i for i in json.loads(again.stdout)["images"] if i["name"] == name]
    assert image["cached_steps"] == image["steps"] - 1
    assert image["id"] == before


def _remove_tags(client: DockerClient, prefix: str) -> None:
    for image in client.api.images():
        for tag in image.get("RepoTags") or ():
            if tag.startswith(f"layerkit/{prefix}"):
                client.api.remove_image(tag)


def test_reproducible_cold_builds_give_the_same_ids(images: tuple[Path, str],
                                                    docker_client: DockerClient) -> None:
    root, prefix = images
    base, app = f"{prefix}-rb", f"{prefix}-ra"
    spec(root, base, 'parent = "layerkit/rootfs:bookworm-slim"\n'
                     '[[packages]]\ninstall = ["netbase"]\n[user]\nname = "app"\n'
                     '[[steps]]\nrun = "touch /etc/stamp && ldconfig && echo x > /var/log/x.log"\n')
    spec(root, app, f'parent = "{base}"\n[[steps]]\n'
                    'run = "mkdir -p /opt/app && echo v1 > /opt/app/v"\n')
    ids = []
    for _ in range(2):
        proc = build(root, app, "--no-cache", "--reproducible", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        ids.append({i["name"]: i["id"] for i in json.loads(proc.stdout)["images"]})
        _remove_tags(docker_client, prefix)  # cold: nothing of the first build is left
        time.sleep(1.1)  # a second later: every time the builder writes differs
    assert ids[0] == ids[1]
    assert set(ids[0]) == {base, app}


def _dangling_with(client: DockerClient, marker: str) -> set[str]:
    """Dangling images whose history names `marker` (other users of the engine make theirs);
    a squashed image names its steps in the comment of its one step."""
    found = set()
    for image in client.api.images(filters={"dangling": True}):
        if any(marker in f"{step.get('CreatedBy') or ''} {step.get('Comment') or ''}"
               for step in client.api.history(image["Id"])):
            found.add(image["Id"])
    return found


def test_reproducible_squashed_cold_builds_give_the_same_id(
        images: tuple[Path, str], docker_client: DockerClient) -> None:
    root, prefix = images
    name = f"{prefix}-rs"
    spec(root, name, 'parent = "layerkit/rootfs:bookworm-slim"\n'
                     f'[[steps]]\nrun = "mkdir -p /opt/{prefix} && echo 1 > /opt/{prefix}/one '
                     '&& ldconfig && echo x > /var/log/x.log"\n'
                     f'[[steps]]\nrun = "echo 2 > /opt/{prefix}/two && rm /opt/{prefix}/one"\n')
    parent_layers = len(engine.image_info(docker_client, "layerkit/rootfs:bookworm-slim").layers)
    ids = []
    for _ in range(2):
        proc = build(root, name, "--no-cache", "--reproducible", "--squash", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        (image,) = json.loads(proc.stdout)["images"]
        assert image["layers"] == parent_layers + 1
        ids.append(image["id"])
        # the builder's image is kept as <ref>-build; the rewritten one it was squashed from
        # does not dangle
        ref = f"layerkit/{name}:{__version__}"
        assert engine.image_info(docker_client, ref).id == image["id"]
        assert engine.find_image(docker_client, f"{ref}-build") is not None
        assert not _dangling_with(docker_client, prefix)
        _remove_tags(docker_client, prefix)
        time.sleep(1.1)
    assert ids[0] == ids[1]


def test_squashed_build_keeps_the_builders_image_and_its_cache(
        images: tuple[Path, str], docker_client: DockerClient) -> None:
    root, prefix = images
    name = f"{prefix}-sq"
    spec(root, name, 'parent = "layerkit/rootfs:bookworm-slim"\n'
                     f'[[steps]]\nrun = "echo 1 > /{prefix}-one"\n'
                     f'[[steps]]\nrun = "echo 2 > /{prefix}-two"\n')
    first = build(root, name, "--squash", "--format", "json")
    assert first.returncode == 0, first.stderr
    assert not _dangling_with(docker_client, prefix)
    assert engine.find_image(docker_client, f"layerkit/{name}:{__version__}-build") is not None
    again = build(root, name, "--squash", "--format", "json")
    assert again.returncode == 0, again.stderr
    (one,), (two,) = (json.loads(p.stdout)["images"] for p in (first, again))
    assert two["cached_steps"] == two["steps"] - 1
    assert two["id"] == one["id"]


ROOTFS = "layerkit/rootfs:bookworm-slim"


@pytest.mark.parametrize("flags", [("--squash",), ("--squash", "--reproducible")],
                         ids=["squash", "squash-reproducible"])
def test_a_failure_after_a_squashed_image_moves_none_of_its_tags(
        images: tuple[Path, str], docker_client: DockerClient, flags: tuple[str, ...]) -> None:
    root, prefix = images
    first, second = f"{prefix}-ta", f"{prefix}-tb"
    spec(root, first, f'parent = "{ROOTFS}"\n[[steps]]\nrun = "echo one > /{prefix}-a"\n'
                      f'[[steps]]\nrun = "echo two > /{prefix}-b"\n')
    done = build(root, first, *flags)
    assert done.returncode == 0, done.stderr
    ref = f"layerkit/{first}:{__version__}"
    tags = (ref, f"{ref}-build", f"layerkit/{first}:latest")
    before = {tag: engine.image_info(docker_client, tag).id for tag in tags}
    spec(root, first, f'parent = "{ROOTFS}"\n[[steps]]\nrun = "echo new > /{prefix}-a"\n'
                      f'[[steps]]\nrun = "echo two > /{prefix}-b"\n')
    spec(root, second, f'parent = "{first}"\n[[steps]]\nrun = "echo {prefix}; exit 3"\n')
    proc = build(root, second, *flags)
    assert proc.returncode == 1, proc.stderr
    # the first image was built and squashed anew in this run: none of its tags moved, and
    # neither its squashed image nor the builder's is left behind
    assert {tag: engine.image_info(docker_client, tag).id for tag in tags} == before
    assert engine.find_image(docker_client, f"layerkit/{second}:{__version__}") is None
    assert not _dangling_with(docker_client, prefix)


@pytest.mark.parametrize(("where", "error"), [
    ("squash", SquashError("injected")),
    ("squash-reproducible", KeyboardInterrupt()),
    ("rewrite", EngineError("injected")),
])
def test_a_failed_rewrite_or_squash_leaves_none_of_the_builds_images(
        images: tuple[Path, str], docker_client: DockerClient, monkeypatch: pytest.MonkeyPatch,
        where: str, error: BaseException) -> None:
    """The step built on the real engine; the squash or rewrite after it fails (or is
    interrupted): the builder's image (and the rewritten one) must not be left untagged."""
    root, prefix = images
    name = f"{prefix}-f"
    spec(root, name, f'parent = "{ROOTFS}"\n[[steps]]\nrun = "echo {prefix} > /{prefix}"\n'
                     f'[[stages]]\nname = "s"\nrun = ["echo {prefix} > /s"]\n'
                     f'[[artifacts]]\nstage = "s"\nsrc = "/s"\ndest = "/{prefix}-s"\n')

    def broken(*_args: object, **_kwargs: object) -> None:
        raise error

    if where == "rewrite":
        monkeypatch.setattr(build_module, "rewrite_image", broken)
    else:
        monkeypatch.setattr(squash_module, "squash", broken)
    specs = load_all(root, PACKAGE_DIR)
    kinds: list[str] = []
    with pytest.raises(type(error)):
        build_all(docker_client, build_order(specs, [name]), specs, version=__version__,
                  write_dockerfiles=False, squash=where != "rewrite",
                  epoch=None if where == "squash" else 1_700_000_000,
                  on_event=lambda e: kinds.append(e.kind))
    assert "done" in kinds  # the builder's step did succeed
    ref = f"layerkit/{name}:{__version__}"
    assert all(engine.find_image(docker_client, tag) is None
               for tag in (ref, f"{ref}-build", f"{ref}-s", f"layerkit/{name}:latest"))
    assert not _dangling_with(docker_client, prefix)
