"""Hostile archives: through the extractor, ``bert convert-tf-checkpoint``, ``bert download`` and the
download stage. Each is refused with one line naming the archive and the member, and nothing is written
outside the target (a snapshot of everything around it is compared, byte for byte) or left inside it.
"""

from __future__ import annotations

import tarfile
import zipfile

import pytest

from bert.io.archive import UnsafeArchiveError, safe_extract
from reliability_helpers import (BAD_INPUT, FAULT, assert_one_clear_error, assert_stage_failed, changed, slow_server,
                                 snapshot, tally)
from test_archive import make_tar, make_zip, tar_link


def _special(name: str, kind) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def _zip_symlinks(path, members: dict[str, bytes], links: dict[str, str]):
    return make_zip(path, members, links)


def _lying_zip(path):
    """A stored member whose headers declare 10 bytes but hold 5000 (the ratio check cannot see it)."""
    make_zip(path, {"f.bin": b"a" * 5000}, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    for header, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = data.index(header) + field
        data[at:at + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _build(case: str, path, root):
    """Write the hostile archive `case` at `path`; `root` is the folder whose contents must not change."""
    outside = root / "victim" / "secret.txt"
    absolute = str(root / "abs-victim" / "evil.txt")
    builders = {
        "zip ../": lambda: make_zip(path, {"../evil.txt": b"x"}),
        "zip a/b/../../../": lambda: make_zip(path, {"ok.txt": b"fine", "a/b/../../../evil.txt": b"x"}),
        "zip absolute path": lambda: make_zip(path, {absolute: b"x"}),
        "zip drive letter": lambda: make_zip(path, {"C:/evil.txt": b"x"}),
        "zip backslash ..\\": lambda: make_zip(path, {"..\\..\\evil.txt": b"x"}),
        "zip symlink out": lambda: _zip_symlinks(path, {}, {"link": "../../victim/secret.txt"}),
        "zip symlink absolute": lambda: _zip_symlinks(path, {}, {"link": str(outside)}),
        "zip symlink then write through it": lambda: _zip_symlinks(path, {"esc/owned.txt": b"x"}, {"esc": "../../victim"}),
        "zip bomb (20 MiB of zeros)": lambda: make_zip(path, {"zeros.bin": bytes(20 << 20)}),
        "zip header lying about size": lambda: _lying_zip(path),
        "tar ../": lambda: make_tar(path, [("../evil.txt", b"x")]),
        "tar absolute path": lambda: make_tar(path, [(absolute, b"x")]),
        "tar symlink out": lambda: make_tar(path, [tar_link("link", "../../victim/secret.txt")]),
        "tar symlink then write through it": lambda: make_tar(path, [tar_link("esc", "../../victim"),
                                                                     ("esc/owned.txt", b"x")]),
        "tar symlink chain": lambda: make_tar(path, [tar_link("x/y", ".."), tar_link("x/y/w", ".."),
                                                     ("x/y/w/escaped", b"x")]),
        "tar hardlink out": lambda: make_tar(path, [tar_link("hl", "../../victim/secret.txt", tarfile.LNKTYPE),
                                                    ("hl", b"overwritten")]),
        "tar hardlink absolute": lambda: make_tar(path, [tar_link("hl", str(outside), tarfile.LNKTYPE)]),
        "tar device file": lambda: make_tar(path, [_special("dev", tarfile.CHRTYPE)]),
        "tar fifo": lambda: make_tar(path, [_special("pipe", tarfile.FIFOTYPE)]),
        "tar.gz bomb (20 MiB of zeros)": lambda: make_tar(path, [("zeros.bin", bytes(20 << 20))]),
    }
    return builders[case]()


CASES = ["zip ../", "zip a/b/../../../", "zip absolute path", "zip drive letter", "zip backslash ..\\",
         "zip symlink out", "zip symlink absolute", "zip symlink then write through it", "zip bomb (20 MiB of zeros)",
         "zip header lying about size", "tar ../", "tar absolute path", "tar symlink out",
         "tar symlink then write through it", "tar symlink chain", "tar hardlink out", "tar hardlink absolute",
         "tar device file", "tar fifo", "tar.gz bomb (20 MiB of zeros)"]


def _scene(tmp_path):
    """root/victim/secret.txt (what an escape would hit) and root/jail/target (where extraction goes)."""
    root = tmp_path / "root"
    (root / "victim").mkdir(parents=True)
    (root / "victim" / "secret.txt").write_text("do not touch")
    (root / "jail").mkdir()
    return root


def _lost(root, before, allowed=()) -> list[str]:
    """Everything changed under root except the archive itself and the allowed (empty) folders."""
    after = snapshot(root)
    return [p for p in changed(before, after) if p not in allowed and not p.startswith("archive")]


@pytest.mark.parametrize("case", CASES)
def test_extractor_refuses(tmp_path, case):
    with tally(FAULT, f"hostile archive, extractor: {case}") as rec:
        root = _scene(tmp_path)
        archive = _build(case, root / ("archive.zip" if case.startswith("zip") else "archive.tar.gz"), root)
        before = snapshot(root)
        with pytest.raises(ValueError) as info:
            safe_extract(archive, root / "jail" / "target")
        lost = _lost(root, before, allowed=("jail/target",))
        rec["lost"] = len(lost)
        message = str(info.value)
        assert "\n" not in message and archive.name in message, message
        assert not lost, f"written or changed outside the archive's target: {lost}"
        target = root / "jail" / "target"
        assert not target.exists() or snapshot(target) == {}, snapshot(target)
        assert isinstance(info.value, UnsafeArchiveError) or "header lying" in case


CLI_CASES = ["zip ../", "zip absolute path", "zip symlink then write through it", "zip bomb (20 MiB of zeros)",
             "tar hardlink out", "tar symlink chain"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_convert_tf_checkpoint_refuses(tmp_path, capsys, case):
    """``bert convert-tf-checkpoint ARCHIVE OUT`` extracts beside OUT: refused there, the temp folder gone."""
    from bert.cli.commands import main

    with tally(FAULT, f"hostile archive, bert convert-tf-checkpoint: {case}") as rec:
        root = _scene(tmp_path)
        archive = _build(case, root / ("archive.zip" if case.startswith("zip") else "archive.tar"), root)
        before = snapshot(root)
        rc = main(["convert-tf-checkpoint", str(archive), str(root / "jail" / "model")])
        lost = _lost(root, before)
        rec["lost"] = len(lost)
        assert_one_clear_error(rc, capsys.readouterr().err, archive.name, "refusing member")
        assert not lost, lost


HUB_PATH = "/2018_10_18/uncased_L-12_H-768_A-12.zip"  # bert-base-uncased under the mirror


@pytest.mark.parametrize("case", ["zip a/b/../../../", "tar hardlink out", "zip bomb (20 MiB of zeros)"])
def test_bert_download_refuses(tmp_path, capsys, monkeypatch, case):
    """``bert download bert-base-uncased`` from a mirror serving a hostile archive (a tar under a .zip name too)."""
    from bert.cli.commands import main

    with tally(FAULT, f"hostile archive, bert download: {case}") as rec:
        root = _scene(tmp_path)
        archive = _build(case, tmp_path / "served", root)
        server = slow_server({HUB_PATH: archive.read_bytes()})
        try:
            monkeypatch.setenv("BERT_TOOLKIT_MIRROR", server.url)
            before = snapshot(root)
            rc = main(["download", "-q", "bert-base-uncased", "--cache-dir", str(root / "jail" / "cache")])
        finally:
            server.stop()
        cache = root / "jail" / "cache"
        lost = [p for p in _lost(root, before) if not p.startswith("jail/cache")]
        lost += [p for p in snapshot(cache) if p.startswith(("models/", "tmp/"))]  # no half model, no temp
        rec["lost"] = len(lost)
        assert_one_clear_error(rc, capsys.readouterr().err, server.url + HUB_PATH, "refusing member",
                               "the download was deleted")
        assert not lost, lost
        assert not (cache / "downloads" / HUB_PATH.replace("/", "--").lstrip("-")).exists()


@pytest.mark.parametrize("case", ["zip symlink then write through it", "zip bomb (20 MiB of zeros)"])
def test_download_stage_refuses(tmp_path, caplog, monkeypatch, case):
    """``stages.download`` with data.source download: RTE.zip from a mirror that serves a hostile one."""
    from reliability_helpers import write_params
    from stages import download

    with tally(FAULT, f"hostile archive, download stage (RTE.zip): {case}") as rec:
        root = _scene(tmp_path)
        archive = _build(case, tmp_path / "served", root)
        server = slow_server({"/rte/RTE.zip": archive.read_bytes()})
        monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(root / "jail" / "cache"))
        params = write_params(tmp_path / "params.yaml", **{"source: builtin": "source: download",
                                                           'mirror: ""': f"mirror: {server.url}"})
        try:
            before = snapshot(root)
            rc = download.main(["--params", str(params), "--task", "rte", "--out", str(root / "jail" / "data" / "rte")])
        finally:
            server.stop()
        lost = [p for p in _lost(root, before, allowed=("jail/data",)) if not p.startswith("jail/cache")]
        rec["lost"] = len(lost)
        assert_stage_failed(rc, caplog, "RTE.zip", "refusing member")
        assert not lost, lost


def test_link_already_in_the_target_creates_nothing_through_it(tmp_path):
    """[#19 L13] A target folder that already holds a link out (a shared cache, say): the member that goes through it is
    refused before any folder is made on the far side."""
    with tally(FAULT, "extraction into a target holding a link out: nothing created through the link") as rec:
        root = _scene(tmp_path)
        target = root / "jail" / "target"
        target.mkdir()
        (target / "shared").symlink_to(root / "victim", target_is_directory=True)
        for members in ({"shared/new/deeper/file.txt": b"x"}, {"shared/new/": b""}):
            archive = make_zip(root / "archive.zip", members)
            before = snapshot(root / "victim")
            with pytest.raises(UnsafeArchiveError) as info:
                safe_extract(archive, target)
            lost = changed(before, snapshot(root / "victim"))
            rec["lost"] += len(lost)
            assert "\n" not in str(info.value) and "a link already there" in str(info.value)
            assert not lost, f"created through the link: {lost}"


def test_member_with_a_long_valid_name_is_extracted(tmp_path):
    """[#19 L11] An archive member with a valid 250-byte name: its temporary fits too."""
    with tally(BAD_INPUT, "archive member with a 250-byte name (valid; its temporary must be too)"):
        name = "m" * 246 + ".txt"
        archive = make_zip(tmp_path / "archive.zip", {f"folder/{name}": b"long"})
        written = safe_extract(archive, tmp_path / "out")
        assert [p.name for p in written] == [name] and written[0].read_bytes() == b"long"
        assert sorted(p.name for p in (tmp_path / "out" / "folder").iterdir()) == [name]
