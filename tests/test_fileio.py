"""bert.io.fileio: atomic writes, and the clean-up of temporaries that killed writers leave behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from bert.io.fileio import atomic_path, atomic_write_text, remove_stale_temps


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (pids are not reused this fast)


def test_a_failed_write_leaves_nothing_and_the_old_file_intact(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_temporaries_of_dead_writers_on_this_host_are_removed_others_kept(tmp_path):
    host = socket.gethostname()
    target = tmp_path / "features"
    dead_dir = tmp_path / f".features.{host}-{_dead_pid()}.abc.tmp"
    dead_dir.mkdir()
    (dead_dir / "half.pt").write_bytes(b"x")
    dead_file = tmp_path / f".features.{host}-{_dead_pid()}.def.tmp"
    dead_file.write_text("half")
    live = tmp_path / f".features.{host}-{os.getpid()}.ghi.tmp"  # a writer still running (this process)
    other_host = tmp_path / f".features.{host}x-{_dead_pid()}.jkl.tmp"  # another node on shared storage
    old = tmp_path / f".features.{host}-{_dead_pid()}.mno.old"  # may hold the only previous copy
    other_target = tmp_path / f".features2.{host}-{_dead_pid()}.pqr.tmp"
    for keep in (live, other_host, old, other_target):
        keep.mkdir()

    atomic_write_text(target, "done")

    assert target.read_text() == "done"
    assert not dead_dir.exists() and not dead_file.exists()
    assert all(p.exists() for p in (live, other_host, old, other_target))
    assert remove_stale_temps(target) == []  # nothing more to remove
