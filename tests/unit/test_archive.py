"""archive.read_archive on synthetic legacy and OCI archives: layers, entries, history, errors."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import xxhash

from layerkit.errors import ArchiveError, MissingLayer, NotATar, TruncatedArchive
from layerkit.image.archive import Archive, Layer, gc_paused, layer_tar_chunks, read_archive
from tests.imagetar import (
    Image,
    compress,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    oci_archive,
    opaque,
    sha,
    symlink,
    whiteout,
)

BASE = layer(directory("etc"), file("etc/a", b"alpha"), file("etc/big", 3000, mode=0o600),
             hardlink("etc/a-link", "etc/a"), symlink("etc/sl", "/nowhere"))
TOP = layer(directory("etc"), whiteout("etc/big"), opaque("etc"), file("etc/b", b"beta", uid=7))
EMPTY = layer()


def _paths(archive: Archive, index: int) -> list[str]:
    return [e.path for e in archive.images[0].layers[index].entries]


def test_legacy_layers_entries_and_kinds() -> None:
    archive = read_archive(io.BytesIO(legacy_archive(Image([BASE, TOP]))))
    assert archive.layout == "legacy"
    image = archive.images[0]
    assert image.refs == ("test/image:latest",)
    assert [layer.digest for layer in image.layers] == [sha(BASE), sha(TOP)]
    assert _paths(archive, 0) == ["etc", "etc/a", "etc/big", "etc/a-link", "etc/sl"]
    kinds = {e.path: (e.kind, e.size, e.mode, e.linkname) for e in image.layers[0].entries}
    assert kinds["etc/big"] == ("file", 3000, 0o600, "")
    assert kinds["etc/a-link"] == ("hardlink", 0, 0o644, "etc/a")
    assert kinds["etc/sl"] == ("symlink", 0, 0o777, "/nowhere")
    assert image.layers[0].content_bytes == 3005
    assert [e.path for e in image.layers[1].entries] == [
        "etc", "etc/.wh.big", "etc/.wh..wh..opq", "etc/b"]
    assert image.layers[1].entries[-1].uid == 7


def test_manifest_order_does_not_matter() -> None:
    first = read_archive(io.BytesIO(legacy_archive(Image([BASE, TOP]), manifest_first=True)))
    last = read_archive(io.BytesIO(legacy_archive(Image([BASE, TOP]))))
    assert [(x.digest, x.entries, x.created_by) for x in first.images[0].layers] == [
        (x.digest, x.entries, x.created_by) for x in last.images[0].layers]
    assert first.images[0].layers[0].data_offset != last.images[0].layers[0].data_offset


def test_history_skips_empty_layer_steps() -> None:
    history = [{"created_by": "ADD rootfs"}, {"created_by": "ENV A=1", "empty_layer": True},
               {"created_by": "RUN make-empty"}, {"created_by": "LABEL x=y", "empty_layer": True},
               {"created_by": "RUN top"}]
    image = read_archive(io.BytesIO(legacy_archive(
        Image([BASE, EMPTY, TOP], history)))).images[0]
    assert [layer.created_by for layer in image.layers] == [
        "ADD rootfs", "RUN make-empty", "RUN top"]
    assert [layer.history_index for layer in image.layers] == [0, 2, 4]
    assert [h.layer_index for h in image.history] == [0, None, 1, None, 2]
    assert image.layers[1].entries == ()


def test_history_shorter_than_layers_leaves_created_by_empty() -> None:
    image = read_archive(io.BytesIO(legacy_archive(
        Image([BASE, TOP], [{"comment": "Imported from -"}])))).images[0]
    assert [layer.created_by for layer in image.layers] == ["", ""]
    assert [layer.history_index for layer in image.layers] == [0, None]


def test_duplicate_layer_is_linked_and_read_once() -> None:
    archive = read_archive(io.BytesIO(legacy_archive(Image([BASE, EMPTY, TOP, EMPTY]))))
    layers = archive.images[0].layers
    assert layers[1].member != layers[3].member
    assert layers[1].digest == layers[3].digest == sha(EMPTY)
    assert layers[3].entries == ()


@pytest.mark.parametrize("compression", [("gzip", "zstd"), ("none", "gzip"), ("zstd", "zstd")])
def test_oci_layout_with_compressed_layers(compression: tuple[str, str]) -> None:
    data = oci_archive(Image([BASE, TOP]), compression=compression, with_manifest_json=False)
    archive = read_archive(io.BytesIO(data))
    assert archive.layout == "oci"
    image = archive.images[0]
    assert [layer.compression for layer in image.layers] == list(compression)
    assert image.refs == ("test/image:latest",)
    assert _paths(archive, 0) == ["etc", "etc/a", "etc/big", "etc/a-link", "etc/sl"]
    assert image.layers[0].content_bytes == 3005


def test_oci_with_legacy_manifest_and_nested_index_agree() -> None:
    both = read_archive(io.BytesIO(oci_archive(Image([BASE, TOP]), compression=("gzip",))))
    nested = read_archive(io.BytesIO(oci_archive(Image([BASE, TOP]), compression=("gzip",),
                                                 with_manifest_json=False, nested_index=True)))
    assert both.layout == nested.layout == "oci"
    assert [x.entries for x in both.images[0].layers] == [
        x.entries for x in nested.images[0].layers]
    assert both.images[0].config_digest == nested.images[0].config_digest


def test_several_images_share_layer_records() -> None:
    archive = read_archive(io.BytesIO(legacy_archive(
        Image([BASE], tag="a:1"), Image([BASE, TOP], tag="b:1"))))
    assert [im.refs for im in archive.images] == [("a:1",), ("b:1",)]
    assert archive.images[0].layers[0].entries is archive.images[1].layers[0].entries


def test_hash_content_gives_file_digests() -> None:
    archive = read_archive(io.BytesIO(legacy_archive(Image([BASE]))), hash_content=True)
    digests = {e.path: e.digest for e in archive.images[0].layers[0].entries}
    assert digests["etc/a"] == "xxh3:" + xxhash.xxh3_128_hexdigest(b"alpha")
    assert digests["etc/big"] == "xxh3:" + xxhash.xxh3_128_hexdigest(b"x" * 3000)
    assert digests["etc/a-link"] is None
    assert digests["etc"] is None


def test_chunk_iterable_source_equals_file_source(tmp_path: Path) -> None:
    data = legacy_archive(Image([BASE, TOP]))
    path = tmp_path / "image.tar"
    path.write_bytes(data)
    chunks = (data[i:i + 777] for i in range(0, len(data), 777))
    assert read_archive(chunks).images == read_archive(path).images


def test_long_names_gnu_and_pax_and_big_ids() -> None:
    deep = "d/" + "n" * 150 + "/file"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        tar = layer(file(deep, b"1", uid=3_000_000), symlink("l", "t" * 120), fmt=fmt)
        entries = read_archive(io.BytesIO(legacy_archive(Image([tar])))).images[0].layers[0].entries
        assert (entries[0].path, entries[0].uid) == (deep, 3_000_000)
        assert entries[1].linkname == "t" * 120


def _opened(fh: io.BufferedReader, stored: Layer) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(b"".join(layer_tar_chunks(fh, stored))))


def test_layer_tar_chunks_read_contents_from_a_seekable_archive(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(oci_archive(Image([BASE, TOP]), compression=("gzip", "zstd")))
    image = read_archive(path).images[0]
    with path.open("rb") as fh:
        for stored in image.layers:
            with _opened(fh, stored) as tar:
                seen = {m.name: tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                        for m in tar}
            assert sorted(seen) == sorted(e.path for e in stored.entries)
    assert hashlib.sha256(b"alpha").hexdigest() in sha(b"alpha")


# --- bad archives ------------------------------------------------------------------------------

def test_not_a_tar() -> None:
    with pytest.raises(NotATar):
        read_archive(io.BytesIO(b"this is not a tar archive at all" * 40))


def test_empty_file_is_not_an_archive() -> None:
    with pytest.raises(NotATar):
        read_archive(io.BytesIO(b""))


@pytest.mark.parametrize("where", ["in a layer", "in a file of a layer", "in the manifest",
                                   "before the manifest"])
def test_truncated_archive(where: str) -> None:
    data = legacy_archive(Image([BASE, layer(file("blob", 50_000))]))
    manifest = data.index(b'[{"Config"')
    cut = {"in a layer": data.index(b"etc/big") + 300, "in a file of a layer": manifest - 20_000,
           "in the manifest": manifest + 5, "before the manifest": manifest - 512}[where]
    with pytest.raises(TruncatedArchive):
        read_archive(io.BytesIO(data[:cut]))


def test_truncated_gzip_layer() -> None:
    blob = oci_archive(Image([layer(file("blob", bytes(range(256)) * 400))]),
                       compression=("gzip",), with_manifest_json=False)
    cut = blob.index(b"\x1f\x8b") + 600
    with pytest.raises(TruncatedArchive):
        read_archive(io.BytesIO(blob[:cut]))


def test_manifest_names_a_missing_layer() -> None:
    data = legacy_archive(Image([BASE, TOP]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for member in src:
            if member.name.endswith("layer.tar") and member.size == len(TOP):
                continue  # drop the top layer
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    with pytest.raises(MissingLayer, match=r"layer\.tar"):
        read_archive(io.BytesIO(buf.getvalue()))


def test_layer_that_is_not_a_tar_inside_a_good_archive() -> None:
    data = legacy_archive(Image([BASE]))
    start = data.index(BASE)
    corrupt = data[:start + 148] + b"99999999" + data[start + 156:]
    with pytest.raises(NotATar, match="not a tar"):
        read_archive(io.BytesIO(corrupt))


def test_errors_are_one_line_and_bad_input() -> None:
    with pytest.raises(ArchiveError) as caught:
        read_archive(io.BytesIO(b"x" * 2048))
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_zstd_layer_is_an_error_not_a_short_layer(fraction: float) -> None:
    # the outer archive is complete; only the zstd layer inside it is cut
    tar = layer(*(file(f"f{i:02}", bytes(range(256)) * 8 + bytes([i])) for i in range(50)))
    data = oci_archive(Image([tar]), compression=("zstd",), with_manifest_json=False)
    stored = compress(tar, "zstd")
    cut = stored[:int(len(stored) * fraction)]
    inner = read_archive(io.BytesIO(data)).images[0].layers[0]
    assert len(inner.entries) == 50
    broken = _replace_blob(data, stored, cut)
    with pytest.raises(TruncatedArchive, match="truncated") as caught:
        read_archive(io.BytesIO(broken))
    assert "\n" not in caught.value.message


def test_concatenated_zstd_frames_read_as_one_layer(tmp_path: Path) -> None:
    tar = layer(*(file(f"f{i}", bytes([i]) * 3000) for i in range(10)))
    data = oci_archive(Image([tar]), compression=("zstd",), with_manifest_json=False)
    stored = compress(tar, "zstd")
    half = len(tar) // 2
    two = compress(tar[:half], "zstd") + compress(tar[half:], "zstd")
    path = tmp_path / "image.tar"
    path.write_bytes(_replace_blob(data, stored, two))
    image = read_archive(path).images[0]
    assert [e.path for e in image.layers[0].entries] == [f"f{i}" for i in range(10)]
    with path.open("rb") as fh, _opened(fh, image.layers[0]) as opened:
        assert [m.name for m in opened] == [f"f{i}" for i in range(10)]


def _replace_blob(archive: bytes, old: bytes, new: bytes) -> bytes:
    """`archive` with the member holding `old` now holding `new` (the rest kept as is)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            body = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if body == old:
                body = new
                member.size = len(new)
            dst.addfile(member, io.BytesIO(body) if member.isfile() else None)
    return buf.getvalue()


def _with_docs(archive: bytes, docs: dict[str, bytes]) -> bytes:
    """`archive` with members named in `docs` replaced (or added)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.name not in docs:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, body in docs.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.parametrize(("name", "body"), [
    ("manifest.json", b'{"a": 1}'),
    ("manifest.json", b'[{"Layers": []}]'),
    ("manifest.json", b"[1]"),
    ("manifest.json", b'[{"Config": 7, "Layers": []}]'),
    ("index.json", b"[1]"),
    ("index.json", b'{"manifests": [1]}'),
    ("index.json", b'{"manifests": [{"mediaType": "x"}]}'),
    ("index.json", b'{"manifests": [{"digest": 5}]}'),
])
def test_malformed_manifest_is_one_line_archive_error(name: str, body: bytes) -> None:
    base = (legacy_archive(Image([BASE])) if name == "manifest.json"
            else oci_archive(Image([BASE]), with_manifest_json=False))
    with pytest.raises(ArchiveError, match="malformed") as caught:
        read_archive(io.BytesIO(_with_docs(base, {name: body})))
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_oci_manifest_of_the_wrong_shape_is_an_archive_error() -> None:
    base = oci_archive(Image([BASE]), with_manifest_json=False)
    manifest = json.dumps({"schemaVersion": 2, "layers": []}).encode()  # no "config"
    index = {"manifests": [{"digest": sha(manifest)}]}
    data = _with_docs(base, {"index.json": json.dumps(index).encode(),
                             "blobs/sha256/" + sha(manifest)[7:]: manifest})
    with pytest.raises(ArchiveError, match=r"malformed index\.json") as caught:
        read_archive(io.BytesIO(data))
    assert "\n" not in caught.value.message


def test_self_referencing_oci_index_is_an_archive_error() -> None:
    # a blob cannot hold its own digest, so the loop is two indexes naming each other, plus a
    # blob whose digest is simply claimed to be its own
    base = oci_archive(Image([BASE]), with_manifest_json=False)
    loop_a = {"digest": "sha256:" + "a" * 64}
    loop_b = {"digest": "sha256:" + "b" * 64}
    docs = {"index.json": json.dumps({"manifests": [loop_a]}).encode(),
            "blobs/sha256/" + "a" * 64: json.dumps({"manifests": [loop_b]}).encode(),
            "blobs/sha256/" + "b" * 64: json.dumps({"manifests": [loop_a]}).encode()}
    with pytest.raises(ArchiveError, match="refers to itself") as caught:
        read_archive(io.BytesIO(_with_docs(base, docs)))
    assert "\n" not in caught.value.message
    docs = {"index.json": json.dumps({"manifests": [loop_a]}).encode(),
            "blobs/sha256/" + "a" * 64: json.dumps({"manifests": [loop_a]}).encode()}
    with pytest.raises(ArchiveError, match="refers to itself"):
        read_archive(io.BytesIO(_with_docs(base, docs)))


def test_deeply_nested_oci_index_is_an_archive_error() -> None:
    base = oci_archive(Image([BASE]), with_manifest_json=False)
    docs = {"index.json": json.dumps({"manifests": [{"digest": "sha256:" + "0" * 64}]}).encode()}
    for level in range(50):
        child = {"digest": f"sha256:{level + 1:064x}"}
        docs[f"blobs/sha256/{level:064x}"] = json.dumps({"manifests": [child]}).encode()
    with pytest.raises(ArchiveError, match="nests more than"):
        read_archive(io.BytesIO(_with_docs(base, docs)))


def test_gc_is_paused_while_reading_and_restored_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(NotATar):
        read_archive(iter([b"not a tar at all" * 64]))
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        gc.disable()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's choice to keep it off is kept
    finally:
        gc.enable()


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_SPARSE, b"V", b"N"])
def test_an_unknown_entry_type_is_an_error_naming_the_entry(kind: bytes) -> None:
    """A GNU sparse file (and other types this reader does not know) is never read as a plain
    file: its size field is not its contents' size, and the replay would go wrong quietly."""
    odd = tarfile.TarInfo("usr/lib/odd.img")
    odd.type, odd.size = kind, 0
    tar = odd.tobuf(tarfile.GNU_FORMAT) + bytes(1024)
    with pytest.raises(ArchiveError, match=r"layer .*: entry 'usr/lib/odd.img' has tar type"):
        read_archive(io.BytesIO(legacy_archive(Image([tar]))))
