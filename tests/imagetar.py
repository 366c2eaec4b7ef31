"""Synthetic layer tars and saved-image archives (legacy and OCI), written with tarfile.

Used by the archive, fsview, analyze and squash unit tests: every byte is known, no engine needed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Member:
    info: tarfile.TarInfo
    data: bytes = b""


def _info(path: str, kind: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
          size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.uid, info.gid, info.size = kind, mode, uid, gid, size
    info.linkname, info.mtime = link, MTIME
    return info


def file(path: str, data: bytes | int = b"", *, mode: int = 0o644, uid: int = 0,
         gid: int = 0) -> Member:
    """A regular file; an int `data` means that many bytes of filler."""
    body = b"x" * data if isinstance(data, int) else data
    return Member(_info(path, tarfile.REGTYPE, mode=mode, uid=uid, gid=gid, size=len(body)), body)


def directory(path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Member:
    return Member(_info(path, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid))


def symlink(path: str, target: str) -> Member:
    return Member(_info(path, tarfile.SYMTYPE, mode=0o777, link=target))


def hardlink(path: str, target: str) -> Member:
    return Member(_info(path, tarfile.LNKTYPE, link=target))


def whiteout(path: str) -> Member:
    head, _, name = path.rpartition("/")
    return file(f"{head}/.wh.{name}" if head else f".wh.{name}")


def opaque(directory_path: str) -> Member:
    return file(f"{directory_path}/.wh..wh..opq")


def layer(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.info.isfile() else None)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class Image:
    """An image to save: layer tars (uncompressed), history, tag."""

    layers: Sequence[bytes]
    history: Sequence[dict[str, Any]] | None = None
    tag: str = "test/image:latest"
    extra_config: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        history = self.history if self.history is not None else [
            {"created_by": f"step {i}"} for i in range(len(self.layers))]
        return {"architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in self.layers]},
                "history": list(history), **self.extra_config}


def _outer(members: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_info(name, tarfile.REGTYPE, size=len(data)), io.BytesIO(data))
        for name, target in (links or {}).items():
            tar.addfile(_info(name, tarfile.SYMTYPE, link=target))
    return buf.getvalue()


def legacy_archive(*images: Image, manifest_first: bool = False) -> bytes:
    """A `docker save` (Docker < 25) archive. A layer occurring twice is stored once and linked,
    as Docker does."""
    blobs: list[tuple[str, bytes]] = []
    links: dict[str, str] = {}
    stored: dict[str, str] = {}
    manifest = []
    for image in images:
        config = json.dumps(image.config()).encode()
        config_name = f"{hashlib.sha256(config).hexdigest()}.json"
        paths = []
        for position, tar in enumerate(image.layers):
            path = f"{hashlib.sha256(f'{image.tag}{position}'.encode()).hexdigest()}/layer.tar"
            if sha(tar) in stored:
                links[path] = f"../{stored[sha(tar)]}"
            else:
                stored[sha(tar)] = path
                blobs.append((path, tar))
            paths.append(path)
        blobs.append((config_name, config))
        manifest.append({"Config": config_name, "RepoTags": [image.tag], "Layers": paths})
    doc = ("manifest.json", json.dumps(manifest).encode())
    return _outer([doc, *blobs] if manifest_first else [*blobs, doc], links)


def oci_archive(*images: Image, compression: Sequence[str] = (), with_manifest_json: bool = True,
                nested_index: bool = False) -> bytes:
    """An OCI image layout archive as Docker 25+ writes it (blobs, index.json, oci-layout and a
    legacy manifest.json pointing into blobs/); `compression[i]` applies to layer i."""
    blobs: dict[str, bytes] = {}
    index, legacy = [], []

    def put(data: bytes) -> str:
        blobs[sha(data)] = data
        return sha(data)

    for image in images:
        config_digest = put(json.dumps(image.config()).encode())
        layer_descs = []
        for i, tar in enumerate(image.layers):
            how = compression[i] if i < len(compression) else "none"
            stored = compress(tar, how)
            media = "application/vnd.oci.image.layer.v1.tar" + {
                "none": "", "gzip": "+gzip", "zstd": "+zstd"}[how]
            layer_descs.append({"mediaType": media, "digest": put(stored), "size": len(stored)})
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": config_digest}, "layers": layer_descs}
        desc = {"mediaType": manifest["mediaType"], "digest": put(json.dumps(manifest).encode()),
                "annotations": {"io.containerd.image.name": image.tag}}
        if nested_index:
            nested = {"schemaVersion": 2, "manifests": [desc]}
            desc = {"mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": put(json.dumps(nested).encode()), "annotations": desc["annotations"]}
        index.append(desc)
        legacy.append({"Config": _blob(config_digest), "RepoTags": [image.tag],
                       "Layers": [_blob(d["digest"]) for d in layer_descs]})
    members = [(_blob(d), data) for d, data in blobs.items()]
    members.append(("index.json", json.dumps({"schemaVersion": 2, "manifests": index}).encode()))
    if with_manifest_json:
        members.append(("manifest.json", json.dumps(legacy).encode()))
    members.append(("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'))
    return _outer(members)


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")
