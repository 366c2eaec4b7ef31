"""The base root filesystem: the configured base image, or a slim Debian built offline.

Order of preference: the image is already in the engine; it can be pulled; a root filesystem
built here with mmdebstrap (Debian's tool, about 30 s) and imported. The offline path is the
one that works on machines without a registry, so it is the default that must keep working.

A bootstrap is reproducible: the same suite, mirror content and epoch give the same image ID.
mmdebstrap gets SOURCE_DATE_EPOCH (file times clamped to it, its own logs and caches removed,
the day of /etc/shadow's entries taken from it); the host's name and name server, which it
copies in, are emptied (Docker gives every container its own); and the imported image's config
gets the epoch for `created`, as `build --reproducible` does for the images built on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from layerkit.engine.client import DockerClient
from layerkit.build.reproducible import DEFAULT_EPOCH, rewrite_image
from layerkit.engine.images import find_image, import_rootfs, pull_image, remove_image, tag_image
from layerkit.errors import BootstrapError

ROOTFS_REPO = "layerkit/rootfs"
DEBIAN_SUITES = ("bookworm", "trixie", "bullseye")

# dpkg never writes these (later apt installs in the image honour the same file).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/groff/*",
)

# What the official Debian images configure for apt, in our words: no package caches kept after
# an install or update, compressed lists, no translations, suggests not held.
_APT_RM = ('"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
           '/var/cache/apt/*.bin || true"')
APT_CONF = f"""\
// layerkit: keep container layers free of apt caches.
DPkg::Post-Invoke {{ {_APT_RM}; }};
APT::Update::Post-Invoke {{ {_APT_RM}; }};
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
APT::AutoRemove::SuggestsImportant "false";
APT::Install-Recommends "false";
"""

# The host's name and name server, which mmdebstrap copies in with their host modes, are
# emptied: Docker gives every container its own.
CLEANUP = ("cd \"$1\" && rm -rf var/lib/apt/lists/* var/cache/apt/* var/log/*.log var/log/apt/* "
           "var/cache/ldconfig/aux-cache var/cache/debconf/*-old var/lib/dpkg/*-old tmp/* "
           "root/.cache && : > etc/machine-id && : > etc/hostname && : > etc/resolv.conf "
           "&& chmod 644 etc/hostname etc/resolv.conf")


@dataclass(frozen=True)
class Base:
    ref: str        # what FROM names
    source: str     # "present", "pulled" or "bootstrapped"


def suite_of(ref: str) -> str | None:
    """The Debian suite an image reference stands for (debian:bookworm-slim -> bookworm)."""
    name, _, tag = ref.partition(":")
    if name not in ("debian", "docker.io/library/debian", "library/debian"):
        return None
    suite = tag.split("-", 1)[0] if tag else "bookworm"
    return suite if suite in DEBIAN_SUITES else None


def rootfs_ref(suite: str) -> str:
    return f"{ROOTFS_REPO}:{suite}-slim"


def mmdebstrap_command(suite: str, out: Path, apt_conf: Path) -> list[str]:
    cmd = ["mmdebstrap", "--variant=minbase", "--quiet", "--format=tar",
           "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr"]
    cmd += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    cmd += [f"--customize-hook=upload {apt_conf} /etc/apt/apt.conf.d/docker-clean",
            f"--customize-hook={CLEANUP}", suite, str(out)]
    return cmd


def mmdebstrap_env(environ: Mapping[str, str], epoch: int) -> dict[str, str]:
    """mmdebstrap's environment: ours, with SOURCE_DATE_EPOCH set to `epoch`."""
    return {**environ, "SOURCE_DATE_EPOCH": str(epoch)}


def ensure_base(client: DockerClient, ref: str, *, allow_bootstrap: bool,
                epoch: int = DEFAULT_EPOCH,
                log: Callable[[str], None] = lambda _: None) -> Base:
    """A reference to build FROM that stands for `ref`, bootstrapping offline when needed
    (with `epoch` as its time). A root filesystem already here is used as it is."""
    if find_image(client, ref) is not None:
        return Base(ref, "present")
    suite = suite_of(ref)
    if suite and find_image(client, rootfs_ref(suite)) is not None:
        return Base(rootfs_ref(suite), "bootstrapped")
    log(f"pulling {ref}")
    if pull_image(client, ref) is not None:
        return Base(ref, "pulled")
    if not allow_bootstrap or suite is None:
        raise BootstrapError(f"base image {ref} is not in the engine and cannot be pulled",
                             hint=_missing_base_hint(client, ref))
    log(f"{ref} cannot be pulled: building a slim Debian {suite} root filesystem offline")
    return Base(bootstrap(client, suite, epoch=epoch), "bootstrapped")


def _missing_base_hint(client: DockerClient, ref: str) -> str:
    """A bare name such as "base" is a spec only in the directory of specs being built; from
    another directory (--images) layerkit's image is named in full."""
    full = f"layerkit/{ref}:latest"
    if "/" not in ref and ":" not in ref and find_image(client, full) is not None:
        return (f"{ref!r} is no spec in this directory of specs: name the image in full "
                f'(parent = "{full}")')
    return "pull or load it, or use a debian:<suite> base to bootstrap"


def bootstrap(client: DockerClient, suite: str, ref: str | None = None, *,
              epoch: int = DEFAULT_EPOCH) -> str:
    """Build a slim Debian root filesystem with mmdebstrap and import it as `ref`."""
    if shutil.which("mmdebstrap") is None:
        raise BootstrapError("mmdebstrap is not installed, so no base can be built offline",
                             hint="run `layerkit doctor --fix` (installs it on Debian)")
    ref = ref or rootfs_ref(suite)
    with tempfile.TemporaryDirectory(prefix="layerkit-rootfs-") as tmp:
        out, apt_conf = Path(tmp) / "rootfs.tar", Path(tmp) / "docker-clean"
        apt_conf.write_text(APT_CONF)
        proc = subprocess.run(mmdebstrap_command(suite, out, apt_conf), capture_output=True,
                              text=True, check=False, env=mmdebstrap_env(os.environ, epoch))
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise BootstrapError(f"mmdebstrap failed (exit {proc.returncode}): {tail}")
        _import(client, out, ref, suite, epoch)
    return ref


def _import(client: DockerClient, rootfs: Path, ref: str, suite: str, epoch: int) -> None:
    """`docker import` stamps the image with the time of the import: it is imported under a
    tag of its own, and `ref` names the same image with the epoch as its time."""
    imported = f"{ref}-import"
    import_rootfs(client, str(rootfs), imported, changes=[
        'CMD ["bash"]', f'LABEL org.layerkit.rootfs="debian-{suite}-slim"'])
    try:
        tag_image(client, rewrite_image(client, imported, 1, epoch).image_id, ref)
    finally:
        remove_image(client, imported)
