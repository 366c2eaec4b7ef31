"""The reproducible rewrite of a built layer and config, without an engine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from layerkit.build.dockerfile import generate
from layerkit.build.reproducible import _config, _rewrite_layer, epoch_of
from layerkit.build.specs import load
from layerkit.errors import UsageError
from tests.conftest import PACKAGE_DIR
from tests.imagetar import directory, file, hardlink, layer
from tests.unit.test_specs import write_spec

EPOCH = 1_700_000_000


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _with_times(data: bytes, mtime: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            member.mtime = mtime
            member.pax_headers = {"atime": "1.5", "SCHILY.xattr.security.capability": "x"}
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def test_layer_times_clamped_and_run_to_run_files_dropped() -> None:
    built = _with_times(layer(
        directory("etc"), file("etc/app.conf", b"v"), directory("var"), directory("var/log"),
        file("var/log/dpkg.log", b"today"), file("var/log/kept.log", b"k"),
        hardlink("var/log/link.log", "var/log/kept.log"), directory("var/cache"),
        directory("var/cache/ldconfig"), file("var/cache/ldconfig/aux-cache", b"inodes")),
        EPOCH + 5000)
    out = io.BytesIO()
    dropped = _rewrite_layer(io.BytesIO(built), out, EPOCH)
    members = _members(out.getvalue())
    assert dropped == 2
    assert "var/log/dpkg.log" not in members
    assert "var/cache/ldconfig/aux-cache" not in members
    assert "var/log/kept.log" in members  # a hardlink points at it
    assert {m.mtime for m in members.values()} == {EPOCH}
    assert all(set(m.pax_headers) <= {"SCHILY.xattr.security.capability"}
               for m in members.values())
    older = _members(_rewrite_layer_bytes(_with_times(layer(file("a", b"x")), EPOCH - 10)))
    assert older["a"].mtime == EPOCH - 10  # times before the epoch stay


def _rewrite_layer_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    _rewrite_layer(io.BytesIO(data), out, EPOCH)
    return out.getvalue()


def test_same_files_different_times_give_the_same_bytes() -> None:
    files = (directory("opt"), file("opt/a", b"same"))
    first = _rewrite_layer_bytes(_with_times(layer(*files), EPOCH + 100))
    second = _rewrite_layer_bytes(_with_times(layer(*files), EPOCH + 999))
    assert first == second


def test_config_keeps_settings_and_drops_the_builds_traces() -> None:
    config = {"created": "2026-12-02T12:00:00.123Z", "container": "abc",
              "config": {"Hostname": "abc", "Image": "sha256:parent", "Env": ["A=1"]},
              "container_config": {"Hostname": "abc", "Image": "sha256:parent"},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:p", "sha256:old"]},
              "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "ADD x"},
                          {"created": "2026-12-02T12:00:00Z", "created_by": "RUN y"}]}
    new = _config(config, 1, ["sha256:new"], EPOCH)
    assert new["rootfs"]["diff_ids"] == ["sha256:p", "sha256:new"]
    assert new["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in new["history"]} == {"2023-11-14T22:13:20Z"}
    assert "container" not in new
    assert new["config"] == {"Hostname": "", "Image": "", "Env": ["A=1"]}
    assert config["config"]["Image"] == "sha256:parent"  # the input is left alone


def test_epoch_from_the_environment() -> None:
    assert epoch_of({}) == EPOCH
    assert epoch_of({"SOURCE_DATE_EPOCH": "1234"}) == 1234
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        epoch_of({"SOURCE_DATE_EPOCH": "yesterday"})


def test_reproducible_dockerfile_declares_the_epoch(tmp_path: Path) -> None:
    spec = load(write_spec(tmp_path, 'parent = "x"\n[[packages]]\ninstall = ["curl"]\n'),
                PACKAGE_DIR)
    text = generate(spec, "x", "1", reproducible=True).text
    assert text.splitlines()[1:3] == ["FROM x", "ARG SOURCE_DATE_EPOCH"]
    assert "SOURCE_DATE_EPOCH" not in generate(spec, "x", "1").text
