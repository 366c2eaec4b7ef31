"""Copying tar members verbatim: each member's raw header blocks (PAX and GNU extension headers
included) and its data, without re-encoding anything.

The squash copies most members of a range unchanged; copying their bytes keeps every field the
engine wrote (xattrs, long names, sub-second times, devices) exactly, and costs a few microseconds
per member instead of the stdlib's parse-and-rebuild. Only members that change (a hardlink made a
regular file, markers) are built with `tarfile`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from layerkit.image.tarstream import (
    BLOCK,
    BadHeader,
    Counted,
    is_header,
    padded,
    parse_number,
    parse_pax,
    parse_text,
    ustar_name,
)

__all__ = ["RawMember", "Sink", "copy_data", "raw_members"]

_EXTENSIONS = (b"x", b"g", b"L", b"K")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


@dataclass(frozen=True, slots=True)
class RawMember:
    name: str
    type: bytes                 # tar type flag, "0" for old "\0"
    linkname: str
    size: int                   # data bytes (0 for links, dirs, devices)
    header: bytes               # every header block of the member, as read
    pax: dict[str, str]         # the member's PAX records (path, linkpath, xattrs, ...)


def raw_members(stream: Counted) -> Iterator[RawMember]:
    """Members of the tar on `stream`; data a caller does not copy is skipped."""
    raw = bytearray()
    pax: dict[str, str] = {}
    gnu: dict[bytes, str] = {}
    while True:
        block = stream.raw.read(BLOCK)
        stream.pos += len(block)
        if not block or block == bytes(BLOCK):
            return  # end-of-archive marker (or a tar cut at a member boundary, as tar allows)
        if len(block) < BLOCK:
            raise EOFError("a tar header is cut short")
        if not raw and not _plausible(block):
            raise BadHeader("not a tar header")
        raw += block
        kind = block[156:157] if block[156:157] != b"\0" else b"0"
        size = parse_number(block[124:136])
        if kind in _EXTENSIONS:
            data = stream.read_exact(padded(size))
            raw += data
            if kind == b"x":
                pax.update(parse_pax(data[:size]))
            elif kind in (b"L", b"K"):
                gnu[kind] = parse_text(data[:size])
            continue
        size = int(pax.get("size", size)) if kind not in _NO_DATA else 0
        start = stream.pos
        yield RawMember(_name(block, pax, gnu), kind,
                        pax.get("linkpath") or gnu.get(b"K") or parse_text(block[157:257]),
                        size, bytes(raw), pax)
        stream.skip(start + padded(size) - stream.pos)
        raw, pax, gnu = bytearray(), {}, {}


def copy_data(stream: Counted, member: RawMember, out: Sink, *, pad: bool = True) -> None:
    """Copy the member's data (the stream must be at its start), padded to a block if asked."""
    if member.size <= BLOCK * 64:
        out.write(stream.read_exact(member.size))
    else:
        for chunk in stream.chunks(member.size):
            out.write(chunk)  # the sink copies it before the buffer is reused
    if pad and member.size % BLOCK:
        out.write(bytes(BLOCK - member.size % BLOCK))


def _name(block: bytes, pax: dict[str, str], gnu: dict[bytes, str]) -> str:
    return pax.get("path") or gnu.get(b"L") or ustar_name(block)


def _plausible(block: bytes) -> bool:
    """A cheap header check: the checksum was verified when the archive was first read, and
    the copy pass compares every path with that read, so a full checksum is not repeated."""
    return block[148:156].rstrip(b"\0 ").isdigit() or is_header(block)
