"""After the one pass over a saved image: the manifests (legacy `manifest.json` or OCI
`index.json`) tie the layer blobs the pass found to images, their layers to the config's
`diff_ids` and to history (empty-layer steps skipped). Names are normalised with `norm`."""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from layerkit.errors import ArchiveError, MissingLayer, NotATar, TruncatedArchive
from layerkit.image.records import Archive, Compression, Entry, HistoryItem, Layer, SavedImage

__all__ = ["Blob", "Found", "assemble", "history_steps", "norm"]

MAX_INDEX_DEPTH = 8              # OCI image indexes nested deeper than this are refused
_ODD_START = ("", ".", "/")  # names that may need normalising; the rest are checked below


@dataclass(frozen=True)
class Blob:
    """A layer tar as found in the stream, before any manifest has named it."""

    compression: Compression
    stored_size: int
    data_offset: int
    entries: tuple[Entry, ...]


@dataclass
class Found:
    """Everything one pass keeps: layer blobs' entries, small JSON members, member aliases."""

    blobs: dict[str, Blob] = field(default_factory=dict)
    docs: dict[str, bytes] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


def norm(name: str) -> str:
    """`name` without `./`, `/`, `..` steps, doubled or trailing slashes ("" for the root)."""
    if name[:1] not in _ODD_START and "//" not in name and "/." not in name:
        return name.rstrip("/")  # already plain, as most names in a layer are
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def assemble(found: Found) -> Archive:
    if "manifest.json" in found.docs:
        with _manifest_errors("manifest.json"):
            manifest = _json(found, "manifest.json")
            if not isinstance(manifest, list):
                raise ArchiveError("archive: malformed manifest.json (not a list of images)")
            images = tuple(_legacy_image(found, item) for item in manifest)
        return Archive(images, "oci" if "oci-layout" in found.names else "legacy")
    if "index.json" in found.docs:
        with _manifest_errors("index.json"):
            return Archive(tuple(_oci_images(found)), "oci")
    if not found.names:
        raise NotATar("archive: empty or not a tar archive")
    raise TruncatedArchive("archive: no manifest.json or index.json (truncated, or not an image)")


@contextlib.contextmanager
def _manifest_errors(name: str) -> Iterator[None]:
    """A manifest, index or config of the wrong shape (a key missing, a list where an object
    belongs, ...) becomes one ArchiveError line instead of a traceback."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ArchiveError(f"archive: malformed {name} or a manifest it names ({detail}); "
                           "not a saved image?") from None


def _json(found: Found, name: str) -> Any:
    name = found.aliases.get(name, name)
    if name not in found.docs:
        raise MissingLayer(f"archive: {name} is named by the manifest but not in the archive")
    try:
        return json.loads(found.docs[name])
    except ValueError:
        raise ArchiveError(f"archive: {name} is not valid JSON") from None


def _legacy_image(found: Found, item: dict[str, Any]) -> SavedImage:
    config_name = norm(item["Config"])
    config = _json(found, config_name)
    digest = "sha256:" + posixpath.basename(config_name).removesuffix(".json")
    members = [norm(p) for p in item.get("Layers") or []]
    return _image(found, tuple(item.get("RepoTags") or ()), digest, config, members)


def _oci_images(found: Found) -> Iterator[SavedImage]:
    for desc in _json(found, "index.json").get("manifests", []):
        yield from _oci_manifest(found, desc, ())


def _oci_manifest(found: Found, desc: dict[str, Any],
                  within: tuple[str, ...]) -> Iterator[SavedImage]:
    """The images `desc` names; `within` are the digests of the indexes that led here."""
    digest = desc["digest"]
    if digest in within or len(within) >= MAX_INDEX_DEPTH:
        raise ArchiveError(f"archive: image index {digest} refers to itself or nests more than "
                           f"{MAX_INDEX_DEPTH} levels deep")
    body = _json(found, _blob_path(digest))
    if "manifests" in body:  # a nested image index: one level down
        for inner in body["manifests"]:
            if "attestation-manifest" not in (inner.get("annotations") or {}).values():
                yield from _oci_manifest(found, inner, (*within, digest))
        return
    annotations = desc.get("annotations") or {}
    ref = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name")
    config = _json(found, _blob_path(body["config"]["digest"]))
    members = [_blob_path(layer["digest"]) for layer in body.get("layers", [])]
    yield _image(found, (ref,) if ref else (), body["config"]["digest"], config, members)


def _blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def _image(found: Found, refs: tuple[str, ...], config_digest: str, config: dict[str, Any],
           members: list[str]) -> SavedImage:
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    history, steps = history_steps(config.get("history") or [], len(members))
    layers = []
    named: set[str] = set()  # the members this image's layers resolved to so far
    for index, member in enumerate(members):
        stored, blob = _layer_blob(found, member)
        repeat = stored in named
        named.add(stored)
        step = steps[index] if index < len(steps) else None
        layers.append(Layer(
            index=index, digest=diff_ids[index] if index < len(diff_ids) else "",
            member=member, compression=blob.compression, stored_size=blob.stored_size,
            data_offset=blob.data_offset, entries=blob.entries,
            created_by=history[step].created_by if step is not None else "",
            history_index=step, repeat_link=repeat and member in found.aliases))
    return SavedImage(refs, config_digest, config, tuple(layers), tuple(history))


def _layer_blob(found: Found, member: str) -> tuple[str, Blob]:
    """The member that holds `member`'s data (through links) and its blob."""
    seen = set()
    while member in found.aliases and member not in seen:
        seen.add(member)
        member = found.aliases[member]
    if member in found.names and member not in found.blobs:
        raise NotATar(f"archive: layer {member} is not a tar (plain, gzip or zstd)")
    if member not in found.blobs:
        raise MissingLayer(f"archive: layer {member} is named by the manifest but not in the "
                           "archive")
    return member, found.blobs[member]


def history_steps(raw: list[dict[str, Any]],
                  n_layers: int) -> tuple[list[HistoryItem], list[int]]:
    """History items, and for each layer the index of the history item that made it.

    Items marked `empty_layer` made no layer; the others map to layers in order. An imported
    image may have fewer non-empty items than layers: the unmatched layers get none."""
    items: list[HistoryItem] = []
    steps: list[int] = []
    for position, item in enumerate(raw):
        empty = bool(item.get("empty_layer"))
        layer_index = None if empty or len(steps) >= n_layers else len(steps)
        if layer_index is not None:
            steps.append(position)
        items.append(HistoryItem(str(item.get("created_by", "")), str(item.get("created", "")),
                                 str(item.get("comment", "")), empty, layer_index))
    return items, steps
