"""The storage source (overlay2 layer directories) against the save stream, on images built
here: `analyze --source storage` must give the JSON of `analyze --source save`, field by field,
and the entries read from the directories must be those of the saved layer tars. Also: when the
directories cannot be used, auto takes the save stream and says why."""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import xxhash
import zstandard
from typer.testing import CliRunner

from layerkit.cli.app import app
from layerkit.engine.client import DockerClient
from layerkit.engine.images import inspect_image, load_image
from layerkit.engine.save import save_image
from layerkit.errors import UsageError
from layerkit.image import storage
from layerkit.image.archive import Entry, read_archive
from layerkit.image.fsview import replay
from layerkit.image.source import choose
from layerkit.squash import squash
from layerkit.squash.squash import SquashOptions
from tests.engine.test_squash_engine import _build, _remove
from tests.imagetar import (
    Image,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    symlink,
    whiteout,
)
from tests.randomlayers import Form, random_forms

BASE = "layerkit/base:latest"
CAP = "01000002" + "00200000" + "0" * 24  # security.capability v2: cap_net_bind_service
# every whiteout form, opaque dirs over lower files, hardlinks in a layer and across copy-up,
# a symlink replaced by a directory and back, set-id bits, xattrs (empty and repeated layers:
# see test_empty_and_repeated_layers, as this engine's builder makes no layer of a step that
# changes nothing)
FIXTURE = f"""\
FROM {{base}}
RUN mkdir -p /t/d1/sub /t/d2/deep /t/keep && echo a > /t/d1/f1 && echo b > /t/d1/sub/f2 \\
 && echo c > /t/d2/deep/f3 && echo hl > /t/h1 && ln /t/h1 /t/h2 && ln /t/h1 /t/d1/h3 \\
 && ln -s /t/d1 /t/sym && echo s > /t/suid && chmod 4755 /t/suid && chmod 2775 /t/d2 \\
 && chmod 1777 /t/keep && echo x > /t/x1 && mkfifo /t/fifo && echo same > /t/meta \\
 && python3 -c "import os; os.setxattr('/t/x1', 'user.layerkit', b'v'); \\
os.setxattr('/t/suid', 'security.capability', bytes.fromhex('{CAP}'))"
RUN rm /t/d1/f1 && rm -rf /t/d2 && mkdir /t/d2 && echo n > /t/d2/n && chmod 600 /t/h2 \\
 && chown 1:1 /t/meta && rm /t/sym && mkdir /t/sym && echo in > /t/sym/in \\
 && rm -rf /t/d1/sub && touch /t/d1/sub
RUN rm -rf /t/sym && ln -s /t/d2 /t/sym && rm -rf /t/d1 && mkdir /t/d1 && echo again > /t/d1/f1 \\
 && echo hl2 > /t/h1 && rm /t/fifo && echo y > /t/x1
RUN ln /t/d1/f1 /t/d1/f1link && rm /t/h1 && rm -rf /t/keep && touch /t/keep
"""


def _analyze(ref: str, source: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["analyze", ref, "--format", "json", "--no-report",
                                      "--dive-ci", "/nonexistent", "--source", source])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _same_everywhere(client: DockerClient, ref: str) -> None:
    by_save = _analyze(ref, "save")
    by_storage = _analyze(ref, "storage")
    for key in by_save:
        assert by_storage[key] == by_save[key], key
    assert by_storage == by_save
    # and below the report: the entries themselves, in order, for the layers built here
    inspect = inspect_image(client, ref)
    where = storage.layer_dirs(inspect)
    assert where is not None
    stored = storage.read_image(ref, (ref,), where, visible_from=0)
    with save_image(client, ref) as stream:
        saved = read_archive(stream, hash_content=True).images[0]
    for ours, theirs in zip(stored.layers, saved.layers, strict=True):
        assert ours.digest == theirs.digest
        assert ours.repeat_link == theirs.repeat_link
        for mine, save in zip(ours.entries, theirs.entries, strict=True):  # contents read
            if ours.index > 0 and mine.digest and not mine.digest.startswith("head:"):
                assert mine.digest == save.digest, mine.path
        # every layer, the imported rootfs too: its tar's own order and header fields
        assert _comparable(ours.entries) == _comparable(theirs.entries), ours.index
    assert stored.config == saved.config
    assert stored.history == saved.history


def _squashed_alike(client: DockerClient, ref: str, base: str) -> None:
    """`squash --from BASE` from the layer directories gives the merged layer the squash from
    the save gives, byte for byte (both verified against the source by the squash itself)."""
    results = {}
    for source in ("storage", "save"):
        tag = f"layerkit-test/storage-squashed-{source}-{uuid.uuid4().hex[:8]}:1"
        try:
            result = squash.squash(client, ref, SquashOptions(tag=tag, base=base, source=source),
                                   os.environ)
            assert result.verified
            with save_image(client, tag) as stream:
                saved = read_archive(stream, hash_content=True).images[0]
            results[source] = (result, replay([lay.entries for lay in saved.layers]).fingerprint(),
                               [lay.digest for lay in saved.layers])
        finally:
            _remove(client, tag)
    assert results["storage"][1] == results["save"][1]
    assert results["storage"][2] == results["save"][2]  # the very same merged layer
    assert results["storage"][0].layers_after == results["save"][0].layers_after
    assert results["storage"][0].bytes_after == results["save"][0].bytes_after


def _comparable(entries: Sequence[Entry]) -> list[Entry]:
    """The entries without digests (the directories' are read only where needed: compared
    apart)."""
    return [e._replace(digest=None) for e in entries]


@pytest.fixture(scope="module")
def base_id(docker_client: DockerClient, built_images: dict[str, str]) -> str:
    """BASE's image ID, pinned: another session may rebuild `layerkit/base:latest` meanwhile
    (the images built here keep the one they were built on)."""
    return str(inspect_image(docker_client, BASE)["Id"])


@pytest.fixture(scope="module")
def fixture_image(docker_client: DockerClient, base_id: str) -> Iterator[str]:
    tag = f"layerkit-test/storage-{uuid.uuid4().hex[:8]}:1"
    try:
        _build(docker_client, FIXTURE.replace("{base}", base_id), tag)
        yield tag
    finally:
        _remove(docker_client, tag)


def test_storage_gives_what_the_save_gives(docker_client: DockerClient,
                                           fixture_image: str) -> None:
    _same_everywhere(docker_client, fixture_image)


def test_squash_from_storage_gives_the_same_filesystem(docker_client: DockerClient,
                                                      fixture_image: str, base_id: str) -> None:
    _squashed_alike(docker_client, fixture_image, base_id)


def test_storage_entries_have_the_tar_forms(docker_client: DockerClient,
                                            fixture_image: str) -> None:
    where = storage.layer_dirs(inspect_image(docker_client, fixture_image))
    assert where is not None
    layers = [list(storage.layer_entries(d)) for d in where.dirs]
    second = {e.path: e for e in layers[-3]}
    assert second["t/d1/.wh.f1"].kind == "file"
    assert second["t/d1/.wh.f1"].mode == 0o600
    assert "t/d2/.wh..wh..opq" in second
    assert second["t/sym"].kind == "dir"
    first = {e.path: e for e in layers[-4]}
    assert first["t/suid"].mode == 0o4755
    assert first["t/d2"].mode == 0o2775
    links = sorted(e.path for e in first.values() if e.kind == "hardlink")
    assert links == ["t/h1", "t/h2"]  # t/d1/h3 comes first in the walk: it holds the bytes
    assert first["t/h1"].linkname == "t/d1/h3"



def test_empty_and_repeated_layers(docker_client: DockerClient) -> None:
    """Loaded from an archive: a layer, an empty one, and the empty one again (a repeat)."""
    tag = f"layerkit-test/storage-loaded-{uuid.uuid4().hex[:8]}:1"
    first = layer(directory("e"), file("e/f", b"x"), symlink("e/s", "f"))
    archive = legacy_archive(Image([first, layer(), layer()], tag=tag))
    try:
        load_image(docker_client, iter([archive]))
        _same_everywhere(docker_client, tag)
        where = storage.layer_dirs(inspect_image(docker_client, tag))
        assert where is not None
        assert [len(list(storage.layer_entries(d))) for d in where.dirs] == [3, 0, 0]
        stored = storage.read_image(tag, (tag,), where)
        assert [lay.repeat_link for lay in stored.layers] == [False, False, True]
    finally:
        _remove(docker_client, tag)


def test_squash_of_a_loaded_image_gives_the_saves_image_id(docker_client: DockerClient) -> None:
    """A loaded image keeps its tars' order (not lexical) and header fields (a whiteout's old
    time) in a save: the storage source reads them from the engine's tar-split records, so a
    reproducible squash from the layer directories gives the image ID the squash of the save
    gives (a hardlink made a file, a whiteout kept over the layer below; the save stores the
    range's layers in an order of its own, by v1 layer ID)."""
    tag = f"layerkit-test/storage-loaded-order-{uuid.uuid4().hex[:8]}:1"
    tars = [layer(directory("e"), file("e/gone", b"g"), file("e/keep", b"k")),
            layer(file("zz", b"1"), directory("a"), file("a/f", b"f"), whiteout("e/gone"),
                  file("b", b"b"), hardlink("c", "b")),
            layer(file("b", b"new"), file("a/f", b"2"), file("a/0", b"0")),
            layer(file("y", b"z"), directory("a"), file("a/9", b"9"))]
    made: list[str] = []
    try:
        load_image(docker_client, iter([legacy_archive(Image(tars, tag=tag))]))
        made.append(tag)
        _same_everywhere(docker_client, tag)
        with save_image(docker_client, tag) as stream:
            stored = [lay.data_offset for lay in read_archive(stream).images[0].layers[1:]]
        assert stored != sorted(stored), "the case of this test: layers saved out of order"
        ids = {}
        for source in ("storage", "save"):
            out = f"layerkit-test/storage-loaded-sq-{source}-{uuid.uuid4().hex[:8]}:1"
            made.append(out)
            result = squash.squash(docker_client, tag, SquashOptions(
                tag=out, last=3, reproducible=True, source=source), os.environ)
            assert result.verified
            assert result.converted_hardlinks == 1
            assert result.markers == 1
            ids[source] = result.image_id
        assert ids["storage"] == ids["save"]
    finally:
        _remove(docker_client, *made)


def _script(forms: list[Form]) -> str:
    """Shell steps that make the layer `forms` describe, under /r."""
    steps = []
    for form in forms:
        path = shlex.quote(f"/r/{form.path}")
        steps.append(f"prep {shlex.quote(form.path)}; rm -rf {path}")
        if form.kind == "opaque":
            steps.append(f"mkdir {path}")
        elif form.kind == "dir":
            steps.append(f"mkdir {path} && chmod {form.mode:o} {path}")
        elif form.kind == "symlink":
            steps.append(f"ln -s {shlex.quote(form.link)} {path}")
        elif form.kind == "file":
            steps.append(f"printf %s {shlex.quote(form.fill * form.size)} > {path} "
                         f"&& chmod {form.mode:o} {path}")
    return " ; ".join(steps) or "true"


# makes every ancestor of /r/$1 a directory (a file or symlink in the way is removed)
PREP = ("prep() { d=/r; rest=\"$1\"; while case \"$rest\" in */*) true;; *) false;; esac; do "
        "d=\"$d/${rest%%/*}\"; rest=\"${rest#*/}\"; "
        "if [ -L \"$d\" ] || { [ -e \"$d\" ] && [ ! -d \"$d\" ]; }; then rm -f \"$d\"; fi; "
        "mkdir -p \"$d\"; done; }")


@pytest.mark.parametrize("seed", range(4))
def test_random_layer_stacks_give_the_same_report(docker_client: DockerClient, base_id: str,
                                                  seed: int) -> None:
    rng = random.Random(seed)
    layers = random_forms(rng, min_layers=2)
    steps = [f"RUN mkdir -p /r && {PREP}; {_script(forms)}" for forms in layers]
    tag = f"layerkit-test/storage-random-{seed}-{uuid.uuid4().hex[:8]}:1"
    try:
        _build(docker_client, f"FROM {base_id}\n" + "\n".join(steps) + "\n", tag)
        _same_everywhere(docker_client, tag)
        if len(layers) >= 2:
            _squashed_alike(docker_client, tag, base_id)
    finally:
        _remove(docker_client, tag)


# --- the choice ---------------------------------------------------------------------------------

INFO = {"Driver": "overlay2", "DriverStatus": [["Native Overlay Diff", "true"]]}
ROOT = str(Path(__file__).resolve().parents[2])  # this checkout


def test_auto_takes_storage_here(docker_client: DockerClient, fixture_image: str) -> None:
    inspect = inspect_image(docker_client, fixture_image)
    choice = choose("auto", fixture_image, local=True, info=INFO, inspect=inspect)
    assert choice.name == "storage"


def test_a_directory_that_cannot_be_read_means_the_save(docker_client: DockerClient,
                                                        fixture_image: str) -> None:
    inspect = inspect_image(docker_client, fixture_image)
    data = inspect["GraphDriver"]["Data"]
    missing = "/nonexistent/layerkit/diff"
    unreadable = {**inspect, "GraphDriver": {"Name": "overlay2", "Data": {
        **data, "LowerDir": data["LowerDir"].replace(data["LowerDir"].split(":")[0], missing)}}}
    choice = choose("auto", fixture_image, local=True, info=INFO, inspect=unreadable)
    assert choice.name == "save"
    assert missing in choice.reason
    with pytest.raises(UsageError, match="--source storage"):
        choose("storage", fixture_image, local=True, info=INFO, inspect=unreadable)


def _copy_for_anyone(where: Path) -> None:
    """layerkit and the two libraries its source choice imports, in a directory any user may
    read: the checkout and its virtualenv may sit under one only root may enter."""
    shutil.copytree(Path(ROOT) / "layerkit", where / "layerkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for module in (xxhash, zstandard):
        package = Path(str(module.__file__)).parent
        shutil.copytree(package, where / package.name)
    for path in [where, *where.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_directories_this_user_cannot_read_mean_the_save(docker_client: DockerClient,
                                                         fixture_image: str) -> None:
    """The real directories, looked at by an unprivileged user (nobody): /var/lib/docker is
    root's alone, so auto takes the save and says which directory it could not read."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root, to look as another user")
    inspect = inspect_image(docker_client, fixture_image)
    code = ("import json, sys; from layerkit.image.source import choose; "
            "c = choose('auto', 'x', local=True, info=json.loads(sys.argv[1]), "
            "inspect=json.loads(sys.argv[2])); print(c.name, c.reason)")
    packages = Path(tempfile.mkdtemp(prefix="lkt-anyone-"))
    try:
        _copy_for_anyone(packages)
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             os.path.realpath(sys.executable), "-c", code, json.dumps(INFO),
             json.dumps(inspect)],
            capture_output=True, text=True, check=False, timeout=60, cwd=packages,
            env={"PYTHONPATH": str(packages), "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        shutil.rmtree(packages)
    assert done.returncode == 0, done.stderr
    name, reason = done.stdout.split(" ", 1)
    assert name == "save"
    assert "is not readable here" in reason


def test_another_drivers_form_means_the_save(docker_client: DockerClient,
                                             fixture_image: str) -> None:
    inspect = inspect_image(docker_client, fixture_image)
    other = {**inspect, "GraphDriver": {"Name": "vfs", "Data": None}}
    assert choose("auto", fixture_image, local=True, info=INFO, inspect=other).name == "save"
    snapshotter = {**INFO, "Driver": "overlayfs"}  # the containerd image store
    assert choose("auto", fixture_image, local=True, info=snapshotter,
                  inspect=inspect).name == "save"
    naive = {**INFO, "DriverStatus": [["Native Overlay Diff", "false"]]}
    assert choose("auto", fixture_image, local=True, info=naive, inspect=inspect).name == "save"


def test_a_remote_engine_url_means_the_save(fixture_image: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKER_HOST naming a tcp engine: auto reads the save (through the SDK), and --source
    storage is refused with the reason; the URL is never contacted for storage."""
    assert choose("auto", fixture_image, local=False, info=None, inspect=None).name == "save"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # nothing listens: never reached
    result = CliRunner().invoke(app, ["analyze", fixture_image, "--no-report",
                                      "--source", "storage"])
    assert result.exit_code == 2
    assert "--source storage: the engine is not local" in result.output


def test_squash_with_archive_out_reads_the_save(docker_client: DockerClient, fixture_image: str,
                                                base_id: str, tmp_path: Path) -> None:
    """--archive-out copies the kept layers' tars, which only a save has: auto takes the save,
    and --source storage is refused before anything is read."""
    options = SquashOptions(archive_out=tmp_path / "out.tar", base=base_id, load=False,
                            source="storage")
    with pytest.raises(UsageError, match="--source storage: --archive-out"):
        squash.squash(docker_client, fixture_image, options, os.environ)
    assert not (tmp_path / "out.tar").exists()
