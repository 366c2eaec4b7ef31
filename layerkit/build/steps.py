"""Custom build steps, build arguments and build stages of a spec.

A step is one RUN, placed by the layer rules: `phase = "deps"` (the default) runs after the
packages and the user, before any file is copied, so that an edit to the app's source never
reruns it; `phase = "app"` runs after every file (a compile of the source). The files a step
reads (`inputs`: image-directory file -> path in the image) are copied just before it, so its
cache depends on them alone. A stage is a separate image (`FROM ... AS name`) whose artefacts
(`[[artifacts]]`) are copied into the final one: compilers never ship.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerkit.build.specfields import (
    Ctx,
    check_keys,
    did_you_mean,
    get_str,
    get_str_list,
    get_tables,
    type_name,
)

_STEP_KEYS = {"run", "phase", "inputs", "purpose"}
_STAGE_KEYS = {"name", "parent", "install", "inputs", "run"}
_ARTIFACT_KEYS = {"stage", "src", "dest", "owner"}
_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


@dataclass(frozen=True)
class StepInput:
    source: Path  # on the host
    dest: str     # absolute path in the image


@dataclass(frozen=True)
class Step:
    run: str
    phase: str                      # "deps" or "app"
    inputs: tuple[StepInput, ...]
    purpose: str


@dataclass(frozen=True)
class Stage:
    name: str
    parent: str | None              # None: the image's own parent
    install: tuple[str, ...]
    inputs: tuple[StepInput, ...]
    run: tuple[str, ...]


@dataclass(frozen=True)
class Artifact:
    stage: str
    src: str                        # absolute path in the stage
    dest: str                       # absolute path in the image
    owner: str                      # "root" or the spec's user


def parse_args(ctx: Ctx, data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """`[args]`: build arguments with their defaults (ARG NAME=default)."""
    raw = data.get("args", {})
    if not isinstance(raw, dict):
        raise ctx.fail(f"must be a table ([args]), not {type_name(raw)}", "args")
    out = []
    for name, value in raw.items():
        if not _ARG_RE.match(name):
            raise ctx.fail(f"{name!r} is not a valid build argument name", name, table="args")
        if not isinstance(value, str):
            raise ctx.fail(f"must be a string (the default), not {type_name(value)}", name,
                           table="args")
        out.append((name, value))
    return tuple(out)


def parse_steps(ctx: Ctx, data: dict[str, Any]) -> tuple[Step, ...]:
    steps = []
    for i, entry in enumerate(get_tables(ctx, data, "steps")):
        check_keys(ctx, entry, _STEP_KEYS, "steps", i)
        run = get_str(ctx, entry, "run", required=True, table="steps", index=i)
        phase = get_str(ctx, entry, "phase", default="deps", table="steps", index=i)
        if phase not in ("deps", "app"):
            raise ctx.fail('must be "deps" (before the files) or "app" (after them)', "phase",
                           table="steps", index=i)
        inputs = _inputs(ctx, entry, "steps", i)
        purpose = get_str(ctx, entry, "purpose", default="", table="steps", index=i)
        steps.append(Step(run, phase, inputs, purpose))
    return tuple(steps)


def parse_stages(ctx: Ctx, data: dict[str, Any], package_re: re.Pattern[str],
                 ref_re: re.Pattern[str]) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    for i, entry in enumerate(get_tables(ctx, data, "stages")):
        check_keys(ctx, entry, _STAGE_KEYS, "stages", i)
        name = get_str(ctx, entry, "name", required=True, table="stages", index=i)
        if not _STAGE_RE.match(name) or name in {s.name for s in stages}:
            raise ctx.fail(f"{name!r} is not a new stage name (lower case, a letter first)",
                           "name", table="stages", index=i)
        parent = get_str(ctx, entry, "parent", default="", table="stages", index=i) or None
        if parent is not None and not ref_re.match(parent):
            raise ctx.fail(f"{parent!r} is not an image name or reference", "parent",
                           table="stages", index=i)
        install = get_str_list(ctx, entry, "install", table="stages", index=i)
        for pkg in install:
            if not package_re.match(pkg):
                raise ctx.fail(f"{pkg!r} is not a Debian package name", "install",
                               table="stages", index=i)
        run = get_str_list(ctx, entry, "run", table="stages", index=i)
        stages.append(Stage(name, parent, install, _inputs(ctx, entry, "stages", i), run))
    return tuple(stages)


def parse_artifacts(ctx: Ctx, data: dict[str, Any], stages: tuple[Stage, ...],
                    user: str | None) -> tuple[Artifact, ...]:
    names = {s.name for s in stages}
    artifacts = []
    for i, entry in enumerate(get_tables(ctx, data, "artifacts")):
        if "mode" in entry:
            # the classic builder has no COPY --chmod: a mode here would be silently dropped
            raise ctx.fail("an artifact keeps the mode it has in its stage: set it there "
                           "(chmod in the stage's run)", "mode", table="artifacts", index=i)
        check_keys(ctx, entry, _ARTIFACT_KEYS, "artifacts", i)
        stage = get_str(ctx, entry, "stage", required=True, table="artifacts", index=i)
        if stage not in names:
            raise ctx.fail(f"no stage named {stage!r}{did_you_mean(stage, names)}", "stage",
                           table="artifacts", index=i)
        src = get_str(ctx, entry, "src", required=True, table="artifacts", index=i)
        dest = get_str(ctx, entry, "dest", required=True, table="artifacts", index=i)
        for key, path in (("src", src), ("dest", dest)):
            if not path.startswith("/") or ".." in path.split("/"):
                raise ctx.fail("must be an absolute path without '..'", key, table="artifacts",
                               index=i)
        owner = get_str(ctx, entry, "owner", default="root", table="artifacts", index=i)
        if owner not in ("root", user):
            raise ctx.fail('must be "root" or the name in [user]', "owner", table="artifacts",
                           index=i)
        artifacts.append(Artifact(stage, src, dest, owner))
    return tuple(artifacts)


def _inputs(ctx: Ctx, entry: dict[str, Any], table: str, index: int) -> tuple[StepInput, ...]:
    raw = entry.get("inputs", {})
    if not isinstance(raw, dict):
        raise ctx.fail(f'must be a table of "file" = "/path/in/image", not {type_name(raw)}',
                       "inputs", table=table, index=index)
    out = []
    for src, dest in raw.items():
        path = ctx.path.parent / src
        if src.startswith("/") or ".." in Path(src).parts or not path.is_file():
            raise ctx.fail(f"{src!r} is not a file of the image directory", "inputs",
                           table=table, index=index)
        if not isinstance(dest, str) or not dest.startswith("/") or ".." in dest.split("/"):
            raise ctx.fail(f"{src!r} must map to an absolute path in the image", "inputs",
                           table=table, index=index)
        out.append(StepInput(path, dest))
    return tuple(out)
