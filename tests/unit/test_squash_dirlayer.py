"""squash.dirlayer's ustar headers: byte for byte what `tarfile` writes for the same member,
and None (tarfile's PAX then) where ustar cannot hold the entry."""

from __future__ import annotations

import tarfile

import pytest

from layerkit.image.archive import Entry
from layerkit.squash.dirlayer import _TYPES, _ustar

LONG = "usr/" + "d" * 120 + "/" + "f" * 90


@pytest.mark.parametrize("entry", [
    Entry("etc/hosts", "file", 1234, 0o644, 0, 0, "", 1_700_000_000),
    Entry("etc", "dir", 0, 0o2755, 1, 2, "", 1_700_000_001),
    Entry("bin", "symlink", 0, 0o777, 0, 0, "usr/bin", 5),
    Entry("usr/bin/perl5", "hardlink", 0, 0o755, 0, 0, "usr/bin/perl", 7),
    Entry("tmp/fifo", "fifo", 0, 0o600, 1000, 1000, "", 0),
    Entry("dev/null", "char", 0, 0o666, 0, 0, "", 9),
    Entry(LONG, "file", 3, 0o4755, 65534, 65534, "", 11),
    Entry("srv/naïve-ünïcode", "file", 1, 0o644, 0, 0, "", 12),
])
def test_ustar_headers_are_tarfiles(entry: Entry) -> None:
    name = entry.path + "/" if entry.kind == "dir" else entry.path
    size = entry.size if entry.kind == "file" else 0
    major, minor = (1, 3) if entry.kind == "char" else (0, 0)
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = _TYPES[entry.kind], size, entry.linkname
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    info.devmajor, info.devminor = major, minor
    assert _ustar(name, entry, size, major, minor) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8",
                                                                 "surrogateescape")


@pytest.mark.parametrize("entry", [
    Entry("a/" + "x" * 160, "file", 0, 0o644, 0, 0),           # no cut leaves <= 100 bytes
    Entry("x" * 101, "file", 0, 0o644, 0, 0),                   # no slash to cut at
    Entry("l", "symlink", 0, 0o777, 0, 0, "t" * 101),           # a long link target
    Entry("big", "file", 8 ** 11, 0o644, 0, 0),                 # 8 GiB and more
    Entry("id", "file", 0, 0o644, 3_000_000, 0),                # a large uid
    Entry("old", "file", 0, 0o644, 0, 0, "", -1),               # before 1970
])
def test_what_ustar_cannot_hold_is_left_to_pax(entry: Entry) -> None:
    assert _ustar(entry.path, entry, entry.size, 0, 0) is None
