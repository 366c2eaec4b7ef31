"""merge.plan_merge + write_layer on synthetic layer tars: every whiteout form, opaque dirs,
hardlinks, symlinks, chmod-only, empty layers, escapes, and the marker keep/drop rules of full
and partial squashes. Each squash is checked against the source's merged tree (fingerprint)."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from layerkit.errors import SquashError, UnsafeEntry
from layerkit.image.archive import SavedImage, read_archive
from layerkit.image.fsview import replay
from layerkit.squash.merge import MergePlan, plan_merge, write_layer, write_layer_seekable
from tests.imagetar import (
    Image,
    Member,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    oci_archive,
    opaque,
    symlink,
    whiteout,
)
from tests.randomlayers import Form, random_forms


def saved(*layers: list[Member], oci: bool = False, compression: tuple[str, ...] = ()) -> bytes:
    tars = [layer(*members) for members in layers]
    if oci:
        return oci_archive(Image(tars), compression=compression)
    return legacy_archive(Image(tars))


def squash(archive: bytes, start: int, *, seekable: bool = False) -> tuple[SavedImage, bytes,
                                                                         MergePlan]:
    image = read_archive(io.BytesIO(archive), hash_content=True).images[0]
    plan = plan_merge([lay.entries for lay in image.layers], start)
    out = io.BytesIO()
    writer = write_layer_seekable if seekable else write_layer
    written = writer(io.BytesIO(archive), image.layers, plan, out)
    assert written.size == len(out.getvalue())
    return image, out.getvalue(), plan


def names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return [m.name.rstrip("/") for m in t.getmembers()]


def member(tar: bytes, name: str) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmember(name)


def content(tar: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        data = t.extractfile(name)
        assert data is not None
        return data.read()


def result_matches(image: SavedImage, start: int, new: bytes) -> bool:
    """The kept layers plus the new layer give the source's merged tree."""
    kept = [lay.entries for lay in image.layers[:start]]
    tars = [layer()] * start + [new]  # kept layers' entries are swapped in below
    again = read_archive(io.BytesIO(legacy_archive(Image(tars))), hash_content=True).images[0]
    result = replay([*kept, again.layers[-1].entries])
    source = replay([lay.entries for lay in image.layers])
    return result.fingerprint() == source.fingerprint()


BASE = [directory("etc"), file("etc/a", b"alpha"), directory("opt"), file("opt/x", b"x"),
        directory("opt/d"), file("opt/d/inner", b"i"), directory("var"), file("var/log", b"l")]


@pytest.mark.parametrize("start", [0, 1])
def test_deleted_and_overwritten_files(start: int) -> None:
    image, new, plan = squash(saved(
        BASE,
        [directory("etc"), file("etc/a", b"ALPHA"), file("etc/tmp", b"t")],
        [directory("etc"), whiteout("etc/tmp"), whiteout("var/log")]), start)
    assert result_matches(image, start, new)
    got = names(new)
    assert "etc/tmp" not in got
    assert content(new, "etc/a") == b"ALPHA"
    # etc/tmp was born and died inside the range: its whiteout is never needed
    assert "etc/.wh.tmp" not in got
    # var/log lives in the kept base only for a partial squash
    assert ("var/.wh.log" in got) is (start == 1)
    assert plan.dropped_markers == (2 if start == 0 else 1)


def test_full_squash_has_no_markers_at_all() -> None:
    image, new, _ = squash(saved(
        BASE, [whiteout("opt/d"), opaque("etc"), file("etc/b", b"b")],
        [directory("opt"), whiteout("opt/x"), directory("opt/d"), file("opt/d/new", b"n")]), 0)
    assert result_matches(image, 0, new)
    assert not [n for n in names(new) if "/.wh." in "/" + n]


def test_opaque_directory_kept_only_over_kept_layers() -> None:
    archive = saved(BASE, [file("etc/b", b"b")], [directory("etc"), opaque("etc"),
                                                  file("etc/c", b"c")])
    for start in (1, 2):
        image, new, _ = squash(archive, start)
        assert result_matches(image, start, new)
        assert "etc/.wh..wh..opq" in names(new)
        assert "etc/b" not in names(new)


def test_directory_deleted_and_recreated_becomes_opaque() -> None:
    image, new, _ = squash(saved(
        BASE, [whiteout("opt/d")], [directory("opt/d", mode=0o700), file("opt/d/new", b"n")]), 1)
    assert result_matches(image, 1, new)
    got = names(new)
    assert "opt/d/.wh..wh..opq" in got
    assert "opt/.wh.d" not in got
    assert member(new, "opt/d").mode == 0o700


def test_directory_deleted_and_recreated_in_one_layer() -> None:
    image, new, _ = squash(saved(
        BASE, [directory("opt/d"), opaque("opt/d"), file("opt/d/k", b"k")],
        [file("top", b"t")]), 1)
    assert result_matches(image, 1, new)
    assert "opt/d/.wh..wh..opq" in names(new)


@pytest.mark.parametrize(("middle", "newest"), [
    # (a) d deleted and re-created in one layer, as kaniko writes it
    pytest.param([file("t", b"t")], [whiteout("d"), directory("d"), file("d/y", b"y")],
                 id="whiteout-and-dir-in-one-layer"),
    # (b) a file replaces d (hiding d/x), a newer layer re-creates d: no marker in either
    pytest.param([file("d", b"f")], [directory("d"), file("d/y", b"y")],
                 id="file-replaced-dir-then-dir"),
])
def test_hidden_entry_that_hid_a_kept_subtree_makes_the_directory_opaque(
        middle: list[Member], newest: list[Member]) -> None:
    archive = saved([directory("d"), file("d/x", b"x")], middle, newest)
    image, new, plan = squash(archive, 1)
    assert result_matches(image, 1, new)
    assert "d/x" not in replay([lay.entries for lay in image.layers]).final
    assert "d/.wh..wh..opq" in names(new)
    # nothing kept below: a full squash needs no marker at all
    image, new, plan = squash(archive, 0)
    assert result_matches(image, 0, new)
    assert not plan.markers
    assert not [n for n in names(new) if ".wh." in n]


@pytest.mark.parametrize("range_layers", [
    pytest.param([[whiteout("opt"), directory("opt"), directory("opt/d"),
                   file("opt/d/new", b"n")]], id="whiteout-parent-same-layer"),
    pytest.param([[file("opt", b"f")], [directory("opt"), directory("opt/d"),
                                         file("opt/d/new", b"n")]], id="file-replaced-parent"),
    pytest.param([[whiteout("opt")], [directory("opt"), directory("opt/d"),
                                      file("opt/d/new", b"n")]], id="whiteout-parent-newer-layer"),
])
def test_parent_dir_recreated_with_a_deeper_subtree_hides_the_kept_one(
        range_layers: list[list[Member]]) -> None:
    archive = saved(BASE, *range_layers)
    image, new, plan = squash(archive, 1)
    assert result_matches(image, 1, new)
    got = names(new)
    assert "opt/.wh..wh..opq" in got
    assert not {"opt/x", "opt/d/inner"} & set(got)
    image, new, plan = squash(archive, 0)
    assert result_matches(image, 0, new)
    assert not plan.markers


def test_file_replacing_a_nested_dir_then_recreated_hides_only_that_subtree() -> None:
    image, new, plan = squash(saved(
        BASE, [file("opt/d", b"f")], [directory("opt/d"), file("opt/d/new", b"n")]), 1)
    assert result_matches(image, 1, new)
    assert [m.path for m in plan.markers] == ["opt/d/.wh..wh..opq"]  # opt/x stays visible


def test_nested_whiteouts_collapse_to_the_outermost() -> None:
    image, new, _ = squash(saved(
        BASE, [whiteout("opt/d/inner")], [whiteout("opt/d")], [whiteout("opt")]), 1)
    assert result_matches(image, 1, new)
    assert [n for n in names(new) if ".wh." in n] == [".wh.opt"]


def test_whiteout_of_a_path_created_in_range_over_a_base_file_is_kept() -> None:
    image, new, _ = squash(saved(BASE, [file("etc/a", b"v2")], [whiteout("etc/a")]), 1)
    assert result_matches(image, 1, new)
    assert names(new) == ["etc/.wh.a"]


def test_hardlink_with_kept_target_stays_a_link() -> None:
    image, new, _ = squash(saved(
        BASE, [directory("bin"), file("bin/tool", b"T" * 100, mode=0o755),
               hardlink("bin/alias", "bin/tool")], [file("x", b"x")]), 1)
    assert result_matches(image, 1, new)
    info = member(new, "bin/alias")
    assert info.islnk()
    assert info.linkname == "bin/tool"


@pytest.mark.parametrize("seekable", [False, True])
def test_hardlinks_whose_target_is_hidden_get_the_contents(seekable: bool) -> None:
    image, new, plan = squash(saved(
        BASE, [directory("bin"), file("bin/tool", b"old" * 50, mode=0o755),
               hardlink("bin/alias", "bin/tool"), hardlink("bin/alias2", "bin/tool")],
        [directory("bin"), file("bin/tool", b"new")]), 1, seekable=seekable)
    assert result_matches(image, 1, new)
    assert content(new, "bin/tool") == b"new"
    first = member(new, "bin/alias")
    assert first.isreg()
    assert first.mode == 0o644  # the link header's own metadata, as fsview reads it
    assert content(new, "bin/alias") == b"old" * 50
    second = member(new, "bin/alias2")
    assert second.islnk()
    assert second.linkname == "bin/alias"
    assert len(plan.conversions) == 1


def test_hardlink_target_deleted_by_a_whiteout() -> None:
    image, new, _ = squash(saved(
        [directory("bin"), file("bin/tool", b"data"), hardlink("bin/alias", "bin/tool")],
        [whiteout("bin/tool")]), 0)
    assert result_matches(image, 0, new)
    assert names(new) == ["bin", "bin/alias"]
    assert content(new, "bin/alias") == b"data"


def test_symlinks_to_dirs_and_broken_ones_are_kept_as_links() -> None:
    image, new, _ = squash(saved(
        BASE, [symlink("etc/dirlink", "../opt"), symlink("broken", "/no/such/thing")],
        [symlink("abs", "/etc")]), 0)
    assert result_matches(image, 0, new)
    assert member(new, "etc/dirlink").linkname == "../opt"
    assert member(new, "broken").linkname == "/no/such/thing"
    assert member(new, "abs").issym()


def test_chmod_and_chown_only_changes_win() -> None:
    image, new, _ = squash(saved(
        BASE, [file("etc/a", b"alpha", mode=0o600, uid=33, gid=33)]), 0)
    assert result_matches(image, 0, new)
    info = member(new, "etc/a")
    assert (info.mode, info.uid, info.gid) == (0o600, 33, 33)
    assert names(new).count("etc/a") == 1


def test_empty_metadata_layers_are_fine() -> None:
    image, new, _ = squash(saved(BASE, [], [file("f", b"f")], []), 1)
    assert result_matches(image, 1, new)
    assert names(new) == ["f"]


def test_times_and_pax_records_are_kept() -> None:
    info = tarfile.TarInfo("etc/x")
    info.size, info.mtime = 1, 1_600_000_000
    info.pax_headers = {"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.security.capability": "c"}
    image, new, _ = squash(saved(BASE, [Member(info, b"1")], [file("y", b"y")]), 1)
    got = member(new, "etc/x")
    assert got.mtime == 1_600_000_000
    assert got.pax_headers["SCHILY.xattr.user.note"] == "hi"
    assert got.pax_headers["SCHILY.xattr.security.capability"] == "c"
    assert result_matches(image, 1, new)


@pytest.mark.parametrize(("name", "link"), [("../../etc/evil", ""), ("a/../../evil", ""),
                                            ("bin/l", "/etc/passwd"), ("bin/l", "../../x")])
def test_entries_escaping_the_root_are_refused(name: str, link: str) -> None:
    bad = hardlink(name, link) if link else file(name, b"evil")
    archive = saved(BASE, [file("bin/x", b"x"), bad], [file("y", b"y")])
    image = read_archive(io.BytesIO(archive), hash_content=True).images[0]

    def run() -> None:
        plan = plan_merge([lay.entries for lay in image.layers], 1)
        write_layer(io.BytesIO(archive), image.layers, plan, io.BytesIO())

    with pytest.raises((UnsafeEntry, SquashError)):
        run()


def test_escape_errors_are_usage_errors() -> None:
    archive = saved(BASE, [file("../../etc/evil", b"e")], [file("y", b"y")])
    image = read_archive(io.BytesIO(archive)).images[0]
    plan = plan_merge([lay.entries for lay in image.layers], 1)
    with pytest.raises(UnsafeEntry) as caught:
        write_layer(io.BytesIO(archive), image.layers, plan, io.BytesIO())
    assert caught.value.exit_code == 2
    assert "escapes" in caught.value.message


def test_oci_input_with_compressed_layers() -> None:
    archive = saved(BASE, [file("etc/a", b"v2"), whiteout("var/log")], [file("z", 5000)],
                    oci=True, compression=("gzip", "zstd", "gzip"))
    for seekable in (False, True):
        image, new, _ = squash(archive, 1, seekable=seekable)
        assert result_matches(image, 1, new)
        assert "var/.wh.log" in names(new)


def test_output_is_byte_for_byte_reproducible() -> None:
    archive = saved(BASE, [file("etc/a", b"2")], [whiteout("opt/d"), file("q", b"q")])
    assert squash(archive, 1)[1] == squash(archive, 1)[1]
    assert squash(archive, 1)[1] == squash(archive, 1, seekable=True)[1]


def test_cost_is_linear_in_entries() -> None:
    many = [file(f"d/f{i}", b"") for i in range(3000)]
    rewritten = [file(f"d/f{i}", b"2") for i in range(3000)]
    image, new, _ = squash(saved([directory("d")], many, rewritten), 1)
    assert result_matches(image, 1, new)
    assert len(names(new)) == 3000


def _member(form: Form) -> Member:
    if form.kind == "whiteout":
        return whiteout(form.path)
    if form.kind == "opaque":
        return opaque(form.path)
    if form.kind == "dir":
        return directory(form.path, mode=form.mode)
    if form.kind == "symlink":
        return symlink(form.path, form.link)
    return file(form.path, (form.fill * form.size).encode(), mode=form.mode)


def test_random_stacks_squash_to_the_same_tree_with_no_redundant_marker() -> None:
    """Any range squashed over the kept layers below gives the source's merged tree; and no
    marker lies under a directory the new layer makes opaque (it would hide nothing more)."""
    rng = random.Random(20261202)
    opaque_dirs_seen = 0
    for _ in range(1500):
        stack = [[_member(f) for f in forms] for forms in random_forms(rng, min_layers=2)]
        start = rng.randrange(len(stack))
        archive = saved(*stack)
        image, new, plan = squash(archive, start)
        assert result_matches(image, start, new), (stack, start)
        markers = [m.path for m in plan.markers]
        opaque_dirs = {m.rpartition("/")[0] for m in markers if m.endswith("/.wh..wh..opq")}
        opaque_dirs_seen += bool(opaque_dirs)
        for path in markers:
            parent = path.rpartition("/")[0]
            above = parent.rpartition("/")[0] if path.endswith(".wh..wh..opq") else parent
            while above:
                assert above not in opaque_dirs, (stack, start, markers)
                above = above.rpartition("/")[0]
    assert opaque_dirs_seen > 100
