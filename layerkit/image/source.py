"""Which source an image's layers are read from: the engine's overlay2 layer directories
(`storage`) or its `docker save` stream (`save`), and why.

`auto` takes the directories when they give exactly what a save would: the engine is local
(a unix socket), its driver is overlay2 with the native diff (the layer tars it writes are walks
of the layer directories; with redirect_dir or metacopy on it compares trees instead), the image
has that driver's form, and the directories are readable here. Anything else, remote engines,
the containerd image store and other drivers among it, reads the save stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from layerkit.errors import UsageError
from layerkit.image.storage import LayerDirs, layer_dirs, unreadable_reason

__all__ = ["Choice", "Requested", "choose"]

logger = logging.getLogger(__name__)

Requested = Literal["auto", "storage", "save"]


@dataclass(frozen=True)
class Choice:
    storage: LayerDirs | None     # None: read the save stream
    reason: str

    @property
    def name(self) -> str:
        return "save" if self.storage is None else "storage"


def choose(requested: Requested, ref: str, *, local: bool, info: dict[str, Any] | None,
           inspect: dict[str, Any] | None) -> Choice:
    """The source for `ref`; `info` and `inspect` are the engine's documents (None when not
    asked for: a save was requested, or the engine is remote). `--source storage` that cannot
    be had is a UsageError saying why."""
    choice = _choice(requested, local, info, inspect)
    if requested == "storage" and choice.storage is None:
        raise UsageError(f"--source storage: {choice.reason}")
    logger.debug("%s: reading layers from %s (%s)", ref, choice.name, choice.reason)
    return choice


def _choice(requested: Requested, local: bool, info: dict[str, Any] | None,
            inspect: dict[str, Any] | None) -> Choice:
    if requested == "save":
        return Choice(None, "--source save")
    if not local:
        return Choice(None, "the engine is not local (not a unix socket)")
    assert info is not None
    assert inspect is not None
    driver = info.get("Driver")
    if driver != "overlay2":
        return Choice(None, f"the engine's storage driver is {driver}, not overlay2")
    status = dict(info.get("DriverStatus") or [])
    if status.get("Native Overlay Diff") != "true":
        return Choice(None, "the engine does not use overlay2's native diff")
    where = layer_dirs(inspect)
    if where is None:
        return Choice(None, "the image's storage is not in overlay2's form")
    unreadable = unreadable_reason(where)
    if unreadable is not None:
        return Choice(None, unreadable)
    return Choice(where, "local overlay2 engine, layer directories readable")
