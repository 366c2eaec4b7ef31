"""Renderers for `analyze` and `lint`: table, JSON (`layerkit/analyze/v1`, `layerkit/lint/v1`),
Markdown and HTML with a chart of layer sizes and waste. No numbers are computed here."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from layerkit.render import dump_json, human_bytes, tabulate

if TYPE_CHECKING:
    from layerkit.analyze.analyze import AnalyzeReport, ImageReport, LayerReport
    from layerkit.analyze.lint import Finding, LintReport

__all__ = [
    "analyze_html",
    "analyze_json",
    "analyze_markdown",
    "analyze_table",
    "layer_chart_svg",
    "lint_json",
    "lint_table",
    "report_files",
    "report_name",
]

CAUSE_TEXT = {"overwritten": "overwritten", "deleted": "deleted",
              "metadata_only": "metadata-only change", "hardlink_copy_up": "hardlink copy-up",
              "opaque_dir": "hidden by opaque dir"}


def _short(text: str, width: int = 60) -> str:
    words = text.split()
    if words and words[0].startswith("|") and words[0][1:].isdigit():
        # the classic builder prefixes a RUN with its build args: `|2 A=1 B=2 /bin/sh -c ...`
        words = words[1 + int(words[0][1:]):]
    text = " ".join(words).replace("/bin/sh -c #(nop) ", "").replace("/bin/sh -c ", "RUN ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


# --- JSON ---------------------------------------------------------------------------------------

def analyze_json(report: AnalyzeReport) -> str:
    return dump_json("analyze", _analyze_body(report))


def _analyze_body(report: AnalyzeReport) -> dict[str, Any]:
    return {"images": [_image_json(image) for image in report.images],
            "sharing": [{"ref": s.ref, "unique_bytes": s.unique_bytes,
                         "shared_bytes": s.shared_bytes} for s in report.sharing],
            "total_on_disk_bytes": report.total_on_disk_bytes}


def _image_json(image: ImageReport) -> dict[str, Any]:
    return {
        "ref": image.ref, "id": image.image_id, "content_bytes": image.content_bytes,
        "final_bytes": image.final_bytes, "reclaimable_bytes": image.reclaimable_bytes,
        "junk_bytes": image.junk_bytes, "efficiency": round(image.dive.efficiency, 6),
        "wasted_bytes_dive": image.dive.wasted_bytes_dive,
        "user_wasted_percent": round(100 * image.dive.user_wasted_percent, 4),
        "dive_size_bytes": image.dive.size_bytes,
        "reclaimable_by_cause": image.causes,
        "layers": [_layer_json(layer) for layer in image.layers],
        "top": [{"path": f"/{w.path}", "bytes": w.size, "stored_in_layer": w.stored_in,
                 "hidden_by_layer": w.hidden_by, "cause": w.cause} for w in image.top],
        "junk": [{"category": j.category, "layer": j.layer, "bytes": j.bytes, "files": j.files,
                  "example": f"/{j.example}"} for j in image.junk],
    }


def _layer_json(layer: LayerReport) -> dict[str, Any]:
    return {"index": layer.index, "digest": layer.digest, "created_by": layer.created_by,
            "content_bytes": layer.content_bytes, "files_added": layer.files_added,
            "files_modified": layer.files_modified, "files_removed": layer.files_removed,
            "reclaimable_bytes": layer.reclaimable_bytes, "hides_bytes": layer.hides_bytes,
            "junk_bytes": layer.junk_bytes,
            "findings": [_finding_json(f) for f in layer.findings]}


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {"line": finding.line, "rule": finding.rule, "name": finding.name,
            "message": finding.message, "fix": finding.fix}


def lint_json(report: LintReport) -> str:
    return dump_json("lint", {"path": report.path, "ok": not report.findings,
                              "findings": [_finding_json(f) for f in report.findings]})


# --- tables -------------------------------------------------------------------------------------

def analyze_table(report: AnalyzeReport) -> str:
    parts = [_image_table(image) for image in report.images]
    if report.sharing:
        rows = [(s.ref, human_bytes(s.unique_bytes), human_bytes(s.shared_bytes))
                for s in report.sharing]
        parts.append(tabulate(rows, headers=("image", "unique", "shared"),
                              colalign=("left", "right", "right"))
                     + f"\ntotal on disk: {human_bytes(report.total_on_disk_bytes)}")
    return "\n\n".join(parts)


def _summary(image: ImageReport) -> str:
    return (f"{image.ref}: {human_bytes(image.content_bytes)} stored, "
            f"{human_bytes(image.final_bytes)} visible, "
            f"{human_bytes(image.reclaimable_bytes)} reclaimable "
            f"({_pct(image.reclaimable_bytes, image.content_bytes)}), "
            f"{human_bytes(image.junk_bytes)} junk; dive efficiency "
            f"{100 * image.dive.efficiency:.2f}%, "
            f"wasted {human_bytes(image.dive.wasted_bytes_dive)}")


def _image_table(image: ImageReport) -> str:
    rows = [(layer.index, human_bytes(layer.content_bytes), human_bytes(layer.reclaimable_bytes),
             human_bytes(layer.hides_bytes), f"+{layer.files_added} ~{layer.files_modified} "
             f"-{layer.files_removed}", _short(layer.created_by)) for layer in image.layers]
    parts = [_summary(image), tabulate(rows, headers=(
        "#", "size", "reclaimable", "hides below", "files", "created by"),
        colalign=("right", "right", "right", "right", "left", "left"))]
    if image.top:
        top = [(f"/{w.path}", human_bytes(w.size), w.stored_in, w.hidden_by, CAUSE_TEXT[w.cause])
               for w in image.top]
        parts.append(tabulate(top, headers=("reclaimable path", "size", "stored in", "hidden by",
                                            "cause"), colalign=("left", "right", "right",
                                                                "right", "left")))
    if image.junk:
        junk = [(j.category, j.layer, human_bytes(j.bytes), j.files, f"/{j.example}")
                for j in image.junk]
        parts.append(tabulate(junk, headers=("junk", "layer", "size", "files", "largest")))
    parts.extend(f"layer {layer.index}: line {f.line} {f.rule} {f.name}: {f.fix}"
                 for layer in image.layers for f in layer.findings)
    return "\n\n".join(parts)


def lint_table(report: LintReport) -> str:
    if not report.findings:
        return f"{report.path}: no findings"
    rows = [(f"{report.path}:{f.line}", f.rule, f.name, f.message, f.fix) for f in report.findings]
    return tabulate(rows, headers=("where", "rule", "name", "why", "fix"))


# --- Markdown and HTML --------------------------------------------------------------------------

def analyze_markdown(report: AnalyzeReport) -> str:
    out = ["# layerkit analyze", ""]
    for image in report.images:
        out += [f"## {image.ref}", "", _summary(image), "",
                tabulate(_layer_rows(image), headers=_LAYER_HEADERS, tablefmt="github"), ""]
        if image.top:
            out += ["### Largest reclaimable files", "", tabulate(
                [(f"`/{w.path}`", human_bytes(w.size), w.stored_in, w.hidden_by,
                  CAUSE_TEXT[w.cause]) for w in image.top],
                headers=("path", "size", "stored in", "hidden by", "cause"),
                tablefmt="github"), ""]
        if image.junk:
            out += ["### Junk still in the image", "", tabulate(
                [(j.category, j.layer, human_bytes(j.bytes), j.files) for j in image.junk],
                headers=("category", "layer", "size", "files"), tablefmt="github"), ""]
    if report.sharing:
        out += ["## Shared layers", "", tabulate(
            [(s.ref, human_bytes(s.unique_bytes), human_bytes(s.shared_bytes))
             for s in report.sharing], headers=("image", "unique", "shared"),
            tablefmt="github"), "", f"Total on disk: {human_bytes(report.total_on_disk_bytes)}"]
    return "\n".join(out).rstrip() + "\n"


_LAYER_HEADERS = ("#", "size", "reclaimable", "hides below", "junk", "added", "modified",
                  "removed", "created by")


def _layer_rows(image: ImageReport) -> list[tuple[Any, ...]]:
    return [(layer.index, human_bytes(layer.content_bytes), human_bytes(layer.reclaimable_bytes),
             human_bytes(layer.hides_bytes), human_bytes(layer.junk_bytes), layer.files_added,
             layer.files_modified, layer.files_removed, _short(layer.created_by, 70))
            for layer in image.layers]


def analyze_html(report: AnalyzeReport) -> str:
    from layerkit.analyze import html  # noqa: PLC0415 - only HTML reports need it

    return html.analyze_html(report, summary=_summary, short=_short, causes=CAUSE_TEXT)


def layer_chart_svg(image: ImageReport) -> str:
    """A bar per layer and series (stored, reclaimable, hides below) with its size."""
    from layerkit.analyze import html  # noqa: PLC0415

    return html.layer_chart_svg(image, _short)


def report_name(report: AnalyzeReport) -> str:
    """The file name (no suffix) of the report of this set of images: `analyze-` and the
    references made file-safe, so that each image set has its own report."""
    refs = "+".join(re.sub(r"[^a-z0-9._-]+", "-", i.ref.lower()).strip("-.") or "image"
                    for i in report.images) or "empty"
    if len(refs) > 80:  # many images: keep it readable and still one name per set
        refs = f"{refs[:60]}-{hashlib.sha256(refs.encode()).hexdigest()[:10]}"
    return f"analyze-{refs}"


def report_files(report: AnalyzeReport) -> dict[str, str]:
    """The files `analyze --out DIR` writes, named after the image set."""
    name = report_name(report)
    return {f"{name}.json": analyze_json(report), f"{name}.md": analyze_markdown(report),
            f"{name}.html": analyze_html(report)}


def finding_lines(findings: Sequence[Finding]) -> list[str]:
    return [f"line {f.line}: {f.rule} {f.name}: {f.message}; fix: {f.fix}" for f in findings]
