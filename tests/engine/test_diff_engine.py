"""`layerkit diff` on two images in the engine: the web app's own files and config."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_diff_of_base_and_webapp(built_images: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "layerkit", "diff", built_images["base"],
                           built_images["webapp"], "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    added = {f["path"]: f for f in body["files"] if f["change"] == "added"}
    assert added["/opt/layerkit/webapp.py"]["layer_b"] == len(body["layers"]) - 1
    assert body["shared_layers"] == sum(1 for x in body["layers"] if x["same"])
    config = {(c["key"], c["name"]): (c["a"], c["b"]) for c in body["config"]}
    assert config[("env", "LAYERKIT_ROLE")] == ("none", "web")
    assert config[("ports", "3000/tcp")] == (None, "exposed")
