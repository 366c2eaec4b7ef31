"""The pieces every spec table is checked with: where a key is (file and line), strings,
booleans and lists with the TOML type named when it is wrong, and "did you mean" for keys."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerkit.errors import SpecError

_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
               list: "an array", dict: "a table"}


def type_name(value: object) -> str:
    """What TOML calls the type of `value` ('an integer', 'a table', ...)."""
    for kind, name in _TOML_TYPES.items():
        if type(value) is kind:
            return name
    return "a date or time" if value is not None else "nothing"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when one of `choices` is close to `word`, else ''."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Ctx:
    path: Path
    text: str

    def fail(self, message: str, key: str, *, table: str | None = None,
             index: int | None = None) -> SpecError:
        shown = key if table is None else (
            f"{table}[{index}].{key}" if index is not None else f"{table}.{key}")
        return SpecError(str(self.path), message, key=shown,
                         line=locate(self.text, key, table=table, index=index))


def locate(text: str, key: str, *, table: str | None = None,
           index: int | None = None) -> int | None:
    """Line number (1-based) of `key` in `[table]` / the `index`-th `[[table]]` / top level."""
    current: str | None = None
    seen: dict[str, int] = {}
    key_re = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
    for number, line in enumerate(text.splitlines(), start=1):
        header = header_re.match(line)
        if header:
            current = header.group(2)
            if header.group(1) == "[[":
                seen[current] = seen.get(current, -1) + 1
            continue
        if current != table:
            continue
        if index is not None and current is not None and seen.get(current, -1) != index:
            continue
        if key_re.match(line):
            return number
    # the key is missing: point at the table's header (or at the key's own, `[[key]]`)
    wanted, count = (table, -1) if table is not None else (key, -1)
    for number, line in enumerate(text.splitlines(), start=1):
        header = header_re.match(line)
        if header and header.group(2) == wanted:
            count += 1
            if table is None or index is None or count == index:
                return number
    return None


def check_keys(ctx: Ctx, data: dict[str, Any], allowed: set[str], table: str | None,
               index: int | None = None) -> None:
    for key in data:
        if key not in allowed:
            raise ctx.fail(f"unknown key{did_you_mean(key, allowed)} "
                           f"(allowed: {', '.join(sorted(allowed))})", key, table=table,
                           index=index)


def get_str(ctx: Ctx, data: dict[str, Any], key: str, *, required: bool = False,
            default: str = "", table: str | None = None, index: int | None = None) -> str:
    if key not in data:
        if required:
            raise ctx.fail("is required", key, table=table, index=index)
        return default
    value = data[key]
    if not isinstance(value, str):
        raise ctx.fail(f"must be a non-empty string, not {type_name(value)}", key, table=table,
                       index=index)
    if not value.strip():
        raise ctx.fail("must be a non-empty string", key, table=table, index=index)
    return value


def get_bool(ctx: Ctx, data: dict[str, Any], key: str, *, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ctx.fail(f"must be true or false, not {type_name(value)}", key)
    return value


def get_str_list(ctx: Ctx, data: dict[str, Any], key: str, *, table: str | None = None,
                 index: int | None = None) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ctx.fail(f"must be a list of non-empty strings, not {type_name(value)}", key,
                       table=table, index=index)
    for item in value:
        if not isinstance(item, str) or not item:
            raise ctx.fail(f"must be a list of non-empty strings (has {type_name(item)})", key,
                           table=table, index=index)
    return tuple(value)


def get_tables(ctx: Ctx, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The array of tables `[[key]]` (empty when absent)."""
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ctx.fail(f"must be an array of tables ([[{key}]]), not {type_name(raw)}", key)
    return raw
