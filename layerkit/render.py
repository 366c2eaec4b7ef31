"""What every renderer shares: sizes for people, tables, and JSON documents with their schema.
Each capability renders its own results (`<package>/render.py`); no numbers are computed there."""

from __future__ import annotations

import json
from typing import Any

SCHEMA_PREFIX = "layerkit"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - loop always returns


def plural(n: int, word: str) -> str:
    """'1 network', '3 networks'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def tabulate(rows: Any, **options: Any) -> str:
    """`tabulate.tabulate`, imported on first use: it loads importlib.metadata, about 50 ms
    that JSON output does not need."""
    from tabulate import tabulate as render

    return render(rows, **options)


def dump_json(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"schema": f"{SCHEMA_PREFIX}/{kind}/v1", **body}, indent=2, sort_keys=False)
