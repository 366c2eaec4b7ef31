"""Renderers: results (frozen dataclasses) into tables and JSON. No numbers are computed here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from .build import BuiltImage
from .doctor import DoctorReport

SCHEMA_PREFIX = "layerkit"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - loop always returns


def dump_json(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"schema": f"{SCHEMA_PREFIX}/{kind}/v1", **body}, indent=2, sort_keys=False)


def build_table(built: Sequence[BuiltImage]) -> str:
    rows = [(b.ref, human_bytes(b.size), b.layers, human_bytes(b.shared_bytes),
             f"{b.cached_steps}/{b.steps}", f"{b.seconds:.1f} s") for b in built]
    return tabulate(rows, headers=("image", "size", "layers", "shared with base", "cached steps",
                                   "build time"), colalign=("left", "right", "right", "right",
                                                            "right", "right"))


def build_json(built: Sequence[BuiltImage]) -> str:
    return dump_json("build", {"images": [
        {"name": b.name, "ref": b.ref, "id": b.image_id, "size_bytes": b.size,
         "layers": b.layers, "shared_bytes": b.shared_bytes, "seconds": round(b.seconds, 3),
         "steps": b.steps, "cached_steps": b.cached_steps} for b in built]})


def doctor_table(report: DoctorReport) -> str:
    marks = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
    rows = [(c.name, marks[c.status], c.detail) for c in report.checks]
    return tabulate(rows, headers=("check", "status", "detail"))


def doctor_json(report: DoctorReport) -> str:
    return dump_json("doctor", {"ok": report.ok, "fixed": list(report.fixed), "checks": [
        {"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]})
