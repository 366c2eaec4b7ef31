"""Layer rules for any Dockerfile: what makes its image bigger or its cache weaker than needed.

Parsed with dockerfile-parse; every finding has a line, a rule id and a one-line fix. The rules:

| id | name | what |
|---|---|---|
| LK001 | merge-runs | consecutive RUNs (each is a layer; merge them with `&&`) |
| LK002 | apt-lists | `apt-get update` without removing /var/lib/apt/lists in the same RUN |
| LK003 | apt-cache | `apt-get install` without `apt-get clean` or removing /var/cache/apt |
| LK004 | no-install-recommends | `apt-get install` without `--no-install-recommends` |
| LK005 | pip-cache | `pip install` without `--no-cache-dir` (or `PIP_NO_CACHE_DIR`) |
| LK006 | later-change | a path made in one layer is removed, chmod-ed or chown-ed by a later RUN |
| LK007 | cache-order | source copied before dependencies are installed |

Each stage is checked on its own. A stage that does not ship (a builder whose artefacts are
copied out, and not the base of the final stage) gets only LK007: its layers never reach the
image. A RUN's cache mounts (`--mount=type=cache,target=...`) keep what they cover out of the
layer, so the cache rules skip those paths. `LintReport.steps` lists the last stage's
instructions after FROM, which `analyze` matches with the image history to attach findings.
A file with no FROM is not a Dockerfile and is refused.
"""

from __future__ import annotations

import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from dockerfile_parse import DockerfileParser

from layerkit.errors import NotFound, UsageError

__all__ = ["RULES", "Finding", "LintReport", "Step", "lint_file", "lint_text"]

RULES: dict[str, tuple[str, str]] = {
    "LK001": ("merge-runs", "merge with the previous RUN using && (one layer instead of two)"),
    "LK002": ("apt-lists", "end this RUN with `rm -rf /var/lib/apt/lists/*`"),
    "LK003": ("apt-cache", "end this RUN with `apt-get clean` (or rm -rf /var/cache/apt/*)"),
    "LK004": ("no-install-recommends", "add --no-install-recommends to apt-get install"),
    "LK005": ("pip-cache", "add --no-cache-dir to pip install (or ENV PIP_NO_CACHE_DIR=1)"),
    "LK006": ("later-change", "create the file with its final content, mode and owner in the "
              "step that makes it (COPY --chown, or one RUN; COPY --chmod needs BuildKit)"),
    "LK007": ("cache-order", "copy only the dependency manifests, install, then copy the source"),
}
_APT_INSTALL = re.compile(r"\bapt(-get)?\s+(-\S+\s+)*install\b")
_APT_UPDATE = re.compile(r"\bapt(-get)?\s+(-\S+\s+)*update\b")
_PIP_INSTALL = re.compile(r"\bpip[0-9.]*\s+(-\S+\s+)*install\b")
_DEPS_INSTALL = re.compile(r"\b(pip[0-9.]*\s+install\s+.*-r\b|npm\s+(ci|install)"
                           r"|yarn(\s+install)?\b|go\s+mod\s+download|bundle\s+install|poetry\s+install"
                           r"|composer\s+install|apt(-get)?\s+install)")
_WHOLE_CONTEXT = re.compile(r"^(\S+\s+)*\.{1,2}/?\s+\S+$")


@dataclass(frozen=True)
class Step:
    line: int             # 1-based line of the instruction
    instruction: str      # RUN, COPY, ENV, ...
    value: str


@dataclass(frozen=True)
class Finding:
    line: int
    rule: str             # "LK001"
    name: str             # "merge-runs"
    message: str
    fix: str
    step: int | None      # index into LintReport.steps (last stage), None in earlier stages


@dataclass(frozen=True)
class LintReport:
    path: str
    findings: tuple[Finding, ...]
    steps: tuple[Step, ...]


_ONLY_IN_SHIPPED = {"LK001", "LK002", "LK003", "LK004", "LK005", "LK006"}
_MOUNT_COVERS = {  # rule -> paths whose cache mount keeps its bytes out of the layer
    "LK002": ("/var/lib/apt", "/var/lib/apt/lists"),
    "LK003": ("/var/cache/apt", "/var/cache/apt/archives"),
    "LK005": ("/root/.cache", "/root/.cache/pip"),
}


def lint_file(path: Path) -> LintReport:
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a Dockerfile",
                         hint=f"give the file: layerkit lint {path / 'Dockerfile'}") from None
    except FileNotFoundError:
        raise NotFound(f"no Dockerfile at {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a Dockerfile (not text)") from None
    return lint_text(text, str(path))


def lint_text(text: str, path: str = "Dockerfile") -> LintReport:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[list[Step]] = [[]]
    bases: list[str] = []     # what each stage's FROM names
    names: list[str] = []     # each stage's alias ("" if none)
    for item in parser.structure:
        kind = item["instruction"].upper()
        if kind == "FROM":
            words = item["value"].split()
            words = [w for w in words if not w.startswith("--")]
            bases.append(words[0].lower() if words else "")
            names.append(words[2].lower() if len(words) == 3 and words[1].lower() == "as"
                         else "")
            stages.append([])
        elif kind not in ("COMMENT", "ARG") or bases:
            if not bases and kind != "COMMENT":
                raise UsageError(f"{path}: not a Dockerfile (line {item['startline'] + 1} "
                                 f"comes before any FROM)")
            stages[-1].append(Step(item["startline"] + 1, kind, item["value"]))
    if not bases:
        raise UsageError(f"{path}: not a Dockerfile (no FROM instruction)")
    shipped = _shipped(bases, names)
    findings: list[Finding] = []
    for number, stage in enumerate(stages[1:]):
        last = number == len(bases) - 1
        found = _stage_findings(stage, last)
        findings.extend(f for f in found if number in shipped or f.rule not in _ONLY_IN_SHIPPED)
    return LintReport(path, tuple(sorted(findings, key=lambda f: (f.line, f.rule))),
                      tuple(stages[-1]))


def _shipped(bases: list[str], names: list[str]) -> set[int]:
    """The stages whose layers the final image holds: the last and those it is built FROM."""
    shipped, stage = set(), len(bases) - 1
    while stage >= 0 and stage not in shipped:
        shipped.add(stage)
        base = bases[stage]
        earlier = [i for i in range(stage) if names[i] == base or str(i) == base]
        stage = earlier[-1] if earlier else -1
    return shipped


def _finding(rule: str, step: Step, index: int, last: bool, message: str) -> Finding:
    name, fix = RULES[rule]
    return Finding(step.line, rule, name, message, fix, index if last else None)


def _stage_findings(stage: list[Step], last: bool) -> list[Finding]:
    found: list[Finding] = []
    created: dict[str, int] = {}      # path -> line of the step that created it
    pip_env = False
    copied_source: Step | None = None
    for index, step in enumerate(stage):
        if step.instruction == "ENV" and "PIP_NO_CACHE_DIR" in step.value:
            pip_env = True
        if step.instruction in ("COPY", "ADD"):
            copied_source = copied_source or (step if _WHOLE_CONTEXT.match(step.value) else None)
            for target in _copy_targets(step.value):
                created[target] = step.line
            continue
        if step.instruction != "RUN":
            continue
        prev = stage[index - 1] if index else None
        if prev is not None and prev.instruction == "RUN":
            found.append(_finding("LK001", step, index, last,
                                  f"RUN right after the RUN on line {prev.line}"))
        mounts = _cache_mounts(step.value)
        found.extend(_finding(rule, step, index, last, message)
                     for rule, message in _run_rules(step.value, pip_env)
                     if not any(m in _MOUNT_COVERS.get(rule, ()) for m in mounts))
        found.extend(_finding("LK006", step, index, last, message)
                     for message in _later_changes(step.value, created))
        if copied_source is not None and _DEPS_INSTALL.search(step.value):
            found.append(_finding("LK007", copied_source, stage.index(copied_source), last,
                                  f"the whole context is copied before the install on line "
                                  f"{step.line}: any source edit re-runs it"))
            copied_source = None
        for target in _run_targets(step.value):
            created.setdefault(target, step.line)
    return found


def _run_rules(command: str, pip_env: bool) -> list[tuple[str, str]]:
    rules = []
    if _APT_UPDATE.search(command) and not re.search(r"rm\s+.*/var/lib/apt/lists", command):
        rules.append(("LK002", "apt-get update leaves /var/lib/apt/lists in this layer"))
    if _APT_INSTALL.search(command):
        if not re.search(r"apt(-get)?\s+clean|rm\s+.*/var/cache/apt", command):
            rules.append(("LK003", "apt-get install leaves /var/cache/apt in this layer"))
        if "--no-install-recommends" not in command and "Install-Recommends" not in command:
            rules.append(("LK004", "apt-get install also installs recommended packages"))
    if _PIP_INSTALL.search(command) and "--no-cache-dir" not in command and not pip_env:
        rules.append(("LK005", "pip install keeps its download cache in this layer"))
    return rules


def _cache_mounts(command: str) -> list[str]:
    """The targets of a RUN's `--mount=type=cache,...` flags (at the start of its value)."""
    targets = []
    for word in command.split():
        if not word.startswith("--"):
            break
        if word.startswith("--mount="):
            fields = dict(f.partition("=")[::2] for f in word[len("--mount="):].split(","))
            target = fields.get("target") or fields.get("dst") or fields.get("destination")
            if fields.get("type") == "cache" and target:
                targets.append(target.rstrip("/"))
    return targets


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=False)
    except ValueError:
        return command.split()


def _copy_targets(value: str) -> list[str]:
    words = [w for w in _words(value) if not w.startswith("--")]
    return [words[-1].rstrip("/")] if len(words) >= 2 and words[-1].startswith("/") else []


_CREATORS = {"touch", "mkdir", "cp", "mv", "ln", "install"}


def _run_targets(command: str) -> list[str]:
    """Absolute paths a RUN clearly creates: redirections, -o/-O outputs, touch/mkdir/cp args."""
    words = _words(command)
    targets = []
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word in (">", ">>", "-o", "-O", "--output") and nxt.startswith("/"):
            targets.append(nxt)
        elif word.startswith(">") and word.lstrip(">").startswith("/"):
            targets.append(word.lstrip(">"))
    for segment in _segments(words):
        if segment and segment[0] in _CREATORS:
            args = [w for w in segment[1:] if w.startswith("/")]
            targets.extend(args if segment[0] in ("touch", "mkdir") else args[-1:])
    return [t.rstrip("/") for t in targets if t.rstrip("/")]


def _segments(words: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", "||", ";", "|") or word.endswith(";"):
            if word.endswith(";") and word != ";":
                segments[-1].append(word[:-1])
            segments.append([])
        else:
            segments[-1].append(word)
    return segments


def _later_changes(command: str, created: dict[str, int]) -> list[str]:
    messages = []
    for segment in _segments(_words(command)):
        if not segment or segment[0] not in ("rm", "chmod", "chown", "chgrp"):
            continue
        for arg in (w for w in segment[1:] if w.startswith("/")):
            path = arg.rstrip("/*") or arg
            for made, line in created.items():
                if made == path or made.startswith(path + "/") or path.startswith(made + "/"):
                    messages.append(f"{segment[0]} {arg} changes what line {line} created: "
                                    "the old bytes stay in that layer")
                    break
    return messages
