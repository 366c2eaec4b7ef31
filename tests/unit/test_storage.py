"""image.storage on layer directories made here (no engine): the tar forms of whiteouts,
opaque directories and hardlinks, the walk's order, which contents are read, the names a save
would give, and an image that changes underneath."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from layerkit.errors import SourceChanged
from layerkit.image import storage
from layerkit.image.storage import LayerDirs


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))  # a 0/0 character device
    except PermissionError:
        pytest.skip("making device nodes needs root")


def _opaque(path: Path) -> None:
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    except OSError:
        pytest.skip("trusted xattrs need root and a file system that keeps them")


def test_the_walk_gives_the_tar_forms_in_the_engines_order(tmp_path: Path) -> None:
    root = tmp_path / "diff"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a.txt").write_text("x")
    (root / "a" / "b" / "f").write_text("12345")
    os.link(root / "a" / "b" / "f", root / "a" / "z")
    os.link(root / "a" / "b" / "f", root / "0")
    (root / "a" / "link").symlink_to("b/f")
    _whiteout(root / "a" / "gone")
    (root / "o").mkdir()
    _opaque(root / "o")
    os.chmod(root / "o", 0o2755)
    entries = list(storage.layer_entries(root))
    assert [(e.path, e.kind) for e in entries] == [
        ("0", "file"),                  # names sorted per directory, depth first
        ("a", "dir"),
        ("a/b", "dir"),
        ("a/b/f", "hardlink"),          # the inode was met first as "0"
        ("a/.wh.gone", "file"),         # in the place of "gone"
        ("a/link", "symlink"),
        ("a/z", "hardlink"),
        ("a.txt", "file"),
        ("o", "dir"),
        ("o/.wh..wh..opq", "file"),     # right after its directory
    ]
    by_path = {e.path: e for e in entries}
    assert by_path["a/b/f"].linkname == by_path["a/z"].linkname == "0"
    assert by_path["0"].size == 5
    assert by_path["a/.wh.gone"].mode == 0o600
    assert by_path["o"].mode == 0o2755
    assert by_path["o/.wh..wh..opq"].mode == 0o755  # the directory's permission bits only
    assert by_path["o/.wh..wh..opq"].mtime == 0
    assert by_path["a/link"].linkname == "b/f"


def _image(tmp_path: Path, layers: list[dict[str, bytes]]) -> LayerDirs:
    dirs = []
    for i, files in enumerate(layers):
        root = tmp_path / "overlay2" / f"l{i}" / "diff"
        root.mkdir(parents=True)
        for name, data in files.items():
            (root / name).write_bytes(data)
        dirs.append(root)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [
        f"sha256:{i}" for i in range(len(layers))]}, "history": []}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    where = tmp_path / "image" / "overlay2" / "imagedb" / "content" / "sha256"
    where.mkdir(parents=True)
    (where / image_id.removeprefix("sha256:")).write_bytes(config)
    inspect = {"Id": image_id, "RootFS": {"Layers": [f"sha256:{i}" for i in range(len(layers))]},
               "GraphDriver": {"Name": "overlay2", "Data": {
                   "UpperDir": str(dirs[-1]), "LowerDir": ":".join(map(str, dirs[-2::-1]))}}}
    found = storage.layer_dirs(inspect)
    assert found is not None
    assert found.dirs == tuple(dirs)
    return found


def test_contents_are_read_only_to_tell_same_sized_versions_apart(tmp_path: Path) -> None:
    big = os.urandom(100_000)
    where = _image(tmp_path, [
        {"same": big, "other": b"abc", "meta": b"xyz", "alone": b"only here"},
        {"same": big[:-1] + b"!", "other": b"abcd", "meta": b"xyz"}])
    image = storage.read_image("img:1", ("img:1",), where)
    digests = {(lay.index, e.path): e.digest for lay in image.layers for e in lay.entries}
    assert digests[0, "alone"] is None                       # one version: never read
    assert digests[0, "other"] is None                       # sizes differ: not read
    assert digests[0, "meta"] == digests[1, "meta"] is not None  # equal: a copy-up
    assert digests[0, "same"] != digests[1, "same"]          # equal heads: read whole
    assert not digests[0, "same"].startswith("head:")  # type: ignore[union-attr]
    merged = storage.read_image("img:1", (), where, visible_from=0)  # a squash of both
    digests = {(lay.index, e.path): e.digest for lay in merged.layers for e in lay.entries}
    assert all(digests[1, path] for path in ("same", "other", "meta"))  # what the tree shows
    assert digests[0, "alone"] is not None
    assert digests[0, "other"] is None  # replaced above, and no same-sized version to tell


def test_a_layer_gone_midway_is_an_error_naming_the_image(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    where = _image(tmp_path, [{"a": b"1"}, {"b": b"2"}])
    walk = storage.layer_entries

    def removed_after_the_first(root: Path):  # type: ignore[no-untyped-def]
        if root == where.dirs[0]:
            (where.dirs[1] / "b").unlink()
            where.dirs[1].rmdir()
        return walk(root)

    monkeypatch.setattr(storage, "layer_entries", removed_after_the_first)
    with pytest.raises(SourceChanged, match="image img:1 changed or was removed"):
        storage.read_image("img:1", (), where)


def test_a_config_that_is_not_the_images_is_refused(tmp_path: Path) -> None:
    where = _image(tmp_path, [{"a": b"1"}])
    where.config.write_bytes(b"{}")
    with pytest.raises(SourceChanged, match="img:1"):
        storage.read_image("img:1", (), where)


def test_other_forms_are_not_overlay2_layer_dirs() -> None:
    assert storage.layer_dirs({"GraphDriver": {"Name": "vfs", "Data": {"Dir": "/x"}}}) is None
    assert storage.layer_dirs({"GraphDriver": {"Name": "overlay2", "Data": None}}) is None
    two_layers = {"RootFS": {"Layers": ["sha256:a", "sha256:b"]}, "GraphDriver": {
        "Name": "overlay2", "Data": {"UpperDir": "/var/lib/docker/overlay2/x/diff"}}}
    assert storage.layer_dirs(two_layers) is None  # a lower layer is not named


@pytest.mark.parametrize(("ref", "names"), [
    ("layerkit/base", ("layerkit/base:latest",)),
    ("layerkit/base:0.1.0", ("layerkit/base:0.1.0",)),
    ("docker.io/library/debian:12", ("debian:12",)),
    ("localhost:5000/x", ()),      # not a tag of this image
    ("21cd1534d1db", ()),          # an ID
    ("layerkit/base@sha256:" + "0" * 64, ()),
])
def test_saved_refs_are_the_names_a_save_gives(ref: str, names: tuple[str, ...]) -> None:
    tags = ["layerkit/base:latest", "layerkit/base:0.1.0", "debian:12"]
    assert storage.saved_refs(ref, tags) == names


def test_whiteouts_are_never_opened(tmp_path: Path) -> None:
    """A whiteout is a `.wh.` entry with no such file in the directory: reading every content
    (a squash's range) or comparing same-named versions must not try to open it."""
    where = _image(tmp_path, [{"a": b"1"}, {}, {}])
    _whiteout(where.dirs[1] / "a")
    _whiteout(where.dirs[2] / "a")
    image = storage.read_image("img:1", (), where, visible_from=0)
    assert [e.path for lay in image.layers for e in lay.entries] == ["a", ".wh.a", ".wh.a"]
