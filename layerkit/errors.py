"""The one exception family layerkit raises on purpose.

A `LayerkitError` becomes one line on stderr (plus an optional hint) and its exit code, in
`cli.main`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

FIX_HINT = "run `layerkit doctor --fix` (as root on Debian) or set DOCKER_HOST"


class LayerkitError(Exception):
    """Root of layerkit's errors. `exit_code` 1 = operation failed, 2 = bad input."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LayerkitError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class SpecError(UsageError):
    """An image spec is invalid; the message names the file, the key and the line."""

    def __init__(self, path: str, message: str, *, key: str | None = None,
                 line: int | None = None) -> None:
        where = path if line is None else f"{path}:{line}"
        what = f"{key}: {message}" if key else message
        super().__init__(f"{where}: {what}")
        self.path = path
        self.key = key
        self.line = line


class EngineError(LayerkitError):
    """The Docker engine refused or failed an operation; `status` is the HTTP status of its
    answer when it gave one (404, 409, 500, ...), else None."""

    def __init__(self, message: str, *, hint: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class EngineUnavailable(EngineError):
    """No Docker engine answers at the configured address."""


class NotFound(UsageError):
    """A named image, container or file does not exist."""


class BuildError(LayerkitError):
    """A build step failed; carries the failing instruction and the tail of its log."""

    def __init__(self, image: str, message: str, *, step: str | None = None,
                 log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(f"building {image} failed: {message}",
                         hint=f"failing step: {step}" if step else None)
        self.image = image
        self.step = step
        self.log_tail = log_tail


class BootstrapError(LayerkitError):
    """The base root filesystem could not be obtained."""


class ArchiveError(UsageError):
    """A saved image archive cannot be read (corrupt, truncated, not an image)."""


class NotATar(ArchiveError):
    """The archive, or a layer inside it, is not a tar."""


class TruncatedArchive(ArchiveError):
    """The archive ends before its data does, or before its manifest."""


class MissingLayer(ArchiveError):
    """A manifest names a layer or config that the archive does not hold."""


class ClusterError(LayerkitError):
    """A cluster did not reach the state asked for (not ready in time, parts missing)."""


class SquashError(LayerkitError):
    """A squash could not be completed (engine, disk, or a result that failed verification)."""


class NothingToSquash(UsageError):
    """The chosen layer range holds fewer than two layers."""


class UnsafeEntry(UsageError):
    """A layer entry would escape the image root (`..`, a hardlink outside the layer)."""


class VerifyFailed(SquashError):
    """The squashed image's filesystem differs from the source's."""


class SourceChanged(LayerkitError):
    """An image's layers changed or went away while they were being read."""


def no_such_image(what: str, detail: str) -> str:
    """`what` failed for want of the image, with the engine's own words once: its message
    often says it twice over ("no such image: X: No such image: X")."""
    half = (len(detail) - 2) // 2
    if half > 0 and detail[:half].lower() == detail[half + 2:].lower():
        detail = detail[:half]
    if detail.lower().startswith("no such image"):
        return f"{what}: {detail}"
    return f"{what}: no such image ({detail})"
