"""`layerkit squash` against the engine, on an image built here from the local base with every
case the merge has to get right: deleted and overwritten files, a directory deleted and re-created
(opaque), nested deletions, hardlinks whose target stays or is rewritten, symlinks to a directory
and broken ones, a chmod-only change, metadata-only steps, deletions reaching into the base."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit.build.build import BuiltImage, context_tar, squash_own_layers
from layerkit.build.dockerfile import Generated
from layerkit.engine import images, save
from layerkit.engine.client import DockerClient
from layerkit.errors import EngineError
from layerkit.image.archive import SavedImage, read_archive
from layerkit.image.fsview import replay
from layerkit.squash import config as imagecfg
from layerkit.squash import squash
from layerkit.squash.squash import SquashOptions

BASE = "layerkit/base:latest"
LABEL = {"org.layerkit.test": "1"}
DOCKERFILE = f"""\
FROM {BASE}
LABEL org.layerkit.test=1
RUN mkdir -p /data/keep /data/gone/sub/deep /data/re && echo a > /data/keep/a \\
 && echo old > /data/over && echo g > /data/gone/sub/deep/f && echo r > /data/re/old \\
 && echo tool > /data/tool && ln /data/tool /data/tool-link \\
 && echo t2 > /data/t2 && ln /data/t2 /data/t2-link \\
 && ln -s /data/keep /data/dirlink && ln -s /nowhere /data/broken
ENV STAGE=two
RUN echo new > /data/over && rm -rf /data/gone/sub/deep && rm -rf /data/re && mkdir /data/re \\
 && echo n > /data/re/new && echo T2 > /data/t2 && chmod 600 /data/keep/a \\
 && rm /etc/debian_version && rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d \\
 && echo x > /etc/apt/apt.conf.d/99x
RUN rm -rf /data/gone && touch /data/last
WORKDIR /data
EXPOSE 8080
STOPSIGNAL SIGINT
CMD ["cat", "/data/over", "/data/re/new", "/data/t2-link"]
"""
EXPECTED_OUTPUT = "new\nn\nt2\n"


def _name(kind: str) -> str:
    return f"layerkit-test/squash-{kind}-{uuid.uuid4().hex[:8]}:1"


def _build(client: DockerClient, text: str, tag: str) -> str:
    stream = client.api.build(fileobj=context_tar(Generated(text, ())), custom_context=True,
                              tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                              labels=LABEL)
    for chunk in stream:
        if "error" in chunk:
            raise AssertionError(chunk["error"])
    return str(client.images.get(tag).id)


def _saved(client: DockerClient, ref: str) -> SavedImage:
    return read_archive(save.save_image(client, ref), hash_content=True).images[0]


def _fingerprint(image: SavedImage) -> str:
    return replay([layer.entries for layer in image.layers]).fingerprint()


def _run(client: DockerClient, ref: str) -> str:
    output = client.containers.run(ref, remove=True, labels=LABEL)
    return bytes(output).decode()


def _remove(client: DockerClient, *refs: str) -> None:
    for ref in refs:
        with contextlib.suppress(Exception):  # already gone is fine
            client.images.remove(ref, force=True)


@pytest.fixture(scope="module", autouse=True)
def _base_is_built(built_images: dict[str, str]) -> None:
    """BASE (`layerkit/base:latest`) exists once the project's images are built."""


@pytest.fixture(scope="module")
def source(docker_client: DockerClient) -> Iterator[tuple[str, SavedImage]]:
    tag = _name("src")
    try:
        _build(docker_client, DOCKERFILE, tag)
        yield tag, _saved(docker_client, tag)
    finally:
        _remove(docker_client, tag)


def _squash(client: DockerClient, ref: str, **options: Any) -> squash.SquashResult:
    return squash.squash(client, ref, SquashOptions(**options), os.environ)


def _check_same(client: DockerClient, source: SavedImage, ref: str) -> SavedImage:
    result = _saved(client, ref)
    assert _fingerprint(result) == _fingerprint(source)
    for key in ("Env", "Cmd", "WorkingDir", "ExposedPorts", "Labels", "StopSignal",
                "Entrypoint", "User", "Volumes"):
        assert result.config["config"].get(key) == source.config["config"].get(key), key
    assert _run(client, ref) == EXPECTED_OUTPUT
    return result


def _markers(image: SavedImage) -> list[str]:
    return sorted(e.path for e in image.layers[-1].entries if ".wh." in e.path)


def test_squash_from_base_keeps_base_layers_and_needed_markers(
        docker_client: DockerClient, source: tuple[str, SavedImage]) -> None:
    ref, saved = source
    tag = _name("from")
    try:
        result = _squash(docker_client, ref, tag=tag, base=BASE)
        base_layers = images.inspect_image(docker_client, BASE)["RootFS"]["Layers"]
        out = _check_same(docker_client, saved, tag)
        assert [layer.digest for layer in out.layers[:-1]] == base_layers
        assert result.layers_after == len(base_layers) + 1
        assert result.verified
        assert _markers(out) == ["etc/.wh.debian_version", "etc/apt/apt.conf.d/.wh..wh..opq"]
        history = out.config["history"]
        assert history[-1]["created_by"].startswith("layerkit squash: 3 layers")
        assert "rm -rf /data/gone" in history[-1]["comment"]
    finally:
        _remove(docker_client, tag)


def test_squash_all_has_one_layer_and_no_markers(
        docker_client: DockerClient, source: tuple[str, SavedImage]) -> None:
    ref, saved = source
    tag = _name("all")
    try:
        _squash(docker_client, ref, tag=tag, all_layers=True, low_disk=True, source="save")
        out = _check_same(docker_client, saved, tag)
        assert len(out.layers) == 1
        assert _markers(out) == []
    finally:
        _remove(docker_client, tag)


def test_squash_last_n_and_reproducible_ids(
        docker_client: DockerClient, source: tuple[str, SavedImage]) -> None:
    ref, saved = source
    tag = _name("last")
    try:
        first = _squash(docker_client, ref, tag=tag, last=2, reproducible=True)
        out = _check_same(docker_client, saved, tag)
        assert len(out.layers) == len(saved.layers) - 1
        again = _squash(docker_client, ref, tag=tag, last=2, reproducible=True)
        assert again.image_id == first.image_id
    finally:
        _remove(docker_client, tag)


def test_same_tag_moves_only_after_verified_load(
        docker_client: DockerClient, source: tuple[str, SavedImage]) -> None:
    ref, saved = source
    tag = _name("same")
    images.tag_image(docker_client, saved.config_digest, tag)
    try:
        result = _squash(docker_client, tag, tag=tag, last=3)
        assert images.inspect_image(docker_client, tag)["Id"] == result.image_id
        assert images.inspect_image(docker_client, ref)["Id"] == saved.config_digest
        _check_same(docker_client, saved, tag)
    finally:
        _remove(docker_client, tag)


def _tags(client: DockerClient) -> set[str]:
    return {t for i in client.api.images() for t in i.get("RepoTags") or ()}


@pytest.mark.parametrize("where", ["load", "verify", "engine-error"])
def test_interrupted_squash_leaves_everything_as_it_was(
        docker_client: DockerClient, source: tuple[str, SavedImage], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    ref, saved = source
    tag = _name("int")
    made: list[str] = []
    real_id = imagecfg.image_id

    def record_id(config: dict[str, Any]) -> str:
        made.append(real_id(config))
        return made[-1]

    def cut_load(client: DockerClient, chunks: Iterator[bytes]) -> None:
        next(iter(chunks))
        raise KeyboardInterrupt

    def fail_verify(*_: object) -> None:
        raise KeyboardInterrupt

    def engine_error(client: DockerClient, *_: object) -> None:
        raise EngineError("tagging: engine said 500")

    monkeypatch.setattr(squash, "image_id", record_id)
    if where == "load":
        monkeypatch.setattr(squash, "load_image", cut_load)
    elif where == "verify":
        monkeypatch.setattr(squash, "result_matches", fail_verify)
    else:
        monkeypatch.setattr(squash, "tag_image", engine_error)
    before = _tags(docker_client)
    with pytest.raises((KeyboardInterrupt, EngineError)):
        squash.squash(docker_client, ref, SquashOptions(tag=tag, all_layers=True,
                                                        tmp_dir=tmp_path), os.environ)
    monkeypatch.undo()
    assert tag not in _tags(docker_client)
    assert {t for t in before if t.startswith("layerkit-test/squash")} == \
        {t for t in _tags(docker_client) if t.startswith("layerkit-test/squash")}
    assert made
    assert images.find_image(docker_client, made[0]) is None
    assert list(tmp_path.iterdir()) == []
    assert images.inspect_image(docker_client, ref)["Id"] == saved.config_digest


def _to_oci(legacy: Path, oci: Path) -> None:
    """Rewrite a legacy `docker save` archive as an OCI image layout (as Docker 25+ writes)."""
    blobs: dict[str, bytes] = {}
    with tarfile.open(legacy) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]

        def blob(data: bytes) -> dict[str, Any]:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return {"digest": digest, "size": len(data)}

        config = blob(tar.extractfile(manifest["Config"]).read())  # type: ignore[union-attr]
        layers = [blob(tar.extractfile(p).read())  # type: ignore[union-attr]
                  for p in manifest["Layers"]]
    body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **d}
                       for d in layers]}
    desc = {"mediaType": body["mediaType"], **blob(json.dumps(body).encode()),
            "annotations": {"io.containerd.image.name": manifest["RepoTags"][0]}}
    index = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    layout = b'{"imageLayoutVersion":"1.0.0"}'
    members = [*((f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()),
               ("index.json", index), ("oci-layout", layout)]
    with tarfile.open(oci, "w") as out:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_oci_layout_archive_in_archive_out_then_loaded(
        docker_client: DockerClient, source: tuple[str, SavedImage], tmp_path: Path) -> None:
    ref, saved = source
    legacy, oci, out = tmp_path / "src.tar", tmp_path / "oci.tar", tmp_path / "out.tar"
    with open(legacy, "wb") as fh:
        for chunk in save.save_image(docker_client, ref):
            fh.write(chunk)
    _to_oci(legacy, oci)
    assert read_archive(oci).layout == "oci"
    tag = _name("oci")
    try:
        result = squash.squash(None, None, SquashOptions(
            archive=oci, archive_out=out, tag=tag, load=False, base=None, last=3), os.environ)
        assert result.verified
        assert not result.loaded
        assert _fingerprint(read_archive(out, hash_content=True).images[0]) == \
            _fingerprint(saved)
        images.load_image(docker_client, imagecfg.file_chunks(out))
        _check_same(docker_client, saved, tag)
    finally:
        _remove(docker_client, tag)


def test_build_squash_keeps_the_parent_layers_shared(docker_client: DockerClient) -> None:
    name = f"squash-build-{uuid.uuid4().hex[:8]}"
    tag, latest = f"layerkit-test/{name}:1", f"layerkit/{name}:latest"
    text = (f"FROM {BASE}\nRUN echo one > /one\nRUN echo two > /two && rm /one\n"
            'CMD ["cat", "/two"]\n')
    try:
        image_id = _build(docker_client, text, tag)
        built = BuiltImage(name, tag, image_id, 0, 0, 0, 0.0, 2, 0)
        out = squash_own_layers(docker_client, built, BASE)
        # loaded untagged: a build moves its tags only once every image has built
        assert images.inspect_image(docker_client, tag)["Id"] == image_id
        assert images.find_image(docker_client, latest) is None
        images.tag_image(docker_client, out.image_id, latest)
        base_layers = images.inspect_image(docker_client, BASE)["RootFS"]["Layers"]
        layers = images.inspect_image(docker_client, latest)["RootFS"]["Layers"]
        assert layers[:-1] == base_layers
        assert out.layers == len(base_layers) + 1
        assert _run(docker_client, latest) == "two\n"
        again = squash_own_layers(docker_client, out, BASE)  # one layer left: nothing to do
        assert again == out
    finally:
        _remove(docker_client, tag, latest)
