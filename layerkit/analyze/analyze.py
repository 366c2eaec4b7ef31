"""Where an image's bytes are, and why: per-layer sizes, reclaimable bytes, junk, sharing.

Results are frozen dataclasses; `report.py` renders them. Definitions (the JSON names):

- `content_bytes` of a layer: sizes of the regular files in its tar (hardlink entries count 0).
- `final_bytes`: content bytes of the merged final filesystem (hardlinked paths count once).
- `reclaimable_bytes`: all layers' content bytes minus `final_bytes`, what a full squash saves.
- `top`: the largest reclaimable files, with the layer that stored and the layer that hid each.
- `junk`: final-filesystem bytes under known junk paths, per category and adding layer.
- dive-compatible figures: see `divecompat`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerkit.analyze.dive import DiveFigures, dive_figures
from layerkit.image.archive import SavedImage, gc_paused
from layerkit.image.fsview import (
    WHITEOUT_PREFIX,
    Cause,
    View,
    is_opaque_marker,
    replay,
    whiteout_target,
)

if TYPE_CHECKING:
    from layerkit.analyze.lint import Finding, LintReport

__all__ = [
    "JUNK_PATTERNS",
    "AnalyzeReport",
    "ImageReport",
    "JunkItem",
    "LayerReport",
    "Sharing",
    "WastedPath",
    "analyze",
    "analyze_image",
]

# category -> path pattern (final-filesystem paths, no leading slash)
JUNK_PATTERNS: dict[str, str] = {
    "apt-lists": r"var/lib/apt/lists/.+",
    "apt-cache": r"var/cache/apt/.+",
    "pip-cache": r"(root|home/[^/]+)/\.cache/pip/.+",
    "npm-cache": r"(root|home/[^/]+)/\.npm/.+",
    "docs": r"usr/share/doc/.+",
    "man-pages": r"usr/share/(man|info)/.+",
    "locales": r"usr/share/locale/.+",
    "logs": r"var/log/.+",
    # not the interpreter's own: Debian compiles the stdlib and its python3-* packages under
    # /usr/lib/python3*/ at install, and every start of a read-only image's Python uses them
    "pycache": r"(?!usr/lib/python3[^/]*/)(.+/)?__pycache__/.+",
}
_JUNK = re.compile("|".join(f"(?P<{name.replace('-', '_')}>{pattern})"
                            for name, pattern in JUNK_PATTERNS.items()))


@dataclass(frozen=True)
class WastedPath:
    path: str
    size: int
    stored_in: int        # layer index that stores the bytes
    hidden_by: int        # layer index whose instruction hid them
    cause: Cause


@dataclass(frozen=True)
class JunkItem:
    category: str
    layer: int            # the layer that added these (still visible) files
    bytes: int
    files: int
    example: str          # the largest such file


@dataclass(frozen=True)
class LayerReport:
    index: int
    digest: str
    created_by: str
    content_bytes: int
    files_added: int
    files_modified: int
    files_removed: int
    reclaimable_bytes: int    # bytes stored here that the final filesystem does not show
    hides_bytes: int          # bytes of lower layers that this layer's instruction hid
    junk_bytes: int           # visible junk this layer added
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class ImageReport:
    ref: str
    image_id: str
    layers: tuple[LayerReport, ...]
    content_bytes: int
    final_bytes: int
    reclaimable_bytes: int
    junk_bytes: int
    dive: DiveFigures
    top: tuple[WastedPath, ...]
    junk: tuple[JunkItem, ...]
    causes: dict[str, int]    # reclaimable bytes by cause


@dataclass(frozen=True)
class Sharing:
    ref: str
    unique_bytes: int         # in layers no other analysed image has
    shared_bytes: int         # in layers at least one other analysed image has


@dataclass(frozen=True)
class AnalyzeReport:
    images: tuple[ImageReport, ...]
    sharing: tuple[Sharing, ...]
    total_on_disk_bytes: int  # each distinct layer (by digest) once


def analyze(images: Sequence[SavedImage], *, top: int = 20,
            lint: LintReport | None = None) -> AnalyzeReport:
    """Analyse one or more images; `lint` findings attach to the first image's layers."""
    with gc_paused():
        reports = tuple(analyze_image(image, top=top, lint=lint if i == 0 else None)
                        for i, image in enumerate(images))
        return AnalyzeReport(reports, _sharing(images), _on_disk(images))


def analyze_image(image: SavedImage, *, top: int = 20,
                  lint: LintReport | None = None) -> ImageReport:
    # dive's figures first: their working state is freed before the replay builds its own
    # dive 0.13 reads a layer stored as a link (a repeat, in a legacy archive) as empty
    dive = dive_figures([() if layer.repeat_link else layer.entries for layer in image.layers])
    view = replay([layer.entries for layer in image.layers])
    wasted = _wasted(view)
    junk = _junk(view)
    attached = _attach(image, lint) if lint else {}
    layers = _layer_reports(image, view, wasted, junk, attached)
    causes: Counter[str] = Counter()
    for item in wasted:
        causes[item.cause] += item.size
    return ImageReport(
        ref=image.refs[0] if image.refs else image.config_digest[:19], image_id=image.config_digest,
        layers=layers, content_bytes=view.content_bytes, final_bytes=view.final_bytes,
        reclaimable_bytes=view.reclaimable_bytes, junk_bytes=sum(j.bytes for j in junk),
        dive=dive, top=tuple(sorted((w for w in wasted if w.size), key=_by_size)[:top]),
        junk=junk, causes=dict(causes))


def _by_size(item: WastedPath) -> tuple[int, str]:
    return -item.size, item.path


def _wasted(view: View) -> list[WastedPath]:
    """Every reclaimable file version; their sizes add up to `reclaimable_bytes`."""
    return [WastedPath(entry.path, entry.size, layer, hidden.by_layer, hidden.cause)
            for layer, entry, hidden in view.reclaimable()]


def _junk(view: View) -> tuple[JunkItem, ...]:
    groups: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    counted: set[tuple[int, str]] = set()
    for path, node in view.final.items():
        if node.kind != "file":
            continue
        match = _JUNK.fullmatch(path)
        if match is None or node.inode in counted:
            continue
        counted.add(node.inode)
        category = (match.lastgroup or "").replace("_", "-")
        groups[category, node.layer].append((node.size, path))
    items = [JunkItem(category, layer, sum(s for s, _ in files), len(files), max(files)[1])
             for (category, layer), files in groups.items()
             if any(size for size, _ in files)]  # empty files (a log touched) weigh nothing
    return tuple(sorted(items, key=lambda j: (-j.bytes, j.category, j.layer)))


def _layer_reports(image: SavedImage, view: View, wasted: list[WastedPath],
                   junk: tuple[JunkItem, ...],
                   attached: dict[int, tuple[Finding, ...]]) -> tuple[LayerReport, ...]:
    stored, hid, junk_by = Counter[int](), Counter[int](), Counter[int]()
    for item in wasted:
        stored[item.stored_in] += item.size
        hid[item.hidden_by] += item.size
    for found in junk:
        junk_by[found.layer] += found.bytes
    changes = _changes(view)
    return tuple(LayerReport(
        index=i, digest=layer.digest, created_by=layer.created_by,
        content_bytes=layer.content_bytes, files_added=changes[i][0],
        files_modified=changes[i][1], files_removed=changes[i][2],
        reclaimable_bytes=stored[i], hides_bytes=hid[i], junk_bytes=junk_by[i],
        findings=attached.get(i, ())) for i, layer in enumerate(image.layers))


def _changes(view: View) -> list[tuple[int, int, int]]:
    """Per layer: non-directory paths it added, modified (replaced a lower version of), and
    removed (lower versions its whiteouts or opaque directories hid)."""
    replaced: list[set[str]] = [set() for _ in view.layers]
    removed = [0] * len(view.layers)
    for layer, entries in enumerate(view.layers):
        for entry, hidden in zip(entries, view.fates[layer], strict=True):
            if hidden is None or not _is_file_like(entry.path, entry.kind):
                continue
            if hidden.cause in ("deleted", "opaque_dir"):
                removed[hidden.by_layer] += 1
            else:
                replaced[hidden.by_layer].add(entry.path)
    result = []
    for layer, entries in enumerate(view.layers):
        own = [e.path for e in entries if _is_file_like(e.path, e.kind)]
        modified = sum(map(replaced[layer].__contains__, own))
        result.append((len(own) - modified, modified, removed[layer]))
    return result


def _is_file_like(path: str, kind: str) -> bool:
    """Not a directory, a whiteout or an opaque marker."""
    return kind != "dir" and (WHITEOUT_PREFIX not in path or (
        not is_opaque_marker(path) and whiteout_target(path) is None))


def _attach(image: SavedImage, lint: LintReport) -> dict[int, tuple[Finding, ...]]:
    """Findings by layer index, through the history steps the last stage's instructions made."""
    positions = _align(image, lint)
    attached: dict[int, list[Finding]] = defaultdict(list)
    for finding in lint.findings:
        position = positions.get(finding.step) if finding.step is not None else None
        layer = image.history[position].layer_index if position is not None else None
        if layer is not None:
            attached[layer].append(finding)
    return {layer: tuple(items) for layer, items in attached.items()}


def _align(image: SavedImage, lint: LintReport) -> dict[int, int]:
    """Step index -> history index. The last stage made the image's last history steps, one per
    instruction; walking back from the end, history steps of another kind are skipped (e.g. the
    LABEL step `docker build --label` appends)."""
    pairs: dict[int, int] = {}
    position = len(image.history) - 1
    for step in range(len(lint.steps) - 1, -1, -1):
        while position >= 0 and _kind(image.history[position].created_by) != \
                lint.steps[step].instruction:
            position -= 1
        if position < 0:
            break
        pairs[step] = position
        position -= 1
    return pairs


def _kind(created_by: str) -> str:
    """The instruction of a history step: `/bin/sh -c #(nop)  ENV ...` (classic builder),
    `ENV ...` (BuildKit), anything else running a shell is a RUN."""
    words = created_by.split("#(nop)", 1)[-1].split() if "#(nop)" in created_by \
        else created_by.split()
    first = words[0].upper() if words else ""
    if "#(nop)" in created_by or first in _INSTRUCTIONS:
        return first
    return "RUN"


_INSTRUCTIONS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE",
                           "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
                           "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})


def _sharing(images: Sequence[SavedImage]) -> tuple[Sharing, ...]:
    if len(images) < 2:
        return ()
    owners: dict[str, set[int]] = defaultdict(set)
    for i, image in enumerate(images):
        for layer in image.layers:
            owners[layer.digest].add(i)
    result = []
    for i, image in enumerate(images):
        unique = shared = 0
        for layer in {layer.digest: layer for layer in image.layers}.values():
            if owners[layer.digest] - {i}:
                shared += layer.content_bytes
            else:
                unique += layer.content_bytes
        result.append(Sharing(image.refs[0] if image.refs else image.config_digest[:19],
                              unique, shared))
    return tuple(result)


def _on_disk(images: Sequence[SavedImage]) -> int:
    distinct = {layer.digest: layer.content_bytes for image in images for layer in image.layers}
    return sum(distinct.values())
