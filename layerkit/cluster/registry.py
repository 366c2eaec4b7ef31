"""Putting the cluster's images in a registry that every Swarm node can pull from, and naming
them by digest there, so that every node runs the same bytes whatever a tag says later."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from layerkit.engine.client import DockerClient
from layerkit.engine.images import find_image, split_ref, tag_image
from layerkit.engine.registry import push_image, untag
from layerkit.errors import EngineError, LayerkitError, NotFound, UsageError

logger = logging.getLogger(__name__)

_REGISTRY_RE = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9a-fA-F:]+\](:\d{1,5})?")


@dataclass(frozen=True)
class Pushed:
    local: str     # layerkit/haproxy:0.1.0
    remote: str    # HOST:PORT/layerkit/haproxy:0.1.0
    digest: str

    @property
    def pinned(self) -> str:
        """What services run: the repository at the registry, by digest."""
        return f"{split_ref(self.remote)[0]}@{self.digest}"


def validate_registry(registry: str) -> None:
    if not _REGISTRY_RE.fullmatch(registry):
        raise UsageError(f"--registry {registry!r} is not HOST[:PORT]")


def push_all(client: DockerClient, registry: str, refs: Sequence[str], *,
             on_progress: Callable[[str], None] = lambda _: None) -> tuple[Pushed, ...]:
    """Tag each image for the registry and push it; on a failure the tags made so far are
    removed again and the error says which image and why (exit 1)."""
    validate_registry(registry)
    made: list[str] = []
    pushed: list[Pushed] = []
    try:
        for ref in refs:
            image = find_image(client, ref)
            if image is None:
                raise NotFound(f"image {ref} is not in the engine", hint="run `layerkit build`")
            remote = f"{registry}/{ref}"
            tag_image(client, image.id, remote)
            made.append(remote)
            on_progress(f"pushing {remote}")
            pushed.append(Pushed(ref, remote, push_image(client, remote)))
    except LayerkitError as exc:
        for remote in made:
            untag(client, remote)
        if isinstance(exc, EngineError):
            raise EngineError(exc.message, hint=f"does a registry answer at {registry}, and "
                              "does the engine trust it (insecure-registries for HTTP)?"
                              ) from None
        raise
    return tuple(pushed)
