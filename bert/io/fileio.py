"""Atomic file writing: a crash never leaves a half-written output under its final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error delete it.

    Works for files and for folders (the caller creates whatever it likes at the yielded path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path, os.getpid()), suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller decides whether it is a file or a folder
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            if not tmp.is_dir():
                raise IsADirectoryError(f"{path}: is a folder; refusing to replace it with a file")
            # Move the old folder aside first, so the new one appears in a single rename.
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path, os.getpid()), suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _host_prefix(path: Path) -> str:
    """``.NAME.HOST-``: temporaries are named ``.NAME.HOST-PID.random.tmp``, after target, host and process."""
    return f".{path.name}.{socket.gethostname()}-"


def _temp_prefix(path: Path, pid: int) -> str:
    return f"{_host_prefix(path)}{pid}."


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporaries of `path` that a killed writer on this host left (its process is gone).

    Writers on other hosts (shared storage) and live processes are left alone. Returns what was deleted.
    """
    start = _host_prefix(path)
    removed = []
    for entry in path.parent.iterdir() if path.parent.is_dir() else ():
        if not entry.name.startswith(start) or not entry.name.endswith(".tmp"):
            continue  # a ".old" folder may hold the only copy of the previous output: kept
        pid = entry.name[len(start):].split(".", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
