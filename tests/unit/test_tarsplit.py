"""image.tarsplit and the storage source's use of it, on records made here the way the engine
makes them (tar-split's disassembly: the raw bytes between members' data as segments, one member
line per header) from tars written here: entries and header bytes as a save gives them, records
that do not add up refused, and a squash from the layer directories writing the very layer the
squash of the save writes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from layerkit.image import storage, tarsplit
from layerkit.image.archive import Entry, read_archive
from layerkit.image.storage import LayerDirs
from layerkit.squash.dirlayer import write_layer_from_dirs
from layerkit.squash.merge import plan_merge, write_layer_seekable
from tests.imagetar import (
    Image,
    Member,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    sha,
    symlink,
    whiteout,
)


def record(tar: bytes) -> list[dict[str, object]]:
    """tar-split's disassembly of `tar`, as JSON objects (the engine's field order)."""
    lines: list[dict[str, object]] = []
    done = 0  # where the last member's data ended
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        for info in archive:
            lines.append({"type": 2, "payload": _b64(tar[done:info.offset_data])})
            size = info.size if info.isreg() else 0
            name = info.pax_headers.get("path") or _header_name(tar[info.offset_data - 512:
                                                                    info.offset_data])
            entry: dict[str, object] = {"type": 1}
            try:
                entry["name"] = name.encode().decode()
            except UnicodeEncodeError:  # as tar-split keeps a name that is not UTF-8
                entry["name_raw"] = _b64(name.encode("utf-8", "surrogateescape"))
            if size:
                entry["size"] = size
            entry["payload"] = None
            lines.append(entry)
            done = info.offset_data + size
    end = done + -done % 512 + 1024  # the last padding and the end marker, then the rest
    lines += [{"type": 2, "payload": _b64(tar[done:end])}, {"type": 2, "payload": _b64(tar[end:])},
              {"type": 2, "payload": ""}]
    return lines


def _header_name(block: bytes) -> str:
    """The name a Go tar reader gives a ustar header (prefix/name, trailing slash kept)."""
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return f"{prefix}/{name}" if prefix else name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_record(where: Path, lines: list[dict[str, object]], cache_id: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "cache-id").write_text(cache_id)
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    path = where / tarsplit.FILE_NAME
    path.write_bytes(gzip.compress(text.encode()))
    return path


OLD = Member(whiteout("etc/gone").info)  # a whiteout with its tar's (old) time
LONG = "deep/" + "n" * 120 + "/file"      # a PAX path record


def _layers() -> list[bytes]:
    base = layer(directory("etc"), file("etc/gone", b"g"), file("etc/keep", b"k"),
                 file("t", b"T"), directory("deep"))
    middle = layer(file("zz", b"1" * 700), directory("a"), file("a/f", b"ff"), OLD,
                   file("b", b"bb"), hardlink("c", "b"), symlink("s", "zz"),
                   file(LONG, b"long"))
    top = layer(file("b", b"new"), file("a/f", b"f2"), file("y", b""))
    return [base, middle, top]


def test_entries_and_headers_are_the_tars(tmp_path: Path) -> None:
    tar = _layers()[1]
    split = write_record(tmp_path / "l", record(tar), "cid")
    archive = read_archive(io.BytesIO(legacy_archive(Image([tar]))))
    saved = list(archive.images[0].layers[0].entries)
    assert tarsplit.entries(split, "cid") == saved
    assert [e.path for e in saved][:3] == ["zz", "a", "a/f"]  # the tar's order, not lexical
    rebuilt = bytearray()
    for entry, member in tarsplit.members(split):
        data = tar[tar.index(member.header) + len(member.header):][:member.size]
        rebuilt += member.header + data + bytes(-member.size % 512)
        assert entry.path == member.name.strip("/")
    assert bytes(rebuilt) + bytes(1024) == tar[:len(rebuilt) + 1024]


DATA = Path(__file__).parents[1] / "data" / "tarsplit"


def test_a_record_of_this_engine_gives_its_saves_layer(tmp_path: Path) -> None:
    """Captured from Docker 20.10: the record of a loaded layer and that layer's tar from a
    save. The record's headers with the data from the tar are the saved tar, byte for byte;
    the records made here for tests are made as the engine makes them."""
    saved = (DATA / "loaded.layer.tar").read_bytes()
    split = tmp_path / "layer" / tarsplit.FILE_NAME
    split.parent.mkdir()
    split.write_bytes((DATA / "loaded.tar-split.json.gz").read_bytes())
    (split.parent / "cache-id").write_text("cid")
    archive = read_archive(io.BytesIO(legacy_archive(Image([saved]))))
    assert tarsplit.entries(split, "cid") == list(archive.images[0].layers[0].entries)
    rebuilt, at = bytearray(), 0
    for _, member in tarsplit.members(split):
        at = saved.index(member.header, at) + len(member.header)
        rebuilt += member.header + saved[at:at + member.size] + bytes(-member.size % 512)
    assert bytes(rebuilt) == saved[:len(rebuilt)]
    assert not saved[len(rebuilt):].strip(b"\0")
    real = [json.loads(line) for line in gzip.decompress(split.read_bytes()).splitlines()]
    keys = ("type", "name", "size")
    assert [{k: line.get(k) for k in (*keys, "payload") if line["type"] == 2 or k in keys}
            for line in real] == \
        [{k: line.get(k) for k in (*keys, "payload") if line["type"] == 2 or k in keys}
         for line in record(saved)]


def test_a_name_that_is_not_utf8_comes_as_name_raw(tmp_path: Path) -> None:
    info = tarfile.TarInfo("caf\udce9")
    info.size = 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT,
                      errors="surrogateescape") as out:
        out.addfile(info)
    lines = record(buf.getvalue())
    assert lines[1]["name_raw"] == _b64(b"caf\xe9")
    split = write_record(tmp_path / "l", lines, "cid")
    assert [e.path for e in tarsplit.entries(split, "cid")] == ["caf\udce9"]


def _broken(lines: list[dict[str, object]], how: str) -> list[dict[str, object]]:
    if how == "renamed":
        return [{**line, "name": "other"} if line.get("name") == "a/f" else line
                for line in lines]
    if how == "resized":
        return [{**line, "size": 3} if line.get("name") == "a/f" else line for line in lines]
    if how == "member after the end":
        return [*lines, {"type": 1, "name": "late", "payload": None}]
    if how == "member lost":
        return [line for line in lines if line.get("name") != "a/"]
    return [{"type": 3}]


@pytest.mark.parametrize("how", ["renamed", "resized", "member after the end", "member lost",
                                 "unknown line"])
def test_a_record_that_does_not_add_up_is_unusable(tmp_path: Path, how: str) -> None:
    split = write_record(tmp_path / "l", _broken(record(_layers()[1]), how), "cid")
    with pytest.raises(tarsplit.Unusable):
        tarsplit.entries(split, "cid")


def test_a_missing_or_foreign_record_is_unusable(tmp_path: Path) -> None:
    split = write_record(tmp_path / "l", record(_layers()[1]), "cid")
    with pytest.raises(tarsplit.Unusable, match="not cid2"):
        tarsplit.entries(split, "cid2")  # the layer store names another directory
    whole = split.read_bytes()
    split.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(tarsplit.Unusable):
        tarsplit.entries(split, "cid")
    split.write_bytes(b"not gzip")
    with pytest.raises(tarsplit.Unusable):
        tarsplit.entries(split, "cid")
    split.unlink()
    with pytest.raises(tarsplit.Unusable):
        tarsplit.entries(split, "cid")


def test_chain_ids_are_the_layer_stores() -> None:
    one, two = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    expected = "sha256:" + hashlib.sha256(f"{one} {two}".encode()).hexdigest()
    assert tarsplit.chain_ids([one, two]) == [one, expected]


# --- the storage source and the squash over records --------------------------------------------

def _engine_like(tmp_path: Path, tars: list[bytes], *, records: bool = True) -> LayerDirs:
    """An overlay2 engine's files for an image of `tars`: layer directories (unpacked, but the
    whiteouts: the records stand for them), layer store records, the config."""
    diff_ids = [sha(t) for t in tars]
    config = json.dumps(Image(tars).config()).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    dirs = []
    for i, (tar, chain) in enumerate(zip(tars, tarsplit.chain_ids(diff_ids), strict=True)):
        root = tmp_path / "overlay2" / f"cache{i}" / "diff"
        root.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(root, members=[m for m in archive if "/.wh." not in
                                              f"/{m.name}"], filter="fully_trusted")
        dirs.append(root)
        if records:
            write_record(tmp_path / "image/overlay2/layerdb/sha256" / chain.removeprefix(
                "sha256:"), record(tar), f"cache{i}")
    imagedb = tmp_path / "image/overlay2/imagedb/content/sha256"
    imagedb.mkdir(parents=True)
    (imagedb / image_id.removeprefix("sha256:")).write_bytes(config)
    found = storage.layer_dirs({"Id": image_id, "RootFS": {"Layers": diff_ids}, "GraphDriver": {
        "Name": "overlay2", "Data": {"UpperDir": str(dirs[-1]),
                                     "LowerDir": ":".join(map(str, dirs[-2::-1]))}}})
    assert found is not None
    return found


def _plain(entries: tuple[Entry, ...]) -> list[Entry]:
    return [e._replace(digest=None) for e in entries]


def test_the_storage_source_reads_the_records(tmp_path: Path) -> None:
    tars = _layers()
    saved = read_archive(io.BytesIO(legacy_archive(Image(tars)))).images[0]
    stored = storage.read_image("img:1", (), _engine_like(tmp_path, tars))
    for ours, theirs in zip(stored.layers, saved.layers, strict=True):
        assert _plain(ours.entries) == _plain(theirs.entries)
        assert tarsplit.is_split(ours.member)


def test_without_records_the_directories_are_walked(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    tars = [layer(file("zz", b"1"), file("a", b"2"))]
    with caplog.at_level(logging.DEBUG, logger="layerkit.image.storage"):
        stored = storage.read_image("img:1", (), _engine_like(tmp_path, tars, records=False))
    assert [e.path for e in stored.layers[0].entries] == ["a", "zz"]  # the walk's order
    assert not tarsplit.is_split(stored.layers[0].member)
    assert any(str(stored.layers[0].member) in r.getMessage() for r in caplog.records)


def _layers_reversed(archive: bytes) -> bytes:
    """The saved archive with its layer tars stored newest first, as a save may order them
    (a legacy save stores them by v1 layer ID)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        members = src.getmembers()
        blobs = [m for m in members if m.name.endswith("/layer.tar") and m.isreg()]
        for info in [*reversed(blobs), *(m for m in members if m not in blobs)]:
            dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    return out.getvalue()


@pytest.mark.parametrize("case", ["plain", "repeated", "stored newest first"])
def test_the_squash_from_records_writes_the_saves_layer(tmp_path: Path, case: str) -> None:
    """The merged layer of the upper layers, from the spooled save and from the layer
    directories with their records: the same bytes (with a hardlink made a file, a whiteout
    kept with its tar's time, a PAX name, non-lexical order; a layer repeated in the range,
    which a save stores once; layers stored out of order in the save)."""
    tars = _layers()
    if case == "repeated":
        tars.insert(2, layer(file("r", b"r"), directory("a"), file("a/r", b"r")))
        tars.append(tars[2])
    archive_path = tmp_path / "saved.tar"
    archive = legacy_archive(Image(tars))
    archive_path.write_bytes(_layers_reversed(archive) if case != "plain" else archive)
    saved = read_archive(archive_path, hash_content=True).images[0]
    plan = plan_merge([lay.entries for lay in saved.layers], 1)
    assert plan.conversions
    assert plan.markers
    by_save = io.BytesIO()
    with open(archive_path, "rb") as fh:
        want = write_layer_seekable(fh, saved.layers, plan, by_save)
    where = _engine_like(tmp_path / "engine", tars)
    stored = storage.read_image("img:1", (), where, visible_from=1)
    by_dirs = io.BytesIO()
    got = write_layer_from_dirs("img:1", where.dirs, stored.layers,
                                plan_merge([lay.entries for lay in stored.layers], 1), by_dirs)
    assert by_dirs.getvalue() == by_save.getvalue()
    assert got == want
