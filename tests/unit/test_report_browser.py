"""The HTML report in a real browser (Debian's headless Chromium): it renders, every section
the Markdown has is there under a heading, the chart has every layer with its numbers, sizes
never wrap and nothing runs off the page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from layerkit.analyze.analyze import analyze
from layerkit.analyze.lint import lint_text
from layerkit.analyze.render import analyze_html, analyze_markdown, report_files
from layerkit.image.archive import read_archive
from tests.imagetar import Image, directory, file, layer, legacy_archive
from tests.unit.test_analyze import DOCKERFILE, HISTORY, LAYERS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# measured in the page, written into it, read back from the DOM Chromium dumps
PROBE = """<script>
window.addEventListener("load", () => {
  const wrapped = [...document.querySelectorAll("td.num")].filter(td => {
    const text = document.createRange();
    text.selectNodeContents(td);
    return text.getClientRects().length > 1;  // one rectangle per line of text
  }).length;
  const overflow = document.documentElement.scrollWidth > window.innerWidth;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({wrapped, overflow});
  document.body.appendChild(probe);
});
</script></body>"""


@pytest.fixture
def html_report(tmp_path: Path) -> tuple[Path, str]:
    other = [layer(directory("etc"), file("etc/only-here", 3000))]
    data = legacy_archive(Image(LAYERS, HISTORY, tag="app:1"),
                          Image([LAYERS[0], *other], HISTORY[:2], tag="tool:2"))
    archive = tmp_path / "two.tar"
    archive.write_bytes(data)
    images = read_archive(archive, hash_content=True).images
    report = analyze(images, lint=lint_text(DOCKERFILE))
    page = tmp_path / "report.html"
    page.write_text(analyze_html(report).replace("</body>", PROBE))
    return page, analyze_markdown(report)


def _chromium(*args: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make setup installs it)")
        pytest.skip("chromium is not installed")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1280,900", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_renders_with_every_section(html_report: tuple[Path, str],
                                           tmp_path: Path) -> None:
    page, markdown = html_report
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    headings = re.findall(r"<h[23][^>]*>([^<]+)</h[23]>", dom)
    # every heading of the Markdown report is a heading of the page
    for line in markdown.splitlines():
        if line.startswith(("## ", "### ")):
            assert line.split(" ", 1)[1] in headings, line
    assert "Dockerfile findings" in headings
    assert "Total on disk" in dom
    probe = json.loads(re.search(r'<pre id="probe">([^<]+)</pre>', dom).group(1))  # type: ignore[union-attr]
    assert probe == {"wrapped": 0, "overflow": False}
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 10_000


def test_chart_shows_every_layer_with_its_numbers(html_report: tuple[Path, str]) -> None:
    page, _ = html_report
    dom = _chromium("--dump-dom", page.as_uri())
    chart = dom[dom.index('<svg xmlns="http://www.w3.org/2000/svg" class="chart"'):]
    chart = chart[:chart.index("</svg>")]
    groups = re.findall(r'<g class="layer" data-layer="(\d+)">(.*?)</g>', chart)
    assert [int(n) for n, _ in groups] == list(range(len(LAYERS)))
    for _, group in groups:
        assert len(re.findall(r'class="value">[0-9.]+ (B|kB|MB|GB)<', group)) == 3
    # log scale: a 1 kB-scale bar is still visible beside the largest
    widths = [float(w) for w in re.findall(r'class="bar stored"[^>]*width="([0-9.]+)"', chart)]
    assert min(w for w in widths if w > 0) >= 2
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="sharing"' in dom


def test_each_image_set_has_its_own_report_name(tmp_path: Path) -> None:
    data = legacy_archive(Image(LAYERS, HISTORY, tag="app:1"))
    archive = tmp_path / "one.tar"
    archive.write_bytes(data)
    report = analyze(read_archive(archive, hash_content=True).images)
    names = sorted(report_files(report))
    assert names == ["analyze-app-1.html", "analyze-app-1.json", "analyze-app-1.md"]
