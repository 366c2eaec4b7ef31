"""Pushing images to a registry through the engine, and untagging what a push left behind."""

from __future__ import annotations

import logging
from typing import Any

from docker import DockerClient

from layerkit.engine.client import engine_errors, gone_ok
from layerkit.engine.images import split_ref
from layerkit.errors import EngineError

logger = logging.getLogger(__name__)

__all__ = ["push_image", "untag"]


def push_image(client: DockerClient, ref: str) -> str:
    """Push `ref` (already tagged for its registry); the digest the registry stored it under.

    The engine reports a failed push (no answer, refused, not HTTPS) as an error line of its
    progress stream, not as an HTTP status: it is turned into an EngineError here."""
    repo, tag = split_ref(ref)
    digest = ""
    with engine_errors(f"pushing {ref}"):
        for status in client.api.push(repo, tag=tag, stream=True, decode=True):
            digest = _digest(ref, status) or digest
    if not digest:
        raise EngineError(f"pushing {ref}: the registry gave no digest")
    logger.debug("pushed %s as %s", ref, digest)
    return digest


def _digest(ref: str, status: dict[str, Any]) -> str:
    if status.get("error"):
        raise EngineError(f"pushing {ref}: {str(status['error']).splitlines()[0]}")
    aux = status.get("aux") or {}
    return str(aux.get("Digest") or "")


def untag(client: DockerClient, ref: str) -> None:
    """Remove one tag (never the image's content while another tag holds it)."""
    with engine_errors(f"untagging {ref}"), gone_ok():
        client.api.remove_image(ref, noprune=True)
