"""The streaming tar header reader against tars written by Python's tarfile in every format,
and hand-made headers for the corners tarfile does not write."""

from __future__ import annotations

import io
import tarfile

import pytest

from layerkit.image.streams import Bounded, ChunkReader
from layerkit.image.tarstream import BLOCK, BadHeader, Counted, headers, is_header


def _tar(fmt: int, members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _read(data: bytes) -> list[tuple[str, bytes, int, int, int, int, int, str]]:
    return [(h.name, h.type, h.size, h.mode, h.uid, h.gid, h.mtime, h.linkname)
            for h in headers(Counted(io.BytesIO(data)))]


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
          **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _reseal(block: bytearray) -> bytes:
    """Recompute the checksum of a hand-edited header block."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_fields_match_tarfile_in_every_format(fmt: int) -> None:
    long_dir = "d" * 90 + "/" + "e" * 60  # needs the ustar prefix, a GNU long name or pax
    members = [
        (_info("etc/", tarfile.DIRTYPE, mode=0o755, mtime=1_700_000_000), b""),
        (_info(f"{long_dir}/file", size=5, mode=0o640, uid=1000, gid=100, mtime=1), b"hello"),
        (_info("etc/link", tarfile.SYMTYPE, linkname="../" + "t" * 40), b""),
        (_info("etc/after", size=3), b"abc"),
        (_info("etc/hard", tarfile.LNKTYPE, linkname="etc/after"), b""),
    ]
    data = _tar(fmt, members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(i.name.rstrip("/"), i.type, i.size, i.mode, i.uid, i.gid, i.mtime,
                     i.linkname) for i in tar.getmembers()]
    assert [r[0].rstrip("/") for r in _read(data)] == [e[0] for e in expected]
    assert [r[1:] for r in _read(data)] == [e[1:] for e in expected]


def test_pax_overrides_size_ids_and_names() -> None:
    info = _info("p" * 120, size=4, uid=3_000_000_000, gid=7, mtime=5)
    info.pax_headers = {"mtime": "1234.75"}
    data = _tar(tarfile.PAX_FORMAT, [(info, b"data")])
    assert _read(data) == [("p" * 120, b"0", 4, 0o644, 3_000_000_000, 7, 1234, "")]


def test_gnu_base256_numbers() -> None:
    big = 9 * 1024**3  # does not fit the 11 octal digits of the size field
    block = bytearray(_tar(tarfile.GNU_FORMAT, [(_info("f"), b"")])[:BLOCK])
    block[124:136] = b"\x80" + big.to_bytes(11, "big")
    block[108:116] = b"\x80" + (2**40).to_bytes(7, "big")
    data = _reseal(block)
    header = next(headers(Counted(io.BytesIO(data))))
    assert (header.size, header.uid) == (big, 2**40)


def test_gnu_atime_is_not_taken_for_a_name_prefix() -> None:
    """GNU headers keep atime and ctime where ustar keeps the name prefix; only the POSIX
    magic makes those bytes a prefix."""
    block = bytearray(_tar(tarfile.GNU_FORMAT, [(_info("plain"), b"")])[:BLOCK])
    assert block[257:265] == b"ustar  \0"
    block[345:357] = b"14651236000\0"  # an atime, as `tar --atime-preserve` leaves
    assert _read(_reseal(block) + bytes(2 * BLOCK))[0][0] == "plain"
    block[257:265] = b"ustar\x0000"
    assert _read(_reseal(block) + bytes(2 * BLOCK))[0][0] == "14651236000/plain"


def test_old_signed_checksum_is_accepted() -> None:
    block = bytearray(_tar(tarfile.USTAR_FORMAT, [(_info("caf\xe9"), b"")])[:BLOCK])
    block[0:5] = "café".encode("latin-1") + b"\xff"  # bytes above 127
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % signed
    assert is_header(bytes(block))
    assert sum(block) != signed


def test_bad_checksum_is_a_bad_header() -> None:
    block = bytearray(_tar(tarfile.USTAR_FORMAT, [(_info("f"), b"")])[:BLOCK])
    block[0] ^= 1
    assert not is_header(bytes(block))
    with pytest.raises(BadHeader):
        list(headers(Counted(io.BytesIO(bytes(block)))))


def test_member_data_left_unread_is_skipped() -> None:
    data = _tar(tarfile.PAX_FORMAT, [(_info("a", size=1000), b"x" * 1000),
                                     (_info("b", size=1), b"y")])
    stream = Counted(io.BytesIO(data))
    seen = []
    for header in headers(stream):
        seen.append(header.name)
        if header.name == "a":
            assert stream.read_exact(10) == b"x" * 10
    assert seen == ["a", "b"]


def test_cut_header_is_an_eof_error() -> None:
    data = _tar(tarfile.USTAR_FORMAT, [(_info("f"), b"")])
    with pytest.raises(EOFError):
        list(headers(Counted(io.BytesIO(data[:100]))))


@pytest.mark.parametrize("sizes", [[1], [7, 1, 512], [513, 3], [100_000]])
def test_chunk_reader_reads_across_chunks(sizes: list[int]) -> None:
    data = bytes(range(256)) * 800
    cuts, pos = [], 0
    while pos < len(data):  # the data cut into chunks of the given sizes, in turn
        step = sizes[len(cuts) % len(sizes)]
        cuts.append(bytearray(data[pos:pos + step]))
        pos += step
    reader = ChunkReader(iter(cuts))
    got, turn = bytearray(), 0
    while True:
        want = (5, 512, 4096, 1)[turn % 4]
        turn += 1
        if turn % 2:
            piece = reader.read(want)
        else:
            buf = bytearray(want)
            piece = bytes(buf[:reader.readinto(buf)])
        if not piece:
            break
        got += piece
    assert bytes(got) == data
    assert reader.read(10) == b""


def test_bounded_serves_its_head_then_the_stream_and_stops_at_its_size() -> None:
    stream = Counted(io.BytesIO(b"0123456789abcdef"))
    head = stream.read_exact(3)
    member = Bounded(stream, 10, head)
    assert member.read(2) == b"01"
    assert member.read(4) == b"2345"
    buf = bytearray(8)
    assert member.readinto(buf) == 4
    assert bytes(buf[:4]) == b"6789"
    assert member.read(5) == b""
    assert stream.pos == 10
    cut = Bounded(Counted(io.BytesIO(b"xy")), 5)
    assert cut.read(1) == b"x"
    assert cut.read(4) == b"y"  # short: the caller (Counted.read_exact) checks the length
    with pytest.raises(EOFError):
        cut.read(4)
