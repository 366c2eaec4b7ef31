"""bench/run.py --only: the sections not re-run are kept, and each says when it was measured."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import ROOT


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _run_module()

# a report as written before sections carried their own date
OLD = """# layerkit benchmarks

Written by `make bench` on 2026-12-02 13:09 UTC, x86_64, Python 3.11.7.
Targets are ratios against a peer or a floor measured in the same run.

## analyze

_took 761 s_

### Multi-layer image

| tool | best s |
|---|---:|
| dive | 2.80 |

## build

_took 40 s_

old build numbers

## squash

_took 90 s_

old squash numbers
"""


def _sections(report: str) -> dict[str, str]:
    return {part.split("\n", 1)[0]: part for part in report.split("\n## ")[1:]}


def test_only_the_rerun_section_changes_and_the_others_keep_their_date() -> None:
    fresh = run.section("build", "new build numbers\n", measured="2026-12-03 08:00 UTC, x86_64, "
                        "Python 3.11.7", took=12.4)
    report = run.merge(OLD, {"build": fresh})
    assert "2026-12-02" not in report.split("\n## ")[0]  # no date in the header any more
    sections = _sections(report)
    assert list(sections) == ["analyze", "build", "squash"]
    assert sections["build"].startswith(
        "build\n\n_measured 2026-12-03 08:00 UTC, x86_64, Python 3.11.7; took 12 s_\n\n"
        "new build numbers\n")
    assert "old build numbers" not in report
    analyze = sections["analyze"]
    assert analyze.startswith(
        "analyze\n\n_measured 2026-12-02 13:09 UTC, x86_64, Python 3.11.7; took 761 s_\n")
    assert "### Multi-layer image\n\n| tool | best s |\n|---|---:|\n| dive | 2.80 |" in analyze
    assert "old squash numbers" in sections["squash"]
    assert "_measured 2026-12-02 13:09 UTC" in sections["squash"]


def test_a_second_rerun_keeps_every_other_sections_date() -> None:
    first = run.merge(OLD, {"build": run.section("build", "b1", measured="D1", took=1)})
    second = run.merge(first, {"squash": run.section("squash", "s2", measured="D2", took=2)})
    sections = _sections(second)
    assert sections["build"] == _sections(first)["build"]
    assert sections["build"].startswith("build\n\n_measured D1; took 1 s_\n\nb1\n")
    assert sections["squash"].startswith("squash\n\n_measured D2; took 2 s_\n\ns2\n")
    assert sections["analyze"] == _sections(first)["analyze"]
    assert run.merge(second, {}) == second  # merging nothing changes nothing


def test_a_full_run_writes_only_what_it_measured_and_a_new_area_is_added() -> None:
    full = run.merge(None, {"build": run.section("build", "b", measured="D", took=1)})
    assert list(_sections(full)) == ["build"]
    added = run.merge(OLD, {"chaos": run.section("chaos", "c", measured="D", took=1)})
    assert list(_sections(added)) == ["analyze", "build", "chaos", "squash"]
