"""A spool of a `docker save` stream that keeps only what the merge will read again.

The squash parses the save stream once as it arrives (`archive.read_archive`) and needs the
range's layer tars a second time for the copy. Layers kept below the range are never read again,
so the spool drops them as soon as they have passed: every member's data is hashed on the way and
a member whose sha256 is the diff_id of a kept layer (an uncompressed layer, as the legacy layout
stores them) is cut off the end of the file again. The spool therefore peaks at the range's
layers plus one kept layer in flight, not the whole image.

`Spool.offset(stream_offset)` maps a member's data offset in the stream (what `Layer.data_offset`
holds) to its place in the spool file.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator
from typing import IO

from layerkit.image.tarstream import BLOCK, NO_DATA, parse_number

__all__ = ["Spool"]


class Spool:
    """Tee `chunks` into `fh`, dropping members whose sha256 is in `drop`."""

    def __init__(self, fh: IO[bytes], drop: set[str]) -> None:
        self.fh = fh
        self.drop = drop
        self.pos = 0                    # offset in the stream
        self.header = bytearray()       # a header block being gathered
        self.left = 0                   # data + padding of the current member still to come
        self.data_left = 0              # of which data
        self.sha: hashlib._Hash | None = None
        self.start = 0                  # spool offset of the current member's first header block
        self.extended = False           # the member has extension headers: kept as it is
        self.cuts: list[tuple[int, int]] = []  # (stream offset, bytes dropped up to it)
        self.dropped = 0

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._scan(memoryview(chunk))
            yield chunk

    def offset(self, stream_offset: int) -> int:
        """Where the byte at `stream_offset` of the stream is in the spool file."""
        i = bisect.bisect_right(self.cuts, (stream_offset, self.dropped + 1)) - 1
        return stream_offset - (self.cuts[i][1] if i >= 0 else 0)

    def _scan(self, view: memoryview) -> None:
        """Write `view` on, piece by piece, so a dropped member is cut exactly at its end."""
        while view:
            if self.left:
                take = min(self.left, len(view))
                data = min(take, self.data_left)
                if self.sha is not None and data:
                    self.sha.update(view[:data])
                self.data_left -= data
                self.left -= take
            else:
                take = min(BLOCK - len(self.header), len(view))
                self.header += view[:take]
            self.fh.write(view[:take])
            self.pos += take
            view = view[take:]
            if not self.left and len(self.header) == BLOCK:
                self._header_done(bytes(self.header))
                self.header.clear()
            elif not self.left and not self.header and self.sha is not None:
                self._member_done()

    def _header_done(self, block: bytes) -> None:
        if block == bytes(BLOCK):
            return
        if not self.extended:
            self.start = self.pos - self.dropped - BLOCK
        kind = block[156:157]
        size = 0 if kind in NO_DATA else parse_number(block[124:136])
        self.data_left, self.left = size, -(-size // BLOCK) * BLOCK
        if kind in (b"x", b"g", b"L", b"K"):
            self.extended, self.sha = True, None  # its size may differ from the field: keep it
            return
        self.sha = hashlib.sha256() if kind in (b"0", b"\0", b"7") and not self.extended \
            else None
        self.extended = False
        if not self.left and self.sha is not None:
            self._member_done()

    def _member_done(self) -> None:
        assert self.sha is not None
        digest = f"sha256:{self.sha.hexdigest()}"
        self.sha = None
        if digest in self.drop:
            end = self.pos - self.dropped
            self.fh.truncate(self.start)
            self.fh.seek(self.start)
            self.dropped += end - self.start
            self.cuts.append((self.pos, self.dropped))
