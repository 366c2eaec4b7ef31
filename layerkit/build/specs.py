"""Image specs: `images/<name>/image.toml` into frozen dataclasses.

Every validation error names the file, the key and (where the key is in the file) its line.
No Docker calls here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layerkit.build.specfields import (
    Ctx,
    check_keys,
    did_you_mean,
    get_bool,
    get_str,
    get_str_list,
    get_tables,
    locate,
    type_name,
)
from layerkit.build.steps import (
    Artifact,
    Stage,
    Step,
    parse_args,
    parse_artifacts,
    parse_stages,
    parse_steps,
)
from layerkit.errors import SpecError, UsageError

__all__ = ["Artifact", "FileSpec", "ImageSpec", "PackageSet", "SpecSet", "Stage", "Step",
           "UserSpec", "build_order", "load", "load_all", "load_set", "locate", "with_base"]

PKG_PREFIX = "pkg:"  # a file source inside the installed layerkit package, e.g. pkg:agent/
SERVICES_DIR = "/etc/services.d"  # the scan directory of s6-svscan (PID 1) in every image

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DEB_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_TOP_KEYS = {"description", "parent", "bootstrap", "services", "ports", "cmd", "stop_signal",
             "packages", "user", "files", "env", "labels", "args", "steps", "stages",
             "artifacts"}
_FILE_KEYS = {"src", "dest", "mode", "owner", "changes", "exclude"}
_PKG_KEYS = {"install", "purpose"}
_USER_KEYS = {"name", "uid", "home"}


@dataclass(frozen=True)
class PackageSet:
    install: tuple[str, ...]
    purpose: str


@dataclass(frozen=True)
class UserSpec:
    name: str
    uid: int
    home: str


@dataclass(frozen=True)
class FileSpec:
    src: str          # as written in the spec
    path: Path        # resolved on the host
    dest: str         # absolute path in the image
    mode: int | None  # None: keep the mode from the source tree
    owner: str        # "root" or the spec's user
    often: bool       # changes often (app source): copied last
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class ImageSpec:
    name: str
    spec_path: Path
    directory: Path
    description: str
    parent: str               # a layerkit image name or an image reference
    bootstrap: bool           # parent may be built offline when it cannot be had
    packages: tuple[PackageSet, ...]
    user: UserSpec | None
    files: tuple[FileSpec, ...]
    services: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    ports: tuple[int, ...]
    labels: tuple[tuple[str, str], ...]
    cmd: tuple[str, ...]
    stop_signal: str | None
    build_args: tuple[tuple[str, str], ...] = ()
    steps: tuple[Step, ...] = ()
    stages: tuple[Stage, ...] = ()
    artifacts: tuple[Artifact, ...] = ()


@dataclass(frozen=True)
class SpecSet:
    """The specs of a directory: those that load, and the error of each that does not."""

    specs: dict[str, ImageSpec]
    broken: dict[str, SpecError]


def load_all(images_dir: Path, package_dir: Path) -> dict[str, ImageSpec]:
    """Every spec under `images_dir`, validated; the first broken one raises."""
    found = load_set(images_dir, package_dir)
    if found.broken:
        raise next(iter(found.broken.values()))
    return found.specs


def load_set(images_dir: Path, package_dir: Path) -> SpecSet:
    """Every spec under `images_dir`: one broken spec (or a cycle of parents) fails itself
    and the specs that stand on it, never the others."""
    if not images_dir.is_dir():
        raise SpecError(str(images_dir), "no such directory of image specs")
    paths = sorted(images_dir.glob("*/image.toml"))
    if not paths:
        raise SpecError(str(images_dir), "no image specs (*/image.toml) found")
    specs: dict[str, ImageSpec] = {}
    broken: dict[str, SpecError] = {}
    for path in paths:
        try:
            specs[path.parent.name] = load(path, package_dir)
        except SpecError as exc:
            broken[path.parent.name] = exc
    for name in list(specs):
        error = _lineage_error(specs[name], specs, broken)
        if error is not None:
            broken[name] = error
    return SpecSet({n: s for n, s in specs.items() if n not in broken}, broken)


def _lineage_error(spec: ImageSpec, specs: dict[str, ImageSpec],
                   broken: dict[str, SpecError]) -> SpecError | None:
    """Why `spec` cannot be built because of its parents: a cycle, a broken parent, or a
    parent that looks like a misspelt spec name."""
    ctx = Ctx(spec.spec_path, spec.spec_path.read_text(encoding="utf-8"))
    seen = [spec.name]
    parent = spec.parent
    while parent in specs:
        if parent in seen:
            return ctx.fail(f"parents form a cycle: {' -> '.join([*seen, parent])}", "parent")
        seen.append(parent)
        parent = specs[parent].parent
    if parent in broken:
        return ctx.fail(f"stands on {parent!r}, whose spec is broken", "parent")
    if len(seen) == 1:
        error = _misspelt(ctx, parent, specs, broken, "parent")
        if error is not None:
            return error
    for i, stage in enumerate(spec.stages):
        if stage.parent in broken:
            return ctx.fail(f"stands on {stage.parent!r}, whose spec is broken", "parent",
                            table="stages", index=i)
        if stage.parent is not None and stage.parent not in specs:
            error = _misspelt(ctx, stage.parent, specs, broken, "parent", table="stages",
                              index=i)
            if error is not None:
                return error
    return None


def _misspelt(ctx: Ctx, parent: str, specs: dict[str, ImageSpec],
              broken: dict[str, SpecError], key: str, *, table: str | None = None,
              index: int | None = None) -> SpecError | None:
    """A parent without a tag or registry that is one letter off a spec's name."""
    if ":" in parent or "/" in parent:
        return None
    hint = did_you_mean(parent, [*specs, *broken])
    if not hint:
        return None
    return ctx.fail(f"{parent!r} is neither a spec here nor a tagged image reference{hint}",
                    key, table=table, index=index)


def load(path: Path, package_dir: Path) -> ImageSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"not valid TOML: {exc}") from None
    return _parse(Ctx(path, text), data, package_dir)


def _parse(ctx: Ctx, data: dict[str, Any], package_dir: Path) -> ImageSpec:
    check_keys(ctx, data, _TOP_KEYS, None)
    name = ctx.path.parent.name
    if not _NAME_RE.match(name):
        raise SpecError(str(ctx.path), f"image directory name {name!r} is not a valid image name")
    parent = get_str(ctx, data, "parent", required=True)
    if not _REF_RE.match(parent):
        raise ctx.fail(f"{parent!r} is not an image name or reference", "parent")
    user = _user(ctx, data.get("user"))
    stages = parse_stages(ctx, data, _DEB_RE, _REF_RE)
    return ImageSpec(
        name=name,
        spec_path=ctx.path,
        directory=ctx.path.parent,
        description=get_str(ctx, data, "description", default=""),
        parent=parent,
        bootstrap=get_bool(ctx, data, "bootstrap", default=False),
        packages=_packages(ctx, data),
        user=user,
        files=_files(ctx, data, package_dir, user),
        services=_services(ctx, data.get("services", [])),
        env=_mapping(ctx, data, "env", _ENV_RE),
        ports=_ports(ctx, data.get("ports", [])),
        labels=_mapping(ctx, data, "labels", _LABEL_RE),
        cmd=get_str_list(ctx, data, "cmd"),
        stop_signal=get_str(ctx, data, "stop_signal", default="") or None,
        build_args=parse_args(ctx, data),
        steps=parse_steps(ctx, data),
        stages=stages,
        artifacts=parse_artifacts(ctx, data, stages, user.name if user else None),
    )


def _packages(ctx: Ctx, data: dict[str, Any]) -> tuple[PackageSet, ...]:
    sets = []
    for i, entry in enumerate(get_tables(ctx, data, "packages")):
        check_keys(ctx, entry, _PKG_KEYS, "packages", i)
        names = get_str_list(ctx, entry, "install", table="packages", index=i)
        if not names:
            raise ctx.fail("must name at least one package", "install", table="packages", index=i)
        for pkg in names:
            if not _DEB_RE.match(pkg):
                raise ctx.fail(f"{pkg!r} is not a Debian package name", "install",
                               table="packages", index=i)
        purpose = get_str(ctx, entry, "purpose", default="", table="packages", index=i)
        sets.append(PackageSet(tuple(names), purpose))
    return tuple(sets)


def _user(ctx: Ctx, raw: Any) -> UserSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.fail(f"must be a table ([user]), not {type_name(raw)}", "user")
    check_keys(ctx, raw, _USER_KEYS, "user")
    name = get_str(ctx, raw, "name", required=True, table="user")
    if not _USER_RE.match(name) or name == "root":
        raise ctx.fail(f"{name!r} is not a valid non-root user name", "name", table="user")
    uid = raw.get("uid", 10001)
    if not isinstance(uid, int) or isinstance(uid, bool) or not 1000 <= uid < 65534:
        raise ctx.fail(f"must be an integer from 1000 to 65533, not {_shown(uid)}", "uid",
                       table="user")
    home = get_str(ctx, raw, "home", default=f"/home/{name}", table="user")
    if not home.startswith("/"):
        raise ctx.fail("must be an absolute path", "home", table="user")
    return UserSpec(name, uid, home)


def _files(ctx: Ctx, data: dict[str, Any], package_dir: Path,
           user: UserSpec | None) -> tuple[FileSpec, ...]:
    files = []
    for i, entry in enumerate(get_tables(ctx, data, "files")):
        check_keys(ctx, entry, _FILE_KEYS, "files", i)
        src = get_str(ctx, entry, "src", required=True, table="files", index=i)
        dest = get_str(ctx, entry, "dest", required=True, table="files", index=i)
        if not dest.startswith("/") or ".." in dest.split("/"):
            raise ctx.fail("must be an absolute path without '..'", "dest", table="files", index=i)
        path = _resolve_src(ctx, src, package_dir, i)
        if isinstance(entry.get("mode"), int) and not isinstance(entry.get("mode"), bool):
            raise ctx.fail(f'must be a string like "0755", not an integer '
                           f'(write "{entry["mode"]:04o}")', "mode", table="files", index=i)
        mode_text = get_str(ctx, entry, "mode", default="", table="files", index=i)
        mode = None
        if mode_text:
            if not re.fullmatch(r"0?[0-7]{3,4}", mode_text):
                raise ctx.fail(f"{mode_text!r} is not an octal mode like \"0644\"", "mode",
                               table="files", index=i)
            mode = int(mode_text, 8)
        owner = get_str(ctx, entry, "owner", default="root", table="files", index=i)
        if owner != "root" and (user is None or owner != user.name):
            raise ctx.fail('must be "root" or the name in [user]', "owner", table="files",
                           index=i)
        changes = get_str(ctx, entry, "changes", default="rarely", table="files", index=i)
        if changes not in ("rarely", "often"):
            raise ctx.fail("must be \"rarely\" or \"often\"", "changes", table="files", index=i)
        exclude = get_str_list(ctx, entry, "exclude", table="files", index=i)
        files.append(FileSpec(src, path, dest, mode, owner, changes == "often", exclude))
    return tuple(files)


def _resolve_src(ctx: Ctx, src: str, package_dir: Path, index: int) -> Path:
    if src.startswith(PKG_PREFIX):
        root, rel = package_dir, src[len(PKG_PREFIX):]
    else:
        root, rel = ctx.path.parent, src
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise ctx.fail("must be a relative path inside the image directory (or pkg:...)", "src",
                       table="files", index=index)
    path = (root / rel) if rel else root
    if not path.exists():
        raise ctx.fail(f"{path} does not exist", "src", table="files", index=index)
    return path


def _services(ctx: Ctx, raw: Any) -> tuple[str, ...]:
    names = get_str_list(ctx, {"services": raw}, "services")
    for name in names:
        run = ctx.path.parent / "services" / name / "run"
        if not _NAME_RE.match(name):
            raise ctx.fail(f"{name!r} is not a valid service name", "services")
        if not run.is_file():
            raise ctx.fail(f"service {name!r} has no run script at {run}", "services")
    return names


def _mapping(ctx: Ctx, data: dict[str, Any], key: str,
             key_re: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise ctx.fail(f"must be a table ([{key}]), not {type_name(raw)}", key)
    out = []
    for name, value in raw.items():
        if not key_re.match(name):
            raise ctx.fail(f"{name!r} is not a valid {key} name", name, table=key)
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ctx.fail(f"must be a string or an integer, not {type_name(value)}", name,
                           table=key)
        out.append((name, str(value)))
    return tuple(out)


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, int | str) and not isinstance(value, bool) else (
        type_name(value))


def _ports(ctx: Ctx, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in raw):
        raise ctx.fail("must be a list of port numbers (1-65535)", "ports")
    return tuple(raw)


def with_base(specs: dict[str, ImageSpec], base: str | None) -> dict[str, ImageSpec]:
    """Specs with `base` as the parent of every spec that bootstraps its parent."""
    if not base:
        return specs
    if not _REF_RE.match(base):
        raise UsageError(f"--base: {base!r} is not an image reference")
    return {name: replace(spec, parent=base) if spec.bootstrap else spec
            for name, spec in specs.items()}


def build_order(specs: dict[str, ImageSpec], names: list[str] | None = None) -> list[ImageSpec]:
    """Specs to build for `names` (all when None), each after the layerkit image it stands on."""
    wanted = names if names else list(specs)
    order: list[ImageSpec] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name not in specs:
            raise UsageError(f"no image spec named {name!r}{did_you_mean(name, specs)} "
                             f"(have: {', '.join(sorted(specs))})")
        if name in visiting:
            raise UsageError(f"image specs stand on each other in a cycle through {name!r}")
        visiting.add(name)
        spec = specs[name]
        for parent in (spec.parent, *(s.parent for s in spec.stages if s.parent)):
            if parent in specs:
                visit(parent)
        visiting.discard(name)
        if spec not in order:
            order.append(spec)

    for name in wanted:
        visit(name)
    return order
