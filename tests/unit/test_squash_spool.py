"""spool.Spool: a `docker save` tee that drops kept layers once they have passed; the merge from
the smaller spool writes the same bytes as the merge from the whole archive."""

from __future__ import annotations

import dataclasses
import io

from layerkit.image.archive import read_archive
from layerkit.squash.merge import plan_merge, write_layer, write_layer_seekable
from layerkit.squash.spool import Spool
from tests.imagetar import Image, directory, file, layer, legacy_archive, sha, whiteout

BASE1 = layer(directory("etc"), file("etc/a", 5000), file("etc/b", b"b"))
BASE2 = layer(file("big", 20000))
EMPTY = layer()
TOP1 = layer(file("etc/a", b"new"), whiteout("big"))
TOP2 = layer(file("x", 3000))


def spooled(archive: bytes, drop: set[str], chunk: int) -> tuple[Spool, bytes, object]:
    out = io.BytesIO()
    spool = Spool(out, drop)
    chunks = (archive[i:i + chunk] for i in range(0, len(archive), chunk))
    image = read_archive(spool.tee(chunks), hash_content=True,
                         on_layer=spool.passed).images[0]
    return spool, out.getvalue(), image


def test_kept_layers_are_dropped_and_the_merge_is_unchanged() -> None:
    tars = [BASE1, EMPTY, BASE2, TOP1, EMPTY, TOP2]
    archive = legacy_archive(Image(tars))
    start = 3
    drop = {sha(t) for t in tars[:start]} - {sha(t) for t in tars[start:]}
    for chunk in (1, 511, 4096, 1 << 20):  # member boundaries fall anywhere in a chunk
        spool, data, image = spooled(archive, drop, chunk)
        # the reader stops at the end-of-archive marker: the zero padding after it never passes
        assert len(data) <= len(archive) - spool.dropped
        assert spool.dropped >= len(BASE1) + len(BASE2)
        layers = image.layers  # type: ignore[attr-defined]
        plan = plan_merge([lay.entries for lay in layers], start)
        whole = io.BytesIO()
        write_layer(io.BytesIO(archive), layers, plan, whole)
        moved = [dataclasses.replace(lay, data_offset=spool.offset(lay.data_offset))
                 if lay.index >= start else lay for lay in layers]
        small = io.BytesIO()
        write_layer_seekable(io.BytesIO(data), moved, plan, small)
        assert small.getvalue() == whole.getvalue()


def test_a_layer_shared_by_base_and_range_is_kept() -> None:
    tars = [BASE1, EMPTY, TOP1, EMPTY]
    archive = legacy_archive(Image(tars))
    drop = {sha(t) for t in tars[:2]} - {sha(t) for t in tars[2:]}
    spool, data, _ = spooled(archive, drop, 4096)
    assert spool.dropped >= len(BASE1)
    assert EMPTY in data


def test_nothing_to_drop_is_a_plain_copy() -> None:
    archive = legacy_archive(Image([BASE1, TOP1]))
    spool, data, _ = spooled(archive, set(), 777)
    assert archive.startswith(data)
    assert not archive[len(data):].strip(b"\0")
    assert spool.offset(12345) == 12345


class PeakFile(io.BytesIO):
    """A spool file that remembers the largest size it has had."""

    peak = 0

    def write(self, data: object) -> int:
        written = super().write(data)  # type: ignore[arg-type]
        self.peak = max(self.peak, self.tell())
        return written


def test_a_kept_layer_is_gone_before_the_next_arrives() -> None:
    big1, big2 = layer(file("one", 40000)), layer(file("two", 40000))
    archive = legacy_archive(Image([big1, big2, TOP2]))
    for chunk in (1000, 1 << 16):
        out = PeakFile()
        spool = Spool(out, {sha(big1), sha(big2)})
        chunks = (archive[i:i + chunk] for i in range(0, len(archive), chunk))
        read_archive(spool.tee(chunks), on_layer=spool.passed)
        # never both kept layers on disk at once, and neither one at the end
        assert out.peak < len(big1) + len(big2)
        assert len(out.getvalue()) < len(archive) - len(big1) - len(big2)
