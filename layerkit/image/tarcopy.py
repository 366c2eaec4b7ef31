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

from layerkit.image.tarstream import BLOCK, NO_DATA, Counted, headers

__all__ = ["RawMember", "Sink", "copy_data", "raw_members"]


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
    """Members of the tar on `stream` (read by `tarstream.headers`); data a caller does not
    copy is skipped."""
    for member in headers(stream, keep_raw=True):
        size = 0 if member.type in NO_DATA else member.size
        yield RawMember(member.name, member.type, member.linkname, size, member.raw,
                        member.pax or {})


def copy_data(stream: Counted, member: RawMember, out: Sink, *, pad: bool = True) -> None:
    """Copy the member's data (the stream must be at its start), padded to a block if asked."""
    if member.size <= BLOCK * 64:
        out.write(stream.read_exact(member.size))
    else:
        for chunk in stream.chunks(member.size):
            out.write(chunk)  # the sink copies it before the buffer is reused
    if pad and member.size % BLOCK:
        out.write(bytes(BLOCK - member.size % BLOCK))
