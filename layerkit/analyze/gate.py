"""The CI gate of `analyze`: limits on efficiency, reclaimable bytes and junk, and dive's
`.dive-ci` rules (`lowestEfficiency`, `highestWastedBytes`, `highestUserWastedPercent`).

`check` returns one line per failed rule; the CLI prints them and exits 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerkit.errors import UsageError
from layerkit.render import human_bytes

if TYPE_CHECKING:
    from layerkit.analyze.analyze import ImageReport

__all__ = ["GateRules", "Limit", "check", "check_efficiency", "parse_bytes", "parse_limit",
           "read_dive_ci"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


@dataclass(frozen=True)
class Limit:
    """A bound in bytes, or in percent of a whole."""

    bytes: int | None = None
    percent: float | None = None

    def exceeded(self, value: int, whole: int) -> bool:
        if self.bytes is not None:
            return value > self.bytes
        return self.percent is not None and whole > 0 and 100 * value / whole > self.percent

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else human_bytes(self.bytes or 0)


@dataclass(frozen=True)
class GateRules:
    min_efficiency: float | None = None         # 0..1, dive's efficiency
    max_reclaimable: Limit | None = None        # percent of the stored content bytes
    max_junk: Limit | None = None               # percent of the final bytes
    max_wasted_bytes_dive: int | None = None    # .dive-ci highestWastedBytes
    max_user_wasted: float | None = None        # .dive-ci highestUserWastedPercent (0..1)

    @property
    def empty(self) -> bool:
        return self == GateRules()


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (e.g. 20MB, 1.5GiB, 1000)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_limit(text: str) -> Limit:
    """'10%' or a size ('50MB', '1000')."""
    if text.strip().endswith("%"):
        try:
            percent = float(text.strip()[:-1])
        except ValueError:
            raise UsageError(f"not a percentage: {text!r}") from None
        if not 0 <= percent <= 100:
            raise UsageError(f"not a percentage from 0 to 100: {text!r}")
        return Limit(percent=percent)
    if re.fullmatch(r"\s*[0-9]*\.[0-9]+\s*", text):  # 0.5 bytes: surely a share was meant
        raise UsageError(f"not a size: {text!r} (a number without a unit is bytes)",
                         hint=f"for a share of the image write {text.strip()}%, for a size "
                              "e.g. 50MB")
    return Limit(bytes=parse_bytes(text))


def check_efficiency(value: float | None) -> float | None:
    """An efficiency limit is a fraction, as dive's lowestEfficiency is: 0.95, not 95."""
    if value is not None and not 0 <= value <= 1:
        raise UsageError(f"--min-efficiency {value:g}: an efficiency is from 0 to 1",
                         hint=f"for {value:g}% write {value / 100:g}" if 1 < value <= 100
                         else None)
    return value


def read_dive_ci(path: Path, base: GateRules) -> GateRules:
    """Add dive's `.dive-ci` rules to `base` (command-line limits win); `disabled` is skipped."""
    rules: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        key, sep, value = raw.split("#", 1)[0].strip().partition(":")
        if sep and value.strip() and value.strip().lower() != "disabled":
            rules[key.strip()] = value.strip().strip("'\"")
    try:
        return GateRules(
            min_efficiency=base.min_efficiency if base.min_efficiency is not None
            else _float(rules.get("lowestEfficiency")),
            max_reclaimable=base.max_reclaimable, max_junk=base.max_junk,
            max_wasted_bytes_dive=parse_bytes(rules["highestWastedBytes"])
            if "highestWastedBytes" in rules else None,
            max_user_wasted=_float(rules.get("highestUserWastedPercent")))
    except ValueError:
        raise UsageError(f"{path}: a rule value is not a number") from None


def _float(text: str | None) -> float | None:
    return float(text) if text is not None else None


def _size(n: int) -> str:
    return f"{human_bytes(n)} ({n:,} bytes)"


def check(image: ImageReport, rules: GateRules) -> tuple[str, ...]:
    failed = []
    if rules.min_efficiency is not None and image.dive.efficiency < rules.min_efficiency:
        failed.append(f"{image.ref}: efficiency {image.dive.efficiency:.4f} is below "
                      f"{rules.min_efficiency:g}")
    if rules.max_reclaimable and rules.max_reclaimable.exceeded(image.reclaimable_bytes,
                                                                image.content_bytes):
        failed.append(f"{image.ref}: reclaimable {_size(image.reclaimable_bytes)} is over "
                      f"{rules.max_reclaimable}")
    if rules.max_junk and rules.max_junk.exceeded(image.junk_bytes, image.final_bytes):
        failed.append(f"{image.ref}: junk {_size(image.junk_bytes)} is over {rules.max_junk}")
    if rules.max_wasted_bytes_dive is not None and \
            image.dive.wasted_bytes_dive > rules.max_wasted_bytes_dive:
        failed.append(f"{image.ref}: wasted {_size(image.dive.wasted_bytes_dive)} is over "
                      f"{human_bytes(rules.max_wasted_bytes_dive)} (.dive-ci highestWastedBytes)")
    if rules.max_user_wasted is not None and \
            image.dive.user_wasted_percent > rules.max_user_wasted:
        failed.append(f"{image.ref}: user wasted {image.dive.user_wasted_percent:.4f} is over "
                      f"{rules.max_user_wasted:g} (.dive-ci highestUserWastedPercent)")
    return tuple(failed)
