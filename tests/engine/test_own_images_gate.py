"""layerkit's own images pass the gate it recommends (README: efficiency, reclaimable, junk)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

GATE = ("--min-efficiency", "0.95", "--max-reclaimable", "5%", "--max-junk", "10MB")


def test_layerkits_images_pass_the_recommended_gate(built_images: dict[str, str]) -> None:
    refs = [built_images[name] for name in ("base", "haproxy", "webapp")]
    proc = subprocess.run([sys.executable, "-m", "layerkit", "analyze", *refs, "--no-report",
                           *GATE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert [line for line in proc.stderr.splitlines() if line.startswith("gate:")] == []
    assert proc.returncode == 0, proc.stderr
