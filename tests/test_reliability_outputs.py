"""Where outputs land: device nodes, FIFOs, symbolic links, long names and a full disk.

Every file the project writes goes through bert.io.fileio.atomic_path. Its policy (README, Reliability):
a device node or a FIFO is written through and never replaced; a symbolic link is kept and the file it
points to is written atomically; a name that is valid for the file system is valid for its temporary
too; a full disk is one line naming the output, which is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from bert.io.fileio import atomic_path, atomic_write_text, remove_stale_temps
from reliability_helpers import (BAD_INPUT, FAULT, SMALL_DATA, assert_one_clear_error, assert_stage_failed, tally,
                                 write_params)


def _extract(tmp_path: Path, model: Path, output: Path) -> list[str]:
    (tmp_path / "in.txt").write_text("the cat sat on the mat.\n")
    return ["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"), "--output-file", str(output),
            "--model", str(model), "--layers", "-1"]


def _device(path: Path, minor: int) -> Path:
    """A character device of the memory driver (major 1: minor 3 is null, 7 is full), made at `path` rather
    than using /dev's own: a writer that replaced it would damage this machine. Needs root."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


@pytest.fixture
def null_device(tmp_path):
    return _device(tmp_path / "null", 3)


def test_extract_features_writes_through_a_device_node(tmp_path, capsys, minilm_dir, null_device):
    from bert.cli.commands import main

    with tally(FAULT, "bert extract-features --output-file <a device node> as root: written through, kept") as rec:
        rc = main(_extract(tmp_path, minilm_dir, null_device))
        kept = stat.S_ISCHR(os.lstat(null_device).st_mode)
        rec["lost"] = int(not kept)
        assert rc == 0, capsys.readouterr().err
        assert kept, "the device node was replaced by a regular file"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "null"]


def test_output_into_a_fifo_is_written_through(tmp_path):
    with tally(FAULT, "an output path that is a FIFO: written through, never replaced") as rec:
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
        reader.start()
        atomic_write_text(fifo, "through the pipe\n")
        reader.join(timeout=10)
        rec["lost"] = int(not stat.S_ISFIFO(os.lstat(fifo).st_mode))
        assert got == [b"through the pipe\n"] and rec["lost"] == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_symlinked_file_output_keeps_the_link_and_writes_its_target(tmp_path, capsys, minilm_dir):
    from bert.cli.commands import main

    with tally(FAULT, "an output file that is a symlink: the link kept, its target written atomically") as rec:
        (tmp_path / "store").mkdir()
        real = tmp_path / "store" / "features.jsonl"
        real.write_text("old\n")
        link = tmp_path / "features.jsonl"
        link.symlink_to(real)
        rc = main(_extract(tmp_path, minilm_dir, link))
        rec["lost"] = int(not link.is_symlink())
        assert rc == 0, capsys.readouterr().err
        assert link.is_symlink() and os.readlink(link) == str(real)
        assert real.read_text().startswith('{"linex_index": 0')
        assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["features.jsonl"]  # no temporaries


def test_dangling_symlink_output_creates_its_target(tmp_path):
    with tally(BAD_INPUT, "an output that is a dangling symlink: its target created, the link kept"):
        link = tmp_path / "out.txt"
        link.symlink_to(tmp_path / "elsewhere.txt")
        atomic_write_text(link, "made\n")
        assert link.is_symlink() and (tmp_path / "elsewhere.txt").read_text() == "made\n"


def test_symlinked_folder_output_of_a_stage_keeps_the_link(tmp_path):
    from stages import download

    with tally(FAULT, "a stage's output folder that is a symlink: the link kept, the folder it names replaced") as rec:
        params = write_params(tmp_path / "params.yaml", **SMALL_DATA)
        (tmp_path / "big-disk" / "raw").mkdir(parents=True)
        (tmp_path / "big-disk" / "raw" / "stale.tsv").write_text("old")
        link = tmp_path / "raw"
        link.symlink_to(tmp_path / "big-disk" / "raw", target_is_directory=True)
        assert download.main(["--params", str(params), "--task", "demo-pair", "--out", str(link)]) == 0
        rec["lost"] = int(not link.is_symlink())
        assert link.is_symlink()
        assert sorted(p.name for p in link.iterdir()) == ["SOURCE.json", "dev.tsv", "test.tsv", "train.tsv"]
        assert sorted(p.name for p in (tmp_path / "big-disk").iterdir()) == ["raw"]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_long_output_names_are_written(tmp_path, kind):
    with tally(BAD_INPUT, f"an output {kind} with a 250-byte name (valid; its temporary must be too)"):
        name = "é" * 100 + "x" * 50  # 250 bytes in UTF-8
        target = tmp_path / name
        with atomic_path(target) as tmp:
            if kind == "file":
                tmp.write_text("ok")
            else:
                tmp.mkdir()
                (tmp / "a.txt").write_text("ok")
        assert (target.read_text() if kind == "file" else (target / "a.txt").read_text()) == "ok"
        with atomic_path(target) as tmp:  # the second write replaces the first
            (tmp.write_text("again") if kind == "file" else (tmp.mkdir(), (tmp / "b.txt").write_text("again")))
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_extract_features_long_output_name(tmp_path, capsys, minilm_dir):
    from bert.cli.commands import main

    with tally(BAD_INPUT, "bert extract-features --output-file <a 250-byte name>"):
        output = tmp_path / ("f" * 244 + ".jsonl")
        rc = main(_extract(tmp_path, minilm_dir, output))
        assert rc == 0, capsys.readouterr().err
        assert output.read_text().startswith('{"linex_index": 0')


def test_temporaries_of_a_dead_writer_whose_pid_came_back_are_removed(tmp_path):
    """In a container every run counts PIDs from 1: a killed writer's PID is soon some live process's
    (this one's, say). Its start time tells them apart."""
    import socket

    with tally(FAULT, "a killed writer's temporary whose PID is reused by a live process: removed") as rec:
        target = tmp_path / "features"
        stale = tmp_path / f".features.{socket.gethostname()}-{os.getpid()}-1.abcdefgh.tmp"
        stale.mkdir()
        (stale / "half.safetensors").write_bytes(b"x" * 10)
        with atomic_path(target) as tmp:
            live = sorted(p.name for p in tmp_path.iterdir() if p != stale)
            tmp.mkdir()
        rec["lost"] = 0
        assert not stale.exists()
        assert live == [], live  # the temporary was not created yet when this ran; only `stale` was there
        assert remove_stale_temps(target) == []


# ----------------------------------------------------------------------------------------------
# A full disk: a small tmpfs (mounting needs root).


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"bert-test-{uuid.uuid4().hex[:8]}",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs ({done.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_while_writing_safetensors(tmp_path, capsys, tiny_config):
    from bert import BertModel

    with tally(FAULT, "disk full while writing model.safetensors: one line naming the file") as rec:
        model = BertModel(tiny_config)
        with _small_disk(tmp_path / "disk", "64k") as disk:
            with pytest.raises(OSError) as info:
                model.save_pretrained(disk / "model")
            message = str(info.value)
            rec["lost"] = int((disk / "model" / "model.safetensors").exists())
            assert message.startswith(f"{disk / 'model' / 'model.safetensors'}: disk full"), message
            assert "\n" not in message and rec["lost"] == 0
            assert sorted(p.name for p in (disk / "model").iterdir()) == []


def test_disk_full_while_writing_a_torch_checkpoint(tmp_path, tiny_config):
    import torch

    from bert.engine.checkpoint import save_checkpoint

    with tally(FAULT, "disk full while torch.save writes a training checkpoint: one line naming the file") as rec:
        state = {"global_step": 4, "weights": torch.zeros(100_000)}
        with _small_disk(tmp_path / "disk", "64k") as disk:
            with pytest.raises(OSError) as info:
                save_checkpoint(disk / "work", state)
            expected = disk / "work" / "checkpoints" / "step-00000004.pt"
            rec["lost"] = len(list((disk / "work" / "checkpoints").iterdir()))
            assert str(info.value).startswith(f"{expected}: disk full"), str(info.value)
            assert rec["lost"] == 0


def test_disk_full_in_the_tokenize_stage(tmp_path, caplog, minilm_dir):
    from stages import download, tokenize

    with tally(FAULT, "disk full while the tokenize stage writes features.safetensors: one line, exit 1") as rec:
        params = write_params(tmp_path / "params.yaml", **SMALL_DATA)
        assert download.main(["--params", str(params), "--task", "demo-pair", "--out", str(tmp_path / "raw")]) == 0
        with _small_disk(tmp_path / "disk", "8k") as disk:
            rc = tokenize.main(["--params", str(params), "--task", "demo-pair", "--data", str(tmp_path / "raw"),
                                "--model", str(minilm_dir), "--out", str(disk / "features")])
            message = assert_stage_failed(rc, caplog, "disk full")
            assert any(f"{disk / 'features' / 'train' / name}: disk full" in message
                       for name in ("features.safetensors", "metadata.json", "manifest.json")), message
            rec["lost"] = len(list(disk.iterdir()))
            assert rec["lost"] == 0


def test_disk_full_through_a_device(tmp_path, capsys, minilm_dir):
    from bert.cli.commands import main

    with tally(FAULT, "bert extract-features --output-file <a device like /dev/full>: one line naming it") as rec:
        full = _device(tmp_path / "full", 7)
        rc = main(_extract(tmp_path, minilm_dir, full))
        rec["lost"] = int(not stat.S_ISCHR(os.lstat(full).st_mode))
        assert_one_clear_error(rc, capsys.readouterr().err, f"{full}: disk full")
        assert rec["lost"] == 0
