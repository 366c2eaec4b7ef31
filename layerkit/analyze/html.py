"""The HTML report of `analyze`: everything the Markdown report holds, under headings, with a
chart per image (every layer, its stored, reclaimable and hidden-below bytes, each with its
number, on a logarithmic scale so that a 4 kB layer shows beside a 74 MB one) and, for several
images, a picture of the bytes they share. Hand-written SVG: no plotting library, and the same
report gives the same bytes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING

from layerkit.render import human_bytes

if TYPE_CHECKING:
    from layerkit.analyze.analyze import AnalyzeReport, ImageReport, Sharing

__all__ = ["analyze_html", "layer_chart_svg", "sharing_svg"]

_SERIES = (("stored", "#4c78a8", "stored in this layer"),
           ("reclaimable", "#e45756", "reclaimable: stored here, hidden by a later layer"),
           ("hides", "#f58518", "hides below: bytes of lower layers this layer hid"))
_LABEL_W, _BAR_W, _TEXT_W, _BAR_H, _GAP = 330, 420, 80, 11, 10
_FLOOR = 3  # log10 of the smallest size the scale shows apart (1 kB); smaller bars are 2 px


def analyze_html(report: AnalyzeReport, *, summary: Callable[[ImageReport], str],
                 short: Callable[[str, int], str], causes: dict[str, str]) -> str:
    refs = ", ".join(i.ref for i in report.images)
    nav = "".join(f'<li><a href="#image-{n}">{escape(i.ref)}</a></li>'
                  for n, i in enumerate(report.images))
    if report.sharing:
        nav += '<li><a href="#sharing">Shared layers</a></li>'
    body = [f"<h1>layerkit analyze: {escape(refs)}</h1>", f"<nav><ul>{nav}</ul></nav>"]
    for n, image in enumerate(report.images):
        body.append(_image_section(n, image, summary, short, causes))
    if report.sharing:
        body.append(_sharing_section(report))
    return _PAGE.format(title=escape(f"layerkit analyze: {refs}"), body="\n".join(body))


def _image_section(n: int, image: ImageReport, summary: Callable[[ImageReport], str],
                   short: Callable[[str, int], str], causes: dict[str, str]) -> str:
    parts = [f'<section id="image-{n}"><h2>{escape(image.ref)}</h2>',
             f'<p class="summary">{escape(summary(image))}</p>',
             "<h3>Layers</h3>", layer_chart_svg(image, short),
             _table(("#", "size", "reclaimable", "hides below", "junk", "added", "modified",
                     "removed", "created by"),
                    [(str(x.index), human_bytes(x.content_bytes),
                      human_bytes(x.reclaimable_bytes), human_bytes(x.hides_bytes),
                      human_bytes(x.junk_bytes), str(x.files_added), str(x.files_modified),
                      str(x.files_removed), short(x.created_by, 70)) for x in image.layers],
                    numeric=8)]
    if image.top:
        parts += ["<h3>Largest reclaimable files</h3>", _table(
            ("path", "size", "stored in", "hidden by", "cause"),
            [(f"/{w.path}", human_bytes(w.size), str(w.stored_in), str(w.hidden_by),
              causes[w.cause]) for w in image.top], numeric=(1, 2, 3))]
    if image.junk:
        parts += ["<h3>Junk still in the image</h3>", _table(
            ("category", "layer", "size", "files", "largest"),
            [(j.category, str(j.layer), human_bytes(j.bytes), str(j.files), f"/{j.example}")
             for j in image.junk], numeric=(1, 2, 3))]
    findings = [(str(x.index), str(f.line), f.rule, f.name, f.fix)
                for x in image.layers for f in x.findings]
    if findings:
        parts += ["<h3>Dockerfile findings</h3>",
                  _table(("layer", "line", "rule", "name", "fix"), findings, numeric=(0, 1))]
    return "\n".join([*parts, "</section>"])


def _sharing_section(report: AnalyzeReport) -> str:
    rows = [(s.ref, human_bytes(s.unique_bytes), human_bytes(s.shared_bytes))
            for s in report.sharing]
    return "\n".join([
        '<section id="sharing"><h2>Shared layers</h2>', sharing_svg(report.sharing),
        _table(("image", "unique", "shared"), rows, numeric=(1, 2)),
        f'<p class="total">Total on disk: <b>{human_bytes(report.total_on_disk_bytes)}</b> '
        "(each layer counted once)</p></section>"])


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]],
           numeric: int | tuple[int, ...] = ()) -> str:
    nums = set(range(1, numeric)) if isinstance(numeric, int) else set(numeric)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{escape(c)}</td>' if i in nums else f"<td>{escape(c)}</td>"
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _x(value: int, top: float) -> float:
    """Bar length on the log scale from 1 kB to `top` (a power of ten, log10)."""
    if value <= 0:
        return 0.0
    return max(2.0, _BAR_W * (math.log10(max(value, 10**_FLOOR)) - _FLOOR) / (top - _FLOOR))


def layer_chart_svg(image: ImageReport,
                    short: Callable[[str, int], str] = lambda t, _w: t) -> str:
    """Per layer three bars with their sizes: stored, reclaimable, hides below (log scale)."""
    largest = max([1, *(max(x.content_bytes, x.hides_bytes) for x in image.layers)])
    top = max(_FLOOR + 1, math.ceil(math.log10(largest)))
    row_h = 3 * _BAR_H + _GAP
    legend_h = 16 * len(_SERIES) + 6
    height = legend_h + 8 + row_h * len(image.layers) + 24
    width = _LABEL_W + _BAR_W + _TEXT_W
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'aria-label="layer sizes of {escape(image.ref)}">']
    for k, (_, colour, text) in enumerate(_SERIES):
        out.append(f'<rect x="{_LABEL_W}" y="{4 + 16 * k}" width="10" height="10" '
                   f'fill="{colour}"/><text x="{_LABEL_W + 14}" y="{13 + 16 * k}" '
                   f'class="legend">{escape(text)}</text>')
    for power in range(_FLOOR, top + 1):
        x = _LABEL_W + _x(10**power, top)
        out.append(f'<line x1="{x:.1f}" y1="{legend_h}" x2="{x:.1f}" y2="{height - 20}" '
                   'class="grid"/>'
                   f'<text x="{x:.1f}" y="{height - 6}" class="tick">'
                   f"{human_bytes(10**power)}</text>")
    for row, layer in enumerate(image.layers):
        y = legend_h + 8 + row * row_h
        label = f"{layer.index}: {short(layer.created_by, 44) or '(no history)'}"
        out.append(f'<g class="layer" data-layer="{layer.index}"><title>'
                   f"{escape(layer.created_by or '(no history)')}</title>"
                   f'<text x="0" y="{y + 2 * _BAR_H - 2}" class="label">{escape(label)}</text>')
        values = (layer.content_bytes, layer.reclaimable_bytes, layer.hides_bytes)
        for k, ((name, colour, _), value) in enumerate(zip(_SERIES, values, strict=True)):
            bar_y, length = y + k * _BAR_H, _x(value, top)
            out.append(f'<rect class="bar {name}" x="{_LABEL_W}" y="{bar_y}" '
                       f'width="{length:.1f}" height="{_BAR_H - 1}" fill="{colour}"/>'
                       f'<text x="{_LABEL_W + length + 4:.1f}" y="{bar_y + _BAR_H - 2}" '
                       f'class="value">{human_bytes(value)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def sharing_svg(sharing: tuple[Sharing, ...]) -> str:
    """Per image one bar: the bytes it shares with the others, then its own (linear)."""
    largest = max([1, *(s.unique_bytes + s.shared_bytes for s in sharing)])
    height, width = 24 + 26 * len(sharing), _LABEL_W + _BAR_W + 2 * _TEXT_W
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sharing" role="img" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'aria-label="bytes shared between the images">',
           '<rect x="0" y="2" width="10" height="10" fill="#9d9d9d"/>'
           '<text x="14" y="11" class="legend">shared with another image</text>'
           '<rect x="250" y="2" width="10" height="10" fill="#54a24b"/>'
           '<text x="264" y="11" class="legend">only in this image</text>']
    for row, s in enumerate(sharing):
        y = 20 + row * 26
        shared = _BAR_W * s.shared_bytes / largest
        unique = _BAR_W * s.unique_bytes / largest
        out.append(f'<g class="image"><text x="0" y="{y + 14}" class="label">{escape(s.ref)}'
                   f'</text><rect x="{_LABEL_W}" y="{y}" width="{shared:.1f}" height="18" '
                   f'fill="#9d9d9d"/><rect x="{_LABEL_W + shared:.1f}" y="{y}" '
                   f'width="{unique:.1f}" height="18" fill="#54a24b"/>'
                   f'<text x="{_LABEL_W + shared + unique + 4:.1f}" y="{y + 14}" class="value">'
                   f"{human_bytes(s.shared_bytes)} shared + {human_bytes(s.unique_bytes)}"
                   "</text></g>")
    out.append("</svg>")
    return "".join(out)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;max-width:78em;margin:2em auto;padding:0 1em;color:#222}}
h1{{font-size:1.5em}} h2{{margin-top:2em;border-bottom:2px solid #4c78a8}} h3{{margin-top:1.5em}}
table{{border-collapse:collapse;margin:.5em 0}}
td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}
td{{overflow-wrap:anywhere}}
td.num{{overflow-wrap:normal;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}}
th{{white-space:nowrap}} .summary{{font-size:1.05em}}
svg text{{font-size:11px;font-family:system-ui,sans-serif}} svg .tick{{fill:#666}}
svg .grid{{stroke:#ddd}} svg .value{{fill:#333}} svg{{max-width:100%;height:auto}}
</style></head><body>
{body}
</body></html>
"""
