"""`layerkit diff`: files added, removed and changed (content, mode, owner, type, link), with
the layer of each final version, the layers side by side and the config; table and JSON."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from layerkit.analyze.diff import diff_images
from layerkit.cli.app import app
from layerkit.image.archive import read_archive
from tests.imagetar import Image, directory, file, layer, legacy_archive, symlink, whiteout

BASE = layer(directory("etc"), file("etc/config", b"one"), file("etc/keep", b"same"),
             file("etc/gone", b"bye"), file("etc/mode", b"m"), file("etc/owner", b"o"),
             symlink("etc/link", "/etc/keep"))
CONFIG_A = {"config": {"Env": ["PATH=/usr/bin", "ROLE=a"], "Cmd": ["run"], "User": "app",
                       "Labels": {"x": "1"}, "ExposedPorts": {"80/tcp": {}}}}
CONFIG_B = {"config": {"Env": ["PATH=/usr/bin", "ROLE=b", "NEW=1"], "Cmd": ["run", "-v"],
                       "Labels": {"x": "1", "y": "2"}, "ExposedPorts": {"8080/tcp": {}}}}
TOP_B = layer(directory("etc"), file("etc/config", b"two"), whiteout("etc/gone"),
              file("etc/mode", b"m", mode=0o755), file("etc/owner", b"o", uid=1000, gid=1000),
              symlink("etc/link", "/etc/config"), file("etc/new", b"hello"))


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(legacy_archive(Image([BASE], [{"created_by": "ADD base"}], tag="app:1",
                                       extra_config=CONFIG_A)))
    b.write_bytes(legacy_archive(Image([BASE, TOP_B], [{"created_by": "ADD base"},
                                                       {"created_by": "RUN change"}],
                                       tag="app:2", extra_config=CONFIG_B)))
    return a, b


def _diff(tmp_path: Path) -> Any:
    a, b = _pair(tmp_path)
    return diff_images(read_archive(a, hash_content=True).images[0],
                       read_archive(b, hash_content=True).images[0])


def test_files_by_kind_of_change_with_their_layers(tmp_path: Path) -> None:
    diff = _diff(tmp_path)
    changes = {f.path: (f.change, f.what, f.layer_a, f.layer_b) for f in diff.files}
    assert "/etc/keep" not in changes
    assert changes["/etc/config"] == ("changed", ("content",), 0, 1)
    assert changes["/etc/gone"][:2] == ("removed", ())
    assert changes["/etc/new"][:2] == ("added", ())
    assert changes["/etc/mode"][1] == ("mode",)
    assert changes["/etc/owner"][1] == ("owner",)
    assert changes["/etc/link"][1] == ("link",)
    assert diff.shared_layers == 1
    assert [p.same for p in diff.layers] == [True, False]


def test_config_changes(tmp_path: Path) -> None:
    diff = _diff(tmp_path)
    config = {(c.key, c.name): (c.a, c.b) for c in diff.config}
    assert config == {
        ("env", "ROLE"): ("a", "b"), ("env", "NEW"): (None, "1"),
        ("labels", "y"): (None, "2"), ("ports", "80/tcp"): ("exposed", None),
        ("ports", "8080/tcp"): (None, "exposed"), ("cmd", ""): ('["run"]', '["run", "-v"]'),
        ("user", ""): ("app", None), ("history", "1"): (None, "RUN change")}


def test_same_image_is_identical(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    image = read_archive(a, hash_content=True).images[0]
    diff = diff_images(image, image)
    assert diff.identical
    assert diff.files == ()


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_cli_table_and_json_on_saved_tars(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    table = _run("diff", str(a), str(b))
    assert table.exit_code == 0, table.stderr
    assert table.stdout.startswith("app:1 -> app:2: 1 of 2 layers shared; 1 file added, "
                                   "1 removed")
    assert "/etc/config" in table.stdout
    assert "ROLE" in table.stdout
    body = json.loads(_run("diff", str(a), str(b), "--format", "json").stdout)
    assert body["schema"] == "layerkit/diff/v1"
    assert body["counts"]["added"] == 1
    new = next(f for f in body["files"] if f["path"] == "/etc/new")
    assert new == {"path": "/etc/new", "change": "added", "what": [], "size_a_bytes": 0,
                   "size_b_bytes": 5, "layer_a": None, "layer_b": 1}


def test_cli_table_shortens_long_config_values(tmp_path: Path) -> None:
    step = "RUN " + "apt-get install something-long " * 12
    a, b = tmp_path / "h1.tar", tmp_path / "h2.tar"
    for path, tag, steps in ((a, "h:1", [step]), (b, "h:2", [step + "x"])):
        path.write_bytes(legacy_archive(Image([layer(file("f", b"x"))], tag=tag, extra_config={
            "history": [{"created_by": s} for s in steps]})))
    table = _run("diff", str(a), str(b))
    assert table.exit_code == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) < 200
    assert "--format json has them whole" in table.stdout
    body = json.loads(_run("diff", str(a), str(b), "--format", "json").stdout)
    assert body["config"][0]["b"] == step + "x"


@pytest.mark.parametrize("bad", ["Bad Name!", "UPPER:1"])
def test_cli_refuses_a_bad_name_before_the_engine(tmp_path: Path, bad: str) -> None:
    a, _ = _pair(tmp_path)
    result = CliRunner().invoke(app, ["diff", str(a), bad],
                                env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert result.exit_code == 2
    assert "not a valid image name" in result.stderr


def test_times_only_when_asked(tmp_path: Path) -> None:
    a = tmp_path / "t1.tar"
    b = tmp_path / "t2.tar"
    a.write_bytes(legacy_archive(Image([layer(file("f", b"x"))], tag="t:1")))
    later = layer(file("f", b"x"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(later)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for member in src.getmembers():
            member.mtime += 60
            dst.addfile(member, src.extractfile(member))
    b.write_bytes(legacy_archive(Image([buf.getvalue()], tag="t:2")))
    image_a = read_archive(a, hash_content=True).images[0]
    image_b = read_archive(b, hash_content=True).images[0]
    assert diff_images(image_a, image_b).files == ()
    (change,) = diff_images(image_a, image_b, times=True).files
    assert (change.path, change.what) == ("/f", ("time",))
