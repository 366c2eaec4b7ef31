"""What changed between two images: their layers side by side, the files of their merged
filesystems (added, removed, changed by content, mode, owner, type or link target; by time
only when asked), each with the layer that holds its final version, and the config (env,
labels, entrypoint, cmd, user, ports, workdir, stop signal). How a user sees why two builds
are not identical."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from layerkit.image.archive import SavedImage
from layerkit.image.fsview import Node, View, replay

__all__ = ["ConfigChange", "FileChange", "ImageDiff", "LayerPair", "diff_images"]

logger = logging.getLogger(__name__)
ChangeKind = Literal["added", "removed", "changed"]
_CONFIG_SCALARS = (("entrypoint", "Entrypoint"), ("cmd", "Cmd"), ("user", "User"),
                   ("workdir", "WorkingDir"), ("stop_signal", "StopSignal"))


@dataclass(frozen=True)
class FileChange:
    path: str                     # absolute, as in the image
    change: ChangeKind
    what: tuple[str, ...]         # for "changed": content, mode, owner, type, link, time
    size_a: int
    size_b: int
    layer_a: int | None           # the layer holding the final version in A (None: absent)
    layer_b: int | None


@dataclass(frozen=True)
class LayerPair:
    index: int
    digest_a: str | None
    digest_b: str | None
    created_by_a: str
    created_by_b: str

    @property
    def same(self) -> bool:
        return self.digest_a is not None and self.digest_a == self.digest_b


@dataclass(frozen=True)
class ConfigChange:
    key: str                      # env, labels, ports, entrypoint, cmd, user, workdir, ...
    name: str                     # the variable, label or port; "" for a single value
    a: str | None                 # None: not set in A
    b: str | None


@dataclass(frozen=True)
class ImageDiff:
    ref_a: str
    ref_b: str
    id_a: str
    id_b: str
    shared_layers: int            # leading layers the two have in common (same digest)
    layers: tuple[LayerPair, ...]
    files: tuple[FileChange, ...]
    config: tuple[ConfigChange, ...]

    @property
    def identical(self) -> bool:
        return self.id_a == self.id_b

    def count(self, change: ChangeKind) -> int:
        return sum(1 for f in self.files if f.change == change)


def diff_images(a: SavedImage, b: SavedImage, *, times: bool = False) -> ImageDiff:
    """Compare two saved images (read with hash_content=True, so contents compare by digest)."""
    pairs = _layer_pairs(a, b)
    shared = next((p.index for p in pairs if not p.same), len(pairs))
    view_a = replay([layer.entries for layer in a.layers])
    view_b = replay([layer.entries for layer in b.layers])
    files = _file_changes(view_a, view_b, times=times)
    logger.debug("diff: %d shared layers, %d file changes", shared, len(files))
    config = (*_config_changes(a.config.get("config") or {}, b.config.get("config") or {}),
              *_metadata_changes(a.config, b.config))
    return ImageDiff(_ref(a), _ref(b), a.config_digest, b.config_digest, shared, pairs, files,
                     config)


def _ref(image: SavedImage) -> str:
    return image.refs[0] if image.refs else image.config_digest[:19]


def _layer_pairs(a: SavedImage, b: SavedImage) -> tuple[LayerPair, ...]:
    count = max(len(a.layers), len(b.layers))
    return tuple(LayerPair(
        i, a.layers[i].digest if i < len(a.layers) else None,
        b.layers[i].digest if i < len(b.layers) else None,
        a.layers[i].created_by if i < len(a.layers) else "",
        b.layers[i].created_by if i < len(b.layers) else "") for i in range(count))


def _file_changes(view_a: View, view_b: View, *, times: bool) -> tuple[FileChange, ...]:
    tree_a, tree_b = view_a.final, view_b.final
    times_a = _mtimes(view_a) if times else {}
    times_b = _mtimes(view_b) if times else {}
    changes = []
    for path in sorted(tree_a.keys() | tree_b.keys()):
        old, new = tree_a.get(path), tree_b.get(path)
        if old is None and new is not None:
            changes.append(FileChange(f"/{path}", "added", (), 0, new.size, None, new.layer))
        elif new is None and old is not None:
            changes.append(FileChange(f"/{path}", "removed", (), old.size, 0, old.layer, None))
        elif old is not None and new is not None:
            what = _what_changed(old, new)
            if times and times_a.get(path) != times_b.get(path):
                what += ("time",)
            if what:
                changes.append(FileChange(f"/{path}", "changed", what, old.size, new.size,
                                          old.layer, new.layer))
    return tuple(changes)


def _what_changed(old: Node, new: Node) -> tuple[str, ...]:
    what = []
    if old.kind != new.kind:
        what.append("type")
    elif old.kind == "file" and (old.size != new.size or (
            old.digest is not None and new.digest is not None and old.digest != new.digest)):
        what.append("content")
    if old.linkname != new.linkname:
        what.append("link")
    if old.mode != new.mode:
        what.append("mode")
    if (old.uid, old.gid) != (new.uid, new.gid):
        what.append("owner")
    return tuple(what)


def _mtimes(view: View) -> dict[str, int]:
    """The modification time of each visible path's final version."""
    times: dict[str, int] = {}
    for entries, fates in zip(view.layers, view.fates, strict=True):
        for entry, fate in zip(entries, fates, strict=True):
            if fate is None:
                times[entry.path] = entry.mtime
    return times


def _config_changes(a: dict[str, Any], b: dict[str, Any]) -> tuple[ConfigChange, ...]:
    changes = []
    for key, source in (("env", _env), ("labels", _labels), ("ports", _ports)):
        old, new = source(a), source(b)
        changes += [ConfigChange(key, name, old.get(name), new.get(name))
                    for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name)]
    for key, field in _CONFIG_SCALARS:
        before, after = _scalar(a.get(field)), _scalar(b.get(field))
        if before != after:
            changes.append(ConfigChange(key, "", before, after))
    return tuple(changes)


_SHOWN = {"Env", "Labels", "ExposedPorts", *(field for _, field in _CONFIG_SCALARS)}


def _metadata_changes(a: dict[str, Any], b: dict[str, Any]) -> list[ConfigChange]:
    """What else the image ID covers: the rest of the runtime config, `created`, the history
    and the build's own record (container_config): why two images with the same files and
    settings still have different IDs."""
    changes = []
    inner_a, inner_b = a.get("config") or {}, b.get("config") or {}
    for name in sorted((inner_a.keys() | inner_b.keys()) - _SHOWN):
        if inner_a.get(name) != inner_b.get(name):
            changes.append(ConfigChange("config", name, _scalar(inner_a.get(name)),
                                        _scalar(inner_b.get(name))))
    for key in ("created", "container", "docker_version", "architecture", "os"):
        if a.get(key) != b.get(key):
            changes.append(ConfigChange(key, "", _scalar(a.get(key)), _scalar(b.get(key))))
    steps_a, steps_b = a.get("history") or [], b.get("history") or []
    for i in range(max(len(steps_a), len(steps_b))):
        old = steps_a[i] if i < len(steps_a) else None
        new = steps_b[i] if i < len(steps_b) else None
        if old != new:
            changes.append(ConfigChange("history", str(i), _step(old), _step(new)))
    build_a, build_b = a.get("container_config") or {}, b.get("container_config") or {}
    for name in sorted(build_a.keys() | build_b.keys()):
        if build_a.get(name) != build_b.get(name):
            changes.append(ConfigChange("container_config", name, _scalar(build_a.get(name)),
                                        _scalar(build_b.get(name))))
    return changes


def _step(step: dict[str, Any] | None) -> str | None:
    if step is None:
        return None
    return f"{step.get('created', '')} {step.get('created_by', '')}".strip()


def _env(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in config.get("Env") or ())


def _labels(config: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}


def _ports(config: dict[str, Any]) -> dict[str, str]:
    return {str(port): "exposed" for port in config.get("ExposedPorts") or {}}


def _scalar(value: Any) -> str | None:
    if value in (None, "", []):
        return None
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)  # as the Dockerfile's exec form would hold it
    return str(value)
