"""Which `docker save` transport analyze should keep: the custom unix-socket path (`unixhttp`
with the request sent before typer is imported, `entry`) against the Docker SDK's `get`
stream read with `read1` (`engine.save._sdk_chunks`), in one generator, no read-ahead thread.

Both run `layerkit analyze IMAGE --no-report --format json` end to end on the 434 MB
multi-layer image of bench_analyze, in rounds whose order alternates; the verdict is the mean
of the paired differences (custom - SDK) with its 95% interval. The rule: keep the custom
path only if it is more than 5% faster.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import bench_analyze as ba

from layerkit.build.bootstrap import ensure_base
from layerkit.engine.client import connect

# The SDK path forced: no unix socket is seen, and save_image streams through the SDK session.
_SDK = """
import sys
from urllib.parse import quote
from layerkit.engine import save
def sdk_save(client, ref, **_):
    target = f"/v{client.api.api_version}/images/{quote(ref, safe='/:')}/get"
    return save.SaveStream(save._sdk_chunks(client, target, 1 << 20), 0)
save.socket_path = lambda environ: None
save.save_image = sdk_save
sys.argv = ["layerkit", *sys.argv[1:]]
from layerkit.cli.app import main
main()
"""


def _interval(diffs: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(diffs)
    t = ba._T95.get(len(diffs) - 1) or ba._T95[max(k for k in ba._T95 if k <= len(diffs) - 1)]
    half = t * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def run(quick: bool) -> str:
    ba.BASE = ensure_base(connect(), "debian:bookworm-slim", allow_bootstrap=True).ref
    tag = f"layerkit-bench/transport-{uuid.uuid4().hex[:8]}:1"
    rounds = 4 if quick else 20
    args = ["analyze", tag, "--source", "save", "--no-report", "--format", "json", "--dive-ci",
            "/nonexistent"]
    try:
        ba._build(ba._dockerfile_big(20 if quick else 90), tag)
        with tempfile.TemporaryDirectory() as tmp:
            installed = ba._as_installed(Path(tmp))
            python = installed[0]
            custom_cmd = [*installed, *args]
            sdk_cmd = [python, "-c", _SDK, *args]
            custom: list[float] = []
            sdk: list[float] = []
            for round_ in range(rounds):
                pair = [(custom, custom_cmd), (sdk, sdk_cmd)]
                for times, cmd in pair if round_ % 2 == 0 else pair[::-1]:
                    times.append(ba._run(cmd)[0])
        size = ba._size_mb(tag)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
    diffs = [c - s for c, s in zip(custom, sdk, strict=True)]
    mean, low, high = _interval(diffs)
    share = mean / statistics.mean(sdk)
    keep = share < -0.05 and high < 0
    return "\n".join([
        f"Image: {size:.0f} MB; {rounds} rounds, order alternating.", "",
        "| transport | best s | median s | mean s |", "|---|---:|---:|---:|",
        f"| unix socket, early request (`unixhttp` + `entry`) | {min(custom):.3f} | "
        f"{statistics.median(custom):.3f} | {statistics.mean(custom):.3f} |",
        f"| SDK `get` stream, `read1` (`_sdk_chunks`) | {min(sdk):.3f} | "
        f"{statistics.median(sdk):.3f} | {statistics.mean(sdk):.3f} |", "",
        f"- custom - SDK, paired: mean {mean * 1000:+.0f} ms ({share:+.1%} of the SDK's mean), "
        f"95% interval [{low * 1000:+.0f}, {high * 1000:+.0f}] ms; custom faster in "
        f"{sum(d < 0 for d in diffs)} of {len(diffs)}",
        f"- rule: keep the custom path only if > 5% faster -> "
        f"{'keep it' if keep else 'delete it, keep the SDK path'}"]) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    print(run("--quick" in sys.argv))
