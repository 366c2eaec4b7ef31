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

from layerkit.errors import SpecError, UsageError

PKG_PREFIX = "pkg:"  # a file source inside the installed layerkit package, e.g. pkg:agent/
SERVICES_DIR = "/etc/services.d"  # the scan directory of s6-svscan (PID 1) in every image

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DEB_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_TOP_KEYS = {"description", "parent", "bootstrap", "services", "ports", "cmd", "stop_signal",
             "packages", "user", "files", "env", "labels"}
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


@dataclass(frozen=True)
class _Ctx:
    path: Path
    text: str

    def fail(self, message: str, key: str, *, table: str | None = None,
             index: int | None = None) -> SpecError:
        shown = key if table is None else (
            f"{table}[{index}].{key}" if index is not None else f"{table}.{key}")
        return SpecError(str(self.path), message, key=shown,
                         line=locate(self.text, key, table=table, index=index))


def locate(text: str, key: str, *, table: str | None = None,
           index: int | None = None) -> int | None:
    """Line number (1-based) of `key` in `[table]` / the `index`-th `[[table]]` / top level."""
    current: str | None = None
    seen: dict[str, int] = {}
    key_re = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
    for number, line in enumerate(text.splitlines(), start=1):
        header = header_re.match(line)
        if header:
            current = header.group(2)
            if header.group(1) == "[[":
                seen[current] = seen.get(current, -1) + 1
            continue
        if current != table:
            continue
        if index is not None and current is not None and seen.get(current, -1) != index:
            continue
        if key_re.match(line):
            return number
    if table is not None:  # the key is missing: point at the table's header
        count = -1
        for number, line in enumerate(text.splitlines(), start=1):
            header = header_re.match(line)
            if header and header.group(2) == table:
                count += 1
                if index is None or count == index:
                    return number
    return None


def load_all(images_dir: Path, package_dir: Path) -> dict[str, ImageSpec]:
    """Every spec under `images_dir`, validated, with parents among them checked for cycles."""
    if not images_dir.is_dir():
        raise SpecError(str(images_dir), "no such directory of image specs")
    specs = {p.parent.name: load(p, package_dir) for p in sorted(images_dir.glob("*/image.toml"))}
    if not specs:
        raise SpecError(str(images_dir), "no image specs (*/image.toml) found")
    for spec in specs.values():
        seen = [spec.name]
        parent = spec.parent
        while parent in specs:
            if parent in seen:
                ctx = _Ctx(spec.spec_path, spec.spec_path.read_text())
                raise ctx.fail(f"parents form a cycle: {' -> '.join([*seen, parent])}", "parent")
            seen.append(parent)
            parent = specs[parent].parent
    return specs


def load(path: Path, package_dir: Path) -> ImageSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"not valid TOML: {exc}") from None
    return _parse(_Ctx(path, text), data, package_dir)


def _parse(ctx: _Ctx, data: dict[str, Any], package_dir: Path) -> ImageSpec:
    _unknown(ctx, data, _TOP_KEYS, None)
    name = ctx.path.parent.name
    if not _NAME_RE.match(name):
        raise SpecError(str(ctx.path), f"image directory name {name!r} is not a valid image name")
    parent = _str(ctx, data, "parent", required=True)
    if not _REF_RE.match(parent):
        raise ctx.fail(f"{parent!r} is not an image name or reference", "parent")
    user = _user(ctx, data.get("user"))
    return ImageSpec(
        name=name,
        spec_path=ctx.path,
        directory=ctx.path.parent,
        description=_str(ctx, data, "description", default=""),
        parent=parent,
        bootstrap=_bool(ctx, data, "bootstrap", default=False),
        packages=_packages(ctx, data.get("packages", [])),
        user=user,
        files=_files(ctx, data.get("files", []), package_dir, user),
        services=_services(ctx, data.get("services", [])),
        env=_mapping(ctx, data, "env", _ENV_RE),
        ports=_ports(ctx, data.get("ports", [])),
        labels=_mapping(ctx, data, "labels", _LABEL_RE),
        cmd=_str_list(ctx, data, "cmd"),
        stop_signal=_str(ctx, data, "stop_signal", default="") or None,
    )


def _unknown(ctx: _Ctx, data: dict[str, Any], allowed: set[str], table: str | None,
             index: int | None = None) -> None:
    for key in data:
        if key not in allowed:
            raise ctx.fail(f"unknown key (allowed: {', '.join(sorted(allowed))})", key,
                           table=table, index=index)


def _str(ctx: _Ctx, data: dict[str, Any], key: str, *, required: bool = False,
         default: str = "", table: str | None = None, index: int | None = None) -> str:
    if key not in data:
        if required:
            raise ctx.fail("is required", key, table=table, index=index)
        return default
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail("must be a non-empty string", key, table=table, index=index)
    return value


def _bool(ctx: _Ctx, data: dict[str, Any], key: str, *, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ctx.fail("must be true or false", key)
    return value


def _str_list(ctx: _Ctx, data: dict[str, Any], key: str, *, table: str | None = None,
              index: int | None = None) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ctx.fail("must be a list of non-empty strings", key, table=table, index=index)
    return tuple(value)


def _packages(ctx: _Ctx, raw: Any) -> tuple[PackageSet, ...]:
    if not isinstance(raw, list):
        raise ctx.fail("must be an array of tables ([[packages]])", "packages")
    sets = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ctx.fail("must be a table", "packages")
        _unknown(ctx, entry, _PKG_KEYS, "packages", i)
        names = _str_list(ctx, entry, "install", table="packages", index=i)
        if not names:
            raise ctx.fail("must name at least one package", "install", table="packages", index=i)
        for pkg in names:
            if not _DEB_RE.match(pkg):
                raise ctx.fail(f"{pkg!r} is not a Debian package name", "install",
                               table="packages", index=i)
        purpose = _str(ctx, entry, "purpose", default="", table="packages", index=i)
        sets.append(PackageSet(tuple(names), purpose))
    return tuple(sets)


def _user(ctx: _Ctx, raw: Any) -> UserSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.fail("must be a table ([user])", "user")
    _unknown(ctx, raw, _USER_KEYS, "user")
    name = _str(ctx, raw, "name", required=True, table="user")
    if not _USER_RE.match(name) or name == "root":
        raise ctx.fail(f"{name!r} is not a valid non-root user name", "name", table="user")
    uid = raw.get("uid", 10001)
    if not isinstance(uid, int) or isinstance(uid, bool) or not 1000 <= uid < 65534:
        raise ctx.fail("must be an integer from 1000 to 65533", "uid", table="user")
    home = _str(ctx, raw, "home", default=f"/home/{name}", table="user")
    if not home.startswith("/"):
        raise ctx.fail("must be an absolute path", "home", table="user")
    return UserSpec(name, uid, home)


def _files(ctx: _Ctx, raw: Any, package_dir: Path,
           user: UserSpec | None) -> tuple[FileSpec, ...]:
    if not isinstance(raw, list):
        raise ctx.fail("must be an array of tables ([[files]])", "files")
    files = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ctx.fail("must be a table", "files")
        _unknown(ctx, entry, _FILE_KEYS, "files", i)
        src = _str(ctx, entry, "src", required=True, table="files", index=i)
        dest = _str(ctx, entry, "dest", required=True, table="files", index=i)
        if not dest.startswith("/") or ".." in dest.split("/"):
            raise ctx.fail("must be an absolute path without '..'", "dest", table="files", index=i)
        path = _resolve_src(ctx, src, package_dir, i)
        mode_text = _str(ctx, entry, "mode", default="", table="files", index=i)
        mode = None
        if mode_text:
            if not re.fullmatch(r"0?[0-7]{3,4}", mode_text):
                raise ctx.fail(f"{mode_text!r} is not an octal mode like \"0644\"", "mode",
                               table="files", index=i)
            mode = int(mode_text, 8)
        owner = _str(ctx, entry, "owner", default="root", table="files", index=i)
        if owner != "root" and (user is None or owner != user.name):
            raise ctx.fail('must be "root" or the name in [user]', "owner", table="files",
                           index=i)
        changes = _str(ctx, entry, "changes", default="rarely", table="files", index=i)
        if changes not in ("rarely", "often"):
            raise ctx.fail("must be \"rarely\" or \"often\"", "changes", table="files", index=i)
        exclude = _str_list(ctx, entry, "exclude", table="files", index=i)
        files.append(FileSpec(src, path, dest, mode, owner, changes == "often", exclude))
    return tuple(files)


def _resolve_src(ctx: _Ctx, src: str, package_dir: Path, index: int) -> Path:
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


def _services(ctx: _Ctx, raw: Any) -> tuple[str, ...]:
    names = _str_list(ctx, {"services": raw}, "services")
    for name in names:
        run = ctx.path.parent / "services" / name / "run"
        if not _NAME_RE.match(name):
            raise ctx.fail(f"{name!r} is not a valid service name", "services")
        if not run.is_file():
            raise ctx.fail(f"service {name!r} has no run script at {run}", "services")
    return names


def _mapping(ctx: _Ctx, data: dict[str, Any], key: str,
             key_re: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise ctx.fail(f"must be a table ([{key}])", key)
    out = []
    for name, value in raw.items():
        if not key_re.match(name):
            raise ctx.fail(f"{name!r} is not a valid {key} name", name, table=key)
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ctx.fail("must be a string or an integer", name, table=key)
        out.append((name, str(value)))
    return tuple(out)


def _ports(ctx: _Ctx, raw: Any) -> tuple[int, ...]:
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

    def visit(name: str) -> None:
        if name not in specs:
            raise UsageError(f"no image spec named {name!r} (have: {', '.join(sorted(specs))})")
        spec = specs[name]
        if spec.parent in specs:
            visit(spec.parent)
        if spec not in order:
            order.append(spec)

    for name in wanted:
        visit(name)
    return order
