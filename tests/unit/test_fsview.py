"""fsview.replay and Hider on synthetic layers: every whiteout form, opaque dirs, hardlinks,
symlinks, metadata-only changes, empty layers; the merged tree and its fingerprint."""

from __future__ import annotations

import io
import random

import pytest

from layerkit.image.archive import Entry, read_archive
from layerkit.image.fsview import Hidden, Hider, View, replay, whiteout_target
from tests.imagetar import (
    Image,
    Member,
    directory,
    file,
    hardlink,
    layer,
    legacy_archive,
    opaque,
    symlink,
    whiteout,
)
from tests.randomlayers import random_layers


def view(*layers: list[Member], hashed: bool = True) -> View:
    tars = [layer(*members) for members in layers]
    image = read_archive(io.BytesIO(legacy_archive(Image(tars))), hash_content=hashed).images[0]
    return replay([stored.entries for stored in image.layers])


def fate(v: View, layer_index: int, path: str) -> Hidden | None:
    for entry, hidden in zip(v.layers[layer_index], v.fates[layer_index], strict=True):
        if entry.path == path:
            return hidden
    raise AssertionError(f"{path} not in layer {layer_index}")


def test_whiteout_target_forms() -> None:
    assert whiteout_target("a/.wh.b") == "a/b"
    assert whiteout_target(".wh.top") == "top"
    assert whiteout_target("a/.wh..wh..opq") is None
    assert whiteout_target("a/b.wh.c") is None


def test_deleted_file_is_hidden_and_reclaimable() -> None:
    v = view([directory("d"), file("d/f", 100), file("d/keep", 7)], [whiteout("d/f")])
    assert fate(v, 0, "d/f") == Hidden(1, "d/.wh.f", "deleted")
    assert sorted(v.final) == ["d", "d/keep"]
    assert (v.content_bytes, v.final_bytes, v.reclaimable_bytes) == (107, 7, 100)
    assert [(layer, e.path, h) for layer, e, h in v.reclaimable()] == [
        (0, "d/f", Hidden(1, "d/.wh.f", "deleted"))]


def test_deleted_directory_hides_its_subtree() -> None:
    v = view([directory("d"), directory("d/e"), file("d/e/f", 10), file("d/g", 20)],
             [whiteout("d")])
    assert {e.path: h.cause if h else None for e, h in zip(v.layers[0], v.fates[0], strict=True)} \
        == {"d": "deleted", "d/e": "deleted", "d/e/f": "deleted", "d/g": "deleted"}
    assert v.final == {}
    assert v.reclaimable_bytes == 30


def test_opaque_directory_hides_lower_contents_only() -> None:
    v = view([directory("d"), file("d/old", 40), file("other", 1)],
             [directory("d"), opaque("d"), file("d/new", 5)])
    assert fate(v, 0, "d/old") == Hidden(1, "d/.wh..wh..opq", "opaque_dir")
    assert fate(v, 1, "d/new") is None
    assert sorted(v.final) == ["d", "d/new", "other"]
    assert v.final_bytes == 6
    assert v.reclaimable_bytes == 40


def test_directory_deleted_then_recreated_in_a_later_layer() -> None:
    v = view([directory("d"), file("d/x", 11)], [whiteout("d")],
             [directory("d"), opaque("d"), file("d/y", 3)])
    assert fate(v, 0, "d/x") == Hidden(1, ".wh.d", "deleted")
    assert fate(v, 1, ".wh.d") is None  # still hides the layers below the re-created dir
    assert sorted(v.final) == ["d", "d/y"]
    assert v.reclaimable_bytes == 11
    assert [ver.layer for ver in v.history("d")] == [0, 1, 2]


def test_directory_deleted_and_recreated_in_one_layer() -> None:
    v = view([directory("d"), file("d/x", 11), file("d/z", 2)],
             [directory("d"), opaque("d"), file("d/z", 2)])
    assert fate(v, 0, "d/x").cause == "opaque_dir"  # type: ignore[union-attr]
    # same layer re-wrote d/z too: the opaque marker is named, it is why the old one is gone
    assert fate(v, 0, "d/z") == Hidden(1, "d/.wh..wh..opq", "opaque_dir")
    assert sorted(v.final) == ["d", "d/z"]


def test_non_directory_replacing_a_directory_hides_its_subtree() -> None:
    v = view([directory("d"), file("d/f", 9), directory("e"), file("e/g", 4)],
             [file("d", 1), symlink("e", "/tmp")])
    assert fate(v, 0, "d/f") == Hidden(1, "d", "overwritten")
    assert fate(v, 0, "e/g") == Hidden(1, "e", "overwritten")
    assert v.final["e"].kind == "symlink"
    assert v.final["e"].linkname == "/tmp"
    assert v.final_bytes == 1
    assert v.reclaimable_bytes == 13


def test_hardlinks_count_once_and_keep_hidden_targets_alive() -> None:
    v = view([file("a", 50), hardlink("b", "a"), file("c", 30), hardlink("d", "c")],
             [whiteout("a"), whiteout("d")])
    assert v.layers[0][1].size == 0  # a hardlink entry stores no bytes
    assert v.content_bytes == 80
    # a is deleted but b still names its inode: its 50 bytes stay live; c and d share 30 bytes
    assert sorted(v.final) == ["b", "c"]
    assert v.final["b"].kind == "file"
    assert v.final["b"].size == 50
    assert v.final["b"].inode == (0, "a")
    assert v.final_bytes == 80
    assert v.reclaimable_bytes == 0
    assert list(v.reclaimable()) == []  # a is hidden, but b keeps its inode


def test_hardlink_copy_up_is_its_own_cause() -> None:
    # `ln a c` in a later RUN copies a up into the new layer, and the lower a is dead weight
    v = view([file("a", b"same-bytes")], [file("a", b"same-bytes"), hardlink("c", "a")])
    assert fate(v, 0, "a") == Hidden(1, "a", "hardlink_copy_up")
    assert v.final_bytes == 10
    assert v.reclaimable_bytes == 10


@pytest.mark.parametrize("hashed", [True, False])
def test_chmod_and_chown_only_are_metadata_copy_ups(hashed: bool) -> None:
    v = view([file("x", 64, mode=0o644), file("y", 8)],
             [file("x", 64, mode=0o755)], [file("y", 8, uid=1000)], hashed=hashed)
    assert fate(v, 0, "x") == Hidden(1, "x", "metadata_only")
    assert fate(v, 0, "y") == Hidden(2, "y", "metadata_only")
    assert v.final["x"].mode == 0o755
    assert v.final["y"].uid == 1000
    assert v.reclaimable_bytes == 72


def test_same_size_new_contents_is_overwritten_when_hashed() -> None:
    v = view([file("x", b"aaaa", mode=0o644)], [file("x", b"bbbb", mode=0o600)])
    assert fate(v, 0, "x").cause == "overwritten"  # type: ignore[union-attr]


def test_symlinks_to_dirs_and_broken_ones_stay_links() -> None:
    v = view([directory("d"), file("d/f", 3), symlink("to-d", "d"), symlink("broken", "/nope")],
             [file("to-d/f2", 1)])
    assert v.final["to-d"].linkname == "d"
    assert v.final["broken"].linkname == "/nope"
    assert "d/f" in v.final
    assert "to-d/f2" in v.final


def test_empty_layers_change_nothing() -> None:
    with_empty = view([file("a", 5)], [], [file("b", 6)], [])
    without = view([file("a", 5)], [file("b", 6)])
    assert with_empty.fingerprint() == without.fingerprint()
    assert with_empty.final_bytes == 11


def test_history_lists_every_version_oldest_first() -> None:
    v = view([file("p", 1)], [file("p", 2)], [whiteout("p")], [file("p", 3)])
    versions = v.history("p")
    assert [(x.layer, x.entry.size, x.hidden.cause if x.hidden else None) for x in versions] == [
        (0, 1, "overwritten"), (1, 2, "deleted"), (2, 0, "overwritten"), (3, 3, None)]


def test_fingerprint_sees_modes_owners_links_and_contents() -> None:
    base = view([directory("d"), file("d/f", b"one"), symlink("s", "d")])
    assert base.fingerprint() == view([directory("d"), file("d/f", b"one"), symlink("s", "d")]) \
        .fingerprint()
    assert base.fingerprint() != view([directory("d"), file("d/f", b"two"), symlink("s", "d")]) \
        .fingerprint()
    assert base.fingerprint() != view([directory("d"), file("d/f", b"one", mode=0o600),
                                       symlink("s", "d")]).fingerprint()
    assert base.fingerprint() != view([directory("d"), file("d/f", b"one"), symlink("s", "e")]) \
        .fingerprint()


def test_fingerprint_of_layers_equals_fingerprint_of_their_squash() -> None:
    layered = view([directory("d"), file("d/f", b"v1"), file("g", b"g"), hardlink("h", "g")],
                   [file("d/f", b"v2", mode=0o600), whiteout("g")])
    squashed = view([directory("d"), file("d/f", b"v2", mode=0o600), file("h", b"g")])
    assert layered.fingerprint() == squashed.fingerprint()


def test_hider_newest_first_matches_replay_and_keeps_state_per_path() -> None:
    layers: list[list[Entry]] = [
        [Entry("d", "dir", 0, 0o755, 0, 0), Entry("d/f", "file", 5, 0o644, 0, 0)],
        [Entry("d/.wh.f", "file", 0, 0o644, 0, 0)],
        [Entry("d/f", "file", 6, 0o644, 0, 0)],
    ]
    hider = Hider()
    newest_first = [hider.feed(i, layers[i]) for i in (2, 1, 0)]
    assert newest_first[0] == [None]
    assert newest_first[1] == [Hidden(2, "d/f", "overwritten")]  # the whiteout is superseded
    assert newest_first[2] == [None, Hidden(1, "d/.wh.f", "deleted")]
    assert replay(layers).fates == (tuple(newest_first[2]), tuple(newest_first[1]),
                                    tuple(newest_first[0]))


def test_duplicate_path_within_one_layer_later_wins() -> None:
    entries = [Entry("x", "file", 5, 0o644, 0, 0), Entry("x", "file", 9, 0o644, 0, 0)]
    v = replay([entries])
    assert v.fates[0] == (Hidden(0, "x", "overwritten"), None)
    assert v.final["x"].size == 9
    assert v.reclaimable_bytes == 5


class _WalkingHider(Hider):
    """The plain definition of a mark over a path: every ancestor looked up, the oldest layer's
    mark kept, the nearest among equals. The memoised Hider must agree with it."""

    def _mark_above(self, path: str, above: dict[str, Hidden | None]) -> Hidden | None:
        best: Hidden | None = None
        parts = path.split("/")
        for depth in range(len(parts) - 1, 0, -1):  # nearest ancestor first
            mark = self._marks.get("/".join(parts[:depth]))
            if mark is not None and (best is None or mark.by_layer < best.by_layer):
                best = mark
        return best


def test_memoised_marks_agree_with_walking_every_ancestor() -> None:
    rng = random.Random(20261202)
    for _ in range(3000):
        layers = random_layers(rng)
        fast, walking = Hider(), _WalkingHider()
        for index in range(len(layers) - 1, -1, -1):
            assert fast.feed(index, layers[index]) == walking.feed(index, layers[index]), layers
