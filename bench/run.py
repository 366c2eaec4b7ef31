"""Run the benchmarks and write reports/benchmarks.md.

Each `bench/bench_<area>.py` has `run(quick: bool) -> str` returning a Markdown section whose
targets are stated as ratios against a peer or a floor measured in the same run. Benchmarks are
not collected by pytest and never assert wall-clock times. `--only` re-runs those areas and
keeps the other sections of the report as they were; every section carries its own date.

    python bench/run.py [--only AREA ...] [--quick] [--out reports/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import platform
import re
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


HEADER = ("# layerkit benchmarks\n\nWritten by `make bench`; `bench/run.py --only AREA` re-runs "
          "those sections and keeps the others, so each section says when it was measured.\n"
          "Targets are ratios against a peer or a floor measured in the same run.\n\n")
# the header of reports written before sections carried their own date
_OLD_HEADER_WHEN = re.compile(r"^Written by `make bench` on (?P<when>.+?)\.$", re.MULTILINE)
_TOOK = re.compile(r"^_took (?P<took>\d+) s_$", re.MULTILINE)


def run_note(quick: bool) -> str:
    """When and where a section was measured."""
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"Python {platform.python_version()}{' (quick)' if quick else ''}")


def section(area: str, body: str, *, measured: str, took: float) -> str:
    return f"## {area}\n\n_measured {measured}; took {took:.0f} s_\n\n{body.rstrip()}\n"


def merge(old: str | None, fresh: dict[str, str]) -> str:
    """The report: the `fresh` sections (area -> text) and, from the `old` report, every other
    area's section as it was. An old section without its own date gets the old header's, the
    date it was measured, instead of losing it."""
    sections: dict[str, str] = {}
    if old:
        head, *parts = old.split("\n## ")
        found = _OLD_HEADER_WHEN.search(head)
        for part in parts:
            area = part.split("\n", 1)[0].strip()
            text = f"## {part.rstrip()}\n"
            if found and "\n_measured " not in text:
                text = _TOOK.sub(f"_measured {found['when']}; took \\g<took> s_", text, count=1)
            sections[area] = text
    sections.update({area: text.rstrip() + "\n" for area, text in fresh.items()})
    return HEADER + "\n".join(sections[area] for area in sorted(sections))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="areas to run (e.g. build)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE.parent / "reports" / "benchmarks.md")
    args = parser.parse_args()
    areas = {path.stem.removeprefix("bench_"): path for path in sorted(HERE.glob("bench_*.py"))}
    unknown = sorted(set(args.only or ()) - set(areas))
    if unknown:
        parser.error(f"--only: no such area {', '.join(unknown)} (areas: {', '.join(areas)})")
    sys.path.insert(0, str(HERE))
    fresh: dict[str, str] = {}
    failed = 0
    for area, path in areas.items():
        if args.only and area not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        started = time.monotonic()
        measured = run_note(args.quick)
        print(f"bench: {area} ...", file=sys.stderr, flush=True)
        try:
            body = module.run(args.quick)
        except Exception:  # one area failing must not hide the others' numbers
            failed += 1
            body = "```\n" + traceback.format_exc() + "```\n"
        fresh[area] = section(area, body, measured=measured, took=time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.only and args.out.exists() else None
    args.out.write_text(merge(old, fresh))
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
