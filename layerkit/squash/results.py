"""What a squash is asked to do (`SquashOptions`) and what it did (`SquashResult`, `Phases`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from layerkit.image.source import Requested

__all__ = ["Phases", "SquashOptions", "SquashResult"]


@dataclass(frozen=True)
class SquashOptions:
    tag: str | None = None                  # -t: the name the result gets
    base: str | None = None                 # --from: keep this image's layers
    last: int | None = None                 # --last: squash the last N rootfs layers
    all_layers: bool = False                # --all
    archive: Path | None = None             # --archive: read a saved image, no engine
    archive_out: Path | None = None         # --archive-out: write the result (gzip layers)
    load: bool = True                       # load into the engine (needs a tag)
    # False: load the result untagged (`tag` only names it): a build moves all its tags at once
    move_tag: bool = True
    reproducible: bool = False
    verify: bool = True
    low_disk: bool = False                  # read the image twice instead of spooling it
    source: Requested = "auto"              # layer directories (storage) or save stream
    tmp_dir: Path | None = None


@dataclass(frozen=True)
class Phases:
    read: float = 0.0
    merge: float = 0.0
    load: float = 0.0
    verify: float = 0.0

    @property
    def total(self) -> float:
        return self.read + self.merge + self.load + self.verify


@dataclass(frozen=True)
class SquashResult:
    source: str
    source_id: str
    tag: str | None
    image_id: str
    layers_before: int
    layers_after: int
    squashed_layers: int
    bytes_before: int            # file content bytes of all layers (what layer tars carry)
    bytes_after: int
    layer_bytes: int             # size of the new layer tar
    markers: int                 # whiteout/opaque markers in the new layer
    converted_hardlinks: int
    verified: bool
    loaded: bool
    archive_out: str | None
    phases: Phases = field(default_factory=Phases)
