"""The records a saved image is read into (by `archive` from a save or a tar, by `storage`
from an engine's layer directories): entries, layers, history, images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["Archive", "Compression", "Entry", "EntryKind", "HistoryItem", "Layer", "SavedImage"]

EntryKind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
Compression = Literal["none", "gzip", "zstd"]


class Entry(NamedTuple):
    """One member of a layer tar. `path` is normalised (no leading `./` or `/`, no trailing `/`);
    `linkname` is the symlink target as stored, or the normalised path a hardlink points to.
    (A named tuple, not a frozen dataclass: made once per tar member, it is built faster.)"""

    path: str
    kind: EntryKind
    size: int            # tar header size: 0 for everything but regular files
    mode: int            # permission and set-id bits
    uid: int
    gid: int
    linkname: str = ""
    mtime: int = 0
    digest: str | None = None   # "xxh3:<hex>" of the contents, regular files, when hashed


@dataclass(frozen=True)
class HistoryItem:
    created_by: str
    created: str
    comment: str
    empty_layer: bool
    layer_index: int | None      # the layer this step made; None for metadata-only steps


@dataclass(frozen=True)
class Layer:
    index: int
    digest: str                  # diff_id: sha256 of the uncompressed tar (from the config)
    member: str                  # where it is stored in the archive
    compression: Compression
    stored_size: int             # bytes in the archive (compressed size if compressed)
    data_offset: int             # offset of the stored bytes in the archive
    entries: tuple[Entry, ...]
    created_by: str
    history_index: int | None    # position in `SavedImage.history`
    repeat_link: bool = False    # stored as a link, repeating an earlier layer of this image
                                 # (how a legacy `docker save` stores a repeated layer)

    @property
    def content_bytes(self) -> int:
        """Sum of regular file sizes in this layer's tar (hardlink entries count 0)."""
        return sum(e.size for e in self.entries if e.kind == "file")


@dataclass(frozen=True)
class SavedImage:
    refs: tuple[str, ...]
    config_digest: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]
    history: tuple[HistoryItem, ...]


@dataclass(frozen=True)
class Archive:
    images: tuple[SavedImage, ...]
    layout: Literal["legacy", "oci"]
