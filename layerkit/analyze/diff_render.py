"""`layerkit diff` as a table and as JSON (`layerkit/diff/v1`)."""

from __future__ import annotations

from typing import Any

from layerkit.analyze.diff import ImageDiff
from layerkit.render import dump_json, human_bytes, plural, tabulate

__all__ = ["diff_json", "diff_table"]


def _short(text: str, width: int = 50) -> str:
    text = " ".join(text.split()).replace("/bin/sh -c #(nop) ", "").replace("/bin/sh -c ",
                                                                             "RUN ")
    return text if len(text) <= width else text[: width - 1] + "…"


def diff_table(diff: ImageDiff, *, limit: int = 200) -> str:
    if diff.identical:
        return f"{diff.ref_a} and {diff.ref_b} are identical ({diff.id_a[:19]})"
    head = (f"{diff.ref_a} -> {diff.ref_b}: {diff.shared_layers} of "
            f"{plural(len(diff.layers), 'layer')} shared; {plural(diff.count('added'), 'file')}"
            f" added, {diff.count('removed')} removed, {diff.count('changed')} changed; "
            f"{plural(len(diff.config), 'config change')}")
    parts = [head]
    differing = [p for p in diff.layers if not p.same]
    if differing:
        parts.append(tabulate(
            [(p.index, (p.digest_a or "-")[7:19], (p.digest_b or "-")[7:19],
              _short(p.created_by_a), _short(p.created_by_b)) for p in differing],
            headers=("layer", "A digest", "B digest", "A created by", "B created by")))
    if diff.files:
        rows = [(f.change, f.path, ",".join(f.what), _size(f.size_a, f.layer_a),
                 _size(f.size_b, f.layer_b)) for f in diff.files[:limit]]
        parts.append(tabulate(rows, headers=("change", "path", "what", "A (layer)", "B (layer)"),
                              colalign=("left", "left", "left", "right", "right")))
        if len(diff.files) > limit:
            parts.append(f"... and {len(diff.files) - limit} more (--format json lists all)")
    if diff.config:
        parts.append(tabulate(
            [(c.key, c.name, _value(c.a), _value(c.b)) for c in diff.config],
            headers=("config", "name", "A", "B")))
        if any(len(v or "") > CONFIG_WIDTH for c in diff.config for v in (c.a, c.b)):
            parts.append("(long config values are shortened; --format json has them whole)")
    return "\n\n".join(parts)


CONFIG_WIDTH = 60  # a history step's command runs to hundreds of characters


def _value(text: str | None) -> str:
    if text is None:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= CONFIG_WIDTH else text[: CONFIG_WIDTH - 1] + "…"


def _size(size: int, layer: int | None) -> str:
    return "-" if layer is None else f"{human_bytes(size)} ({layer})"


def diff_json(diff: ImageDiff) -> str:
    body: dict[str, Any] = {
        "a": {"ref": diff.ref_a, "id": diff.id_a}, "b": {"ref": diff.ref_b, "id": diff.id_b},
        "identical": diff.identical, "shared_layers": diff.shared_layers,
        "layers": [{"index": p.index, "digest_a": p.digest_a, "digest_b": p.digest_b,
                    "created_by_a": p.created_by_a, "created_by_b": p.created_by_b,
                    "same": p.same} for p in diff.layers],
        "files": [{"path": f.path, "change": f.change, "what": list(f.what),
                   "size_a_bytes": f.size_a, "size_b_bytes": f.size_b, "layer_a": f.layer_a,
                   "layer_b": f.layer_b} for f in diff.files],
        "config": [{"key": c.key, "name": c.name, "a": c.a, "b": c.b} for c in diff.config],
        "counts": {kind: diff.count(kind) for kind in ("added", "removed", "changed")},
    }
    return dump_json("diff", body)
