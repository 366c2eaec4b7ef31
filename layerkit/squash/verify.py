"""Verification of a squash: the new layer read back as the engine receives it, replayed over
the kept layers, must give the source's merged tree (paths, kinds, modes, owners, link targets,
content hashes). Runs in a thread while the engine loads the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layerkit.image.archive import Entry, SavedImage, read_archive
from layerkit.image.fsview import Node, replay
from layerkit.squash.config import load_stream

__all__ = ["result_matches"]


def result_matches(image: SavedImage, start: int, layer_path: Path,
                    config: dict[str, Any]) -> str | None:
    """Read the new layer back as the engine will and compare merged trees; None if equal."""
    alone = dict(config, rootfs={"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][-1:]},
                 history=[])
    new = read_archive(load_stream(layer_path, alone, 0), hash_content=True).images[0]
    kept: list[Sequence[Entry]] = [layer.entries for layer in image.layers[:start]]
    result = replay([*kept, new.layers[0].entries])
    source = replay([layer.entries for layer in image.layers])
    if result.fingerprint() == source.fingerprint():
        return None
    return _first_difference(source.final, result.final)


def _first_difference(want: Mapping[str, Node], got: Mapping[str, Node]) -> str:
    for path in sorted(set(want) | set(got)):
        if path not in got:
            return f"{path} is missing"
        if path not in want:
            return f"{path} is extra"
        if _shape(want[path]) != _shape(got[path]):
            return f"{path} differs ({_shape(want[path])} != {_shape(got[path])})"
    return "the trees differ"  # pragma: no cover - equal trees give equal fingerprints


def _shape(node: Node) -> tuple[object, ...]:
    """What the fingerprint covers: not which layer or inode a path comes from."""
    return node.kind, oct(node.mode), node.uid, node.gid, node.linkname, node.digest or node.size
