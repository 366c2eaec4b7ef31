"""The console script end to end: `layerkit analyze --source save IMAGE` with the save started
before typer is imported gives what the command gives without it, and a missing image is still
one line, whichever source was asked for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from layerkit.cli.app import app

SCRIPT = shutil.which("layerkit", path=str(Path(sys.executable).parent))


def test_the_early_save_gives_the_same_report(rootfs_image: str) -> None:
    assert SCRIPT is not None
    argv = ["analyze", rootfs_image, "--format", "json", "--no-report", "--dive-ci", "/nonexistent",
            "--source", "save"]
    script = subprocess.run([SCRIPT, *argv], capture_output=True, text=True, check=True,
                            timeout=300)
    in_process = CliRunner().invoke(app, argv)
    assert in_process.exit_code == 0, in_process.output
    assert json.loads(script.stdout) == json.loads(in_process.stdout)
    assert json.loads(script.stdout)["images"][0]["final_bytes"] > 10_000_000


def test_a_missing_image_is_one_error_line() -> None:
    assert SCRIPT is not None
    missing = "layerkit-test/no-such-image:0"
    done = subprocess.run([SCRIPT, "analyze", missing, "--no-report", "--source", "save"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: saving image {missing}: no such image (reference does not exist)"]
    done = subprocess.run([SCRIPT, "analyze", missing, "--no-report"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: inspecting image {missing}: no such image: {missing}"]  # said once
