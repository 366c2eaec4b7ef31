"""Renderers for `layerkit squash`: a short summary table and JSON (`layerkit/squash/v1`)."""

from __future__ import annotations

from tabulate import tabulate

from layerkit.render import dump_json, human_bytes
from layerkit.squash.squash import SquashResult

__all__ = ["squash_json", "squash_text"]


def squash_text(r: SquashResult) -> str:
    target = r.tag or r.archive_out or "(not kept)"
    head = f"squashed {r.source} -> {target} ({r.image_id[:19]})"
    rows = [
        ("layers", r.layers_before, r.layers_after),
        ("content", human_bytes(r.bytes_before), human_bytes(r.bytes_after)),
    ]
    table = tabulate(rows, headers=("", "before", "after"), colalign=("left", "right", "right"))
    p = r.phases
    details = [
        f"{r.squashed_layers} layers into one new layer of {human_bytes(r.layer_bytes)}; "
        f"{r.markers} whiteout marker(s) kept, {r.converted_hardlinks} hardlink(s) made files",
        f"verified: {'yes' if r.verified else 'no (--no-verify)'}; "
        f"loaded: {'yes' if r.loaded else 'no'}"
        + (f"; archive: {r.archive_out}" if r.archive_out else ""),
        f"time: read {p.read:.1f} s, merge {p.merge:.1f} s, load {p.load:.1f} s, "
        f"verify {p.verify:.1f} s (total {p.total:.1f} s)",
    ]
    return "\n".join([head, table, *details])


def squash_json(r: SquashResult) -> str:
    p = r.phases
    return dump_json("squash", {
        "source": r.source, "source_id": r.source_id, "tag": r.tag, "image_id": r.image_id,
        "layers_before": r.layers_before, "layers_after": r.layers_after,
        "squashed_layers": r.squashed_layers, "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after, "layer_bytes": r.layer_bytes, "markers": r.markers,
        "converted_hardlinks": r.converted_hardlinks, "verified": r.verified,
        "loaded": r.loaded, "archive_out": r.archive_out,
        "seconds": {"read": p.read, "merge": p.merge, "load": p.load, "verify": p.verify,
                    "total": round(p.total, 3)},
    })
