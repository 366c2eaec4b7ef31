"""A spool of a `docker save` stream that keeps only what the merge will read again.

The squash parses the save stream once as it arrives (`archive.read_archive`) and needs the
range's layer tars a second time for the copy. Layers kept below the range are never read again,
so the spool drops them as soon as they have passed: the reader reports each uncompressed layer
tar with its sha256 once it has passed (`on_layer`), and one whose sha256 is the diff_id of a
kept layer (an uncompressed layer, as the legacy layout stores them) is cut out of the file
again. The spool therefore peaks at the range's layers plus one kept layer in flight (and the
chunk being read), not the whole image.

`Spool.offset(stream_offset)` maps a member's data offset in the stream (what `Layer.data_offset`
holds) to its place in the spool file.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator
from typing import IO

__all__ = ["Spool"]

logger = logging.getLogger(__name__)


class Spool:
    """Tee `chunks` into `fh` (readable: see `passed`), cutting out the layers in `drop`.
    Feed the reader `tee(chunks)` and give it `passed` as its `on_layer`."""

    def __init__(self, fh: IO[bytes], drop: set[str]) -> None:
        self.fh = fh
        self.drop = drop
        self.cuts: list[tuple[int, int]] = []  # (stream offset, bytes dropped up to it)
        self.dropped = 0

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.fh.write(chunk)
            yield chunk

    def passed(self, start: int, end: int, digest: str) -> None:
        """The member at stream offsets [start, end) has passed: cut it out if it is dropped.
        The reader may already hold (and the tee have written) bytes after `end`, at most a
        chunk: they are moved back to where the member began."""
        if digest not in self.drop:
            return
        self.fh.seek(end - self.dropped)
        after = self.fh.read()
        self.fh.seek(start - self.dropped)
        self.fh.write(after)
        self.fh.truncate()
        self.dropped += end - start
        self.cuts.append((end, self.dropped))
        logger.debug("spool: dropped %s (%d bytes)", digest, end - start)

    def offset(self, stream_offset: int) -> int:
        """Where the byte at `stream_offset` of the stream is in the spool file."""
        i = bisect.bisect_right(self.cuts, (stream_offset, self.dropped + 1)) - 1
        return stream_offset - (self.cuts[i][1] if i >= 0 else 0)
