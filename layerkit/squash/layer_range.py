"""Which layers a squash merges: --from BASE, --last N or --all, checked and turned into the
index of the first layer squashed."""

from __future__ import annotations

from collections.abc import Sequence

from layerkit.errors import NothingToSquash, UsageError

__all__ = ["check_range", "choose_start"]


def check_range(*, base: bool, last: int | None, all_layers: bool) -> None:
    """The range options alone, before any image is read: exactly one, and --last N >= 1."""
    if sum([base, last is not None, all_layers]) != 1:
        raise UsageError("choose exactly one of --from BASE, --last N or --all")
    if last is not None and last < 1:
        raise UsageError(f"--last {last}: squash at least 1 layer")


def choose_start(layers: int, *, base_layers: Sequence[str] | None, source_layers: Sequence[str],
                 last: int | None, all_layers: bool) -> int:
    """Index of the first layer squashed; NothingToSquash when fewer than two are in range."""
    check_range(base=base_layers is not None, last=last, all_layers=all_layers)
    if all_layers:
        start = 0
    elif last is not None:
        if last > layers:
            raise UsageError(f"--last {last}: the image has {layers} rootfs layers")
        start = layers - last
    else:
        assert base_layers is not None
        if list(source_layers[: len(base_layers)]) != list(base_layers):
            raise UsageError("--from: the image is not built on that base (its layers differ)")
        start = len(base_layers)
    if layers - start < 2:
        raise NothingToSquash(f"nothing to squash: {layers - start} layer(s) in range "
                              f"({layers} in the image)")
    return start
