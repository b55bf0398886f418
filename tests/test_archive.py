"""Safe extraction: ordinary zip/tar archives extract; hostile ones are refused with nothing written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from bert.io.archive import CorruptArchiveError, UnsafeArchiveError, safe_extract


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] = {}, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz"):
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def tar_link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


GOOGLE_LAYOUT = {
    "uncased_L-2_H-128_A-2/bert_config.json": b'{"hidden_size": 128}',
    "uncased_L-2_H-128_A-2/vocab.txt": b"[PAD]\n[UNK]\n",
    "uncased_L-2_H-128_A-2/bert_model.ckpt.index": bytes(range(256)) * 3,
}


def test_zip_extracts_google_layout(tmp_path):
    archive = make_zip(tmp_path / "a.zip", GOOGLE_LAYOUT)
    written = safe_extract(archive, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == list(GOOGLE_LAYOUT)
    for name, data in GOOGLE_LAYOUT.items():
        assert (tmp_path / "out" / name).read_bytes() == data


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_extracts_with_inside_link_as_copy(tmp_path, mode):
    archive = make_tar(tmp_path / "a.tar", [("d/f.txt", b"hello"), tar_link("d/g.txt", "f.txt"),
                                            tar_link("h.txt", "d/f.txt", tarfile.LNKTYPE)], mode)
    safe_extract(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert listing(out) == ["d", "d/f.txt", "d/g.txt", "h.txt"]
    for name in ("d/f.txt", "d/g.txt", "h.txt"):
        assert (out / name).read_bytes() == b"hello" and not (out / name).is_symlink()


HOSTILE_ZIPS = {
    "dotdot": ({"ok.txt": b"x", "../evil.txt": b"pwned"}, {}, "'..' in the path"),
    "nested-dotdot": ({"a/../../evil.txt": b"pwned"}, {}, "'..' in the path"),
    "absolute": ({"/tmp/evil.txt": b"pwned"}, {}, "absolute path"),
    "symlink-out": ({"ok.txt": b"x"}, {"link": "../../etc/passwd"}, "leads outside"),
    "symlink-abs": ({}, {"link": "/etc/passwd"}, "absolute path"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIPS))
def test_hostile_zip_refused_and_nothing_written(tmp_path, case):
    members, links, why = HOSTILE_ZIPS[case]
    archive = make_zip(tmp_path / "evil.zip", members, links)
    target = tmp_path / "jail" / "out"
    with pytest.raises(UnsafeArchiveError, match=why) as info:
        safe_extract(archive, target)
    message = str(info.value)
    assert "evil.zip" in message and "refusing member" in message
    assert set(listing(tmp_path)) <= {"evil.zip", "jail", "jail/out"}  # nothing written, in or out


def test_hostile_tar_members(tmp_path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    cases = {
        "dotdot": [("../evil", b"x")],
        "absolute": [("/abs/evil", b"x")],
        "symlink-out": [tar_link("x/link", "../../outside")],
        "hardlink-out": [tar_link("hl", "../outside", tarfile.LNKTYPE)],
        "fifo": [fifo],
        "device": [device],
        "link-to-missing": [tar_link("l", "nothing-here")],
    }
    for case, members in cases.items():
        archive = make_tar(tmp_path / f"{case}.tar.gz", members)
        with pytest.raises(UnsafeArchiveError, match=f"{case}.tar.gz: refusing member"):
            safe_extract(archive, tmp_path / case)
        assert not (tmp_path / case).exists() or listing(tmp_path / case) == []


def test_symlink_chain_cannot_escape(tmp_path):
    # A lexical check alone lets x/y -> .. then x/y/w -> .. reach the target's parent: links are copied
    # instead of created, and a link to a link (or to a folder) is refused.
    archive = make_tar(tmp_path / "chain.tar", [tar_link("x/y", ".."), tar_link("x/y/w", ".."),
                                                ("x/y/w/escaped", b"x")], "w")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def test_existing_link_in_target_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "sub").symlink_to(outside)
    archive = make_zip(tmp_path / "a.zip", {"sub/f.txt": b"x"})
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []


def test_zip_bomb_ratio_and_total_size(tmp_path):
    bomb = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(20 << 20)})  # 20 MiB of zeros -> ~20 KiB
    with pytest.raises(UnsafeArchiveError, match=r"zeros.bin.*compression ratio"):
        safe_extract(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The same member passes with a looser ratio, and the total-size limit still holds.
    assert len(safe_extract(bomb, tmp_path / "ok", max_ratio=10_000)) == 1
    with pytest.raises(UnsafeArchiveError, match="more than 1000000 bytes"):
        safe_extract(bomb, tmp_path / "small", max_ratio=10_000, max_total_size=1_000_000)
    tar_bomb = make_tar(tmp_path / "bomb.tar.gz", [("zeros.bin", bytes(20 << 20))])
    with pytest.raises(UnsafeArchiveError, match="compression ratio"):
        safe_extract(tar_bomb, tmp_path / "out2")


def test_zip_header_that_lies_about_size(tmp_path):
    # Declared size 10, real data 5000 (stored, so the ratio check cannot see it): stopped while writing.
    archive = make_zip(tmp_path / "liar.zip", {"f.bin": b"a" * 5000}, compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local header and central directory entry
        at = data.index(header)
        offset = at + (22 if header == b"PK\x03\x04" else 24)  # uncompressed-size field
        data[offset:offset + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="liar.zip"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "f.bin").exists()


def test_corrupt_and_non_archives(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>Not Found</html>" * 10)
    with pytest.raises(CorruptArchiveError, match="junk.zip: not a zip or tar archive"):
        safe_extract(junk, tmp_path / "out")
    good = make_zip(tmp_path / "crc.zip", {"f.txt": b"important data " * 100}, compression=zipfile.ZIP_STORED)
    data = bytearray(good.read_bytes())
    at = data.index(b"important")
    data[at:at + 9] = b"IMPORTANT"  # same size, wrong CRC
    good.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match="crc.zip: corrupt archive"):
        safe_extract(good, tmp_path / "out")
    truncated = tmp_path / "cut.tar.gz"
    full = make_tar(tmp_path / "full.tar.gz", [("f.bin", bytes(range(256)) * 4000)]).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(CorruptArchiveError, match="cut.tar.gz"):
        safe_extract(truncated, tmp_path / "out3")
