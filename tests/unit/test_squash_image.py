"""squash without an engine: --archive in, --archive-out out; range choice, config and history
rewriting, reproducible IDs, the merged tree of the result, clean failure."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerkit.errors import NothingToSquash, UsageError
from layerkit.image.archive import read_archive
from layerkit.image.fsview import replay
from layerkit.squash.config import image_id, squashed_config
from layerkit.squash.squash import SquashOptions, choose_start, squash
from tests.imagetar import (
    Image,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    oci_archive,
    opaque,
    whiteout,
)

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
CONFIG = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["/bin/app"], "Entrypoint": ["/init"],
          "WorkingDir": "/srv", "User": "app", "Labels": {"org.layerkit.test": "1"},
          "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGINT",
          "Healthcheck": {"Test": ["CMD", "true"]}, "OnBuild": ["RUN true"]}
HISTORY: list[dict[str, Any]] = [
    {"created_by": "base rootfs", "created": "2024-01-01T00:00:00Z"},
    {"created_by": "ENV A=1", "created": "2024-01-01T00:00:00Z", "empty_layer": True},
    {"created_by": "RUN add tool", "created": "2024-01-02T00:00:00Z"},
    {"created_by": "RUN remove junk", "created": "2024-01-03T00:00:00Z"},
    {"created_by": "CMD app", "created": "2024-01-03T00:00:00Z", "empty_layer": True},
    {"created_by": "RUN chmod", "created": "2024-01-04T00:00:00Z"},
]
LAYERS = [
    [directory("etc"), file("etc/a", b"alpha"), directory("opt"), file("opt/junk", 4000),
     directory("opt/d"), file("opt/d/x", b"x")],
    [directory("bin"), file("bin/tool", b"T" * 300, mode=0o755), hardlink("bin/t2", "bin/tool"),
     file("tmp-big", 9000)],
    [whiteout("opt/junk"), whiteout("tmp-big"), directory("opt/d"), opaque("opt/d"),
     file("opt/d/y", b"y")],
    [file("bin/tool", b"T" * 300, mode=0o700)],
]


def write_source(tmp_path: Path, *, oci: bool = False) -> Path:
    image = Image([layer(*m) for m in LAYERS], history=HISTORY, tag="test/src:1",
                  extra_config={"config": CONFIG, "created": "2024-01-04T00:00:00Z"})
    path = tmp_path / "src.tar"
    path.write_bytes(oci_archive(image, compression=("gzip",)) if oci
                     else legacy_archive(image))
    return path


def run(tmp_path: Path, src: Path, **options: Any) -> tuple[Any, Any]:
    out = tmp_path / "out.tar"
    opts = SquashOptions(archive=src, archive_out=out, tag="test/out:1", load=False, **options)
    result = squash(None, None, opts, EPOCH)
    return result, read_archive(out, hash_content=True).images[0]


@pytest.mark.parametrize("oci", [False, True])
def test_squash_from_archive_keeps_tree_config_and_history(tmp_path: Path, oci: bool) -> None:
    src = write_source(tmp_path, oci=oci)
    result, out = run(tmp_path, src, last=3)
    source = read_archive(src, hash_content=True).images[0]
    assert replay([lay.entries for lay in out.layers]).fingerprint() == \
        replay([lay.entries for lay in source.layers]).fingerprint()
    assert (result.layers_before, result.layers_after, result.squashed_layers) == (4, 2, 3)
    assert out.refs == ("test/out:1",)
    assert out.config["config"] == CONFIG
    assert out.layers[0].digest == source.layers[0].digest
    history = out.config["history"]
    assert [h["created_by"] for h in history[:2]] == ["base rootfs", "ENV A=1"]
    assert history[2]["created_by"].startswith("layerkit squash: 3 layers")
    assert history[2]["comment"].splitlines() == ["RUN add tool", "RUN remove junk", "CMD app",
                                                  "RUN chmod"]
    assert len(history) == 3
    assert result.bytes_after < result.bytes_before
    assert result.phases.read >= 0
    assert result.phases.merge >= 0
    # the kept base still has opt/junk, so its whiteout stays; tmp-big never reached the base
    names = [e.path for e in out.layers[1].entries]
    assert "opt/.wh.junk" in names
    assert ".wh.tmp-big" not in names
    assert "opt/d/.wh..wh..opq" in names


def test_full_squash_has_one_layer_and_no_markers(tmp_path: Path) -> None:
    result, out = run(tmp_path, write_source(tmp_path), all_layers=True)
    assert len(out.layers) == 1
    assert result.markers == 0
    assert not [e for e in out.layers[0].entries if ".wh." in e.path]
    assert out.config["history"][0]["created_by"].startswith("layerkit squash: 4 layers")


def test_reproducible_ids_with_source_date_epoch(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    first, _ = run(tmp_path, src, last=2)
    second, _ = run(tmp_path, src, last=2)
    assert first.image_id == second.image_id
    again = squash(None, None, SquashOptions(archive=src, archive_out=tmp_path / "o.tar",
                                             last=2, load=False, reproducible=True), {})
    assert again.image_id == squash(None, None, SquashOptions(
        archive=src, archive_out=tmp_path / "p.tar", last=2, load=False, reproducible=True),
        {}).image_id


def test_archive_out_is_a_loadable_layout_with_gzip_layers(tmp_path: Path) -> None:
    _, _ = run(tmp_path, write_source(tmp_path), last=2)
    with tarfile.open(tmp_path / "out.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        for name in manifest[0]["Layers"]:
            head = tar.extractfile(name).read(2)  # type: ignore[union-attr]
            assert head == b"\x1f\x8b"
        config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
    assert manifest[0]["Config"] == image_id(json.loads(config)).removeprefix("sha256:") + ".json"
    assert not list(tmp_path.glob(".*partial"))


def test_nothing_to_squash_is_exit_2(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    with pytest.raises(NothingToSquash) as caught:
        run(tmp_path, src, last=1)
    assert caught.value.exit_code == 2
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize(("kwargs", "start"), [
    ({"all_layers": True}, 0), ({"last": 2}, 3), ({"base_layers": ["a", "b"]}, 2)])
def test_choose_start(kwargs: dict[str, Any], start: int) -> None:
    args: dict[str, Any] = {"base_layers": None, "last": None, "all_layers": False, **kwargs}
    assert choose_start(5, source_layers=["a", "b", "c", "d", "e"], **args) == start


@pytest.mark.parametrize("kwargs", [
    {}, {"all_layers": True, "last": 2}, {"last": 9}, {"last": 0},
    {"base_layers": ["x"]}, {"base_layers": ["a", "b", "c", "d"]}])
def test_choose_start_refuses(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"base_layers": None, "last": None, "all_layers": False, **kwargs}
    with pytest.raises(UsageError):
        choose_start(5, source_layers=["a", "b", "c", "d", "e"], **args)


def test_needs_somewhere_to_put_the_result(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        squash(None, None, SquashOptions(archive=write_source(tmp_path), all_layers=True), {})


def test_squashed_config_without_history_still_names_the_squash() -> None:
    image = read_archive(io.BytesIO(legacy_archive(Image(
        [layer(file("a")), layer(file("b"))], history=[])))).images[0]
    config = squashed_config(image, 0, "sha256:" + "0" * 64, "2024-01-01T00:00:00Z")
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64]
    assert len(config["history"]) == 1


def test_disk_full_is_one_clean_error_and_no_temp_files(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import errno  # noqa: PLC0415

    from layerkit.errors import SquashError  # noqa: PLC0415
    from layerkit.squash import squash as squash_module  # noqa: PLC0415

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    src, work = write_source(tmp_path), tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(squash_module, "write_layer_seekable", full)
    with pytest.raises(SquashError) as caught:
        squash(None, None, SquashOptions(archive=src, archive_out=tmp_path / "o.tar", load=False,
                                         all_layers=True, tmp_dir=work), EPOCH)
    assert "no space left" in caught.value.message
    assert list(work.iterdir()) == []
    assert not (tmp_path / "o.tar").exists()
