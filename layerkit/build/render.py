"""The build's results as a table and as JSON."""

from __future__ import annotations

from collections.abc import Sequence

from layerkit.build.build import BuiltImage
from layerkit.render import dump_json, human_bytes, tabulate


def build_table(built: Sequence[BuiltImage]) -> str:
    rows = [(b.ref, human_bytes(b.size), b.layers, human_bytes(b.shared_bytes),
             f"{b.cached_steps}/{b.steps}", f"{b.seconds:.1f} s") for b in built]
    return tabulate(rows, headers=("image", "size", "layers", "shared with base", "cached steps",
                                   "build time"), colalign=("left", "right", "right", "right",
                                                            "right", "right"))


def build_json(built: Sequence[BuiltImage]) -> str:
    return dump_json("build", {"images": [
        {"name": b.name, "ref": b.ref, "id": b.image_id, "size_bytes": b.size,
         "layers": b.layers, "shared_bytes": b.shared_bytes, "seconds": round(b.seconds, 3),
         "steps": b.steps, "cached_steps": b.cached_steps} for b in built]})
