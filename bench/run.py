"""Run the benchmarks and write reports/benchmarks.md.

Each `bench/bench_<area>.py` has `run(quick: bool) -> str` returning a Markdown section whose
targets are stated as ratios against a peer or a floor measured in the same run. Benchmarks are
not collected by pytest and never assert wall-clock times.

    python bench/run.py [--only AREA ...] [--quick] [--out reports/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="areas to run (e.g. build)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE.parent / "reports" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sections, failed = [], 0
    for path in sorted(HERE.glob("bench_*.py")):
        area = path.stem.removeprefix("bench_")
        if args.only and area not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        started = time.monotonic()
        print(f"bench: {area} ...", file=sys.stderr, flush=True)
        try:
            body = module.run(args.quick)
        except Exception:  # one area failing must not hide the others' numbers
            failed += 1
            body = "```\n" + traceback.format_exc() + "```\n"
        sections.append(f"## {area}\n\n_took {time.monotonic() - started:.0f} s_\n\n{body}\n")
    header = (f"# layerkit benchmarks\n\nWritten by `make bench` on "
              f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
              f"Python {platform.python_version()}{' (quick)' if args.quick else ''}.\n"
              "Targets are ratios against a peer or a floor measured in the same run.\n\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and args.out.exists():  # keep the other areas' sections
        old = args.out.read_text().split("\n## ")[1:]
        keep = [f"## {s}" for s in old if s.split("\n", 1)[0] not in args.only]
        sections = sorted(keep + sections)
    args.out.write_text(header + "\n".join(sections))
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
