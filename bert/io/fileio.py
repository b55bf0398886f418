"""The one way the project writes a file: atomically, and without ever replacing what is not a file.

    atomic_path(out) ──► .out.HOST-PID-START.xxxxxxxx.tmp ──caller writes──► os.replace ──► out

A crash never leaves a half-written output under its final name. What the output path already is decides
how it is written (the policy the README states):

- nothing, a regular file or a folder: a temporary beside it, renamed onto it when complete;
- a symbolic link: the link is kept; the file (or folder) it points to is written as above, beside the
  target (a dangling link's target is created);
- a device node, a FIFO or a socket (``/dev/null``, a named pipe), or ``/dev/stdout``, ``/dev/fd/N``: written
  through, in place (there is nothing to rename onto them, and they are never replaced).

Temporary names stay within 255 bytes (a long output name is shortened in them) and carry the host, the
writer's PID and its start time, so that the next write of the same output removes what a killed writer
left (``remove_stale_temps``). A full disk (ENOSPC, EDQUOT, however the writing library reports it) is one
``DiskFullError`` line naming the output.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bert.io.lifetime import process_start_time, same_process_alive

NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, tmpfs, APFS)
_RANDOM = 8  # the characters tempfile.mkdtemp adds
_TOKEN_MAX = 32  # "PID-START": 10 + 1 + 21 digits at most
# Paths that name a process's open file descriptor: written through even when they resolve to a file.
_FD_PATH = re.compile(r"^/(dev/(stdout|stderr|stdin|fd/\d+)|proc/(self|thread-self|\d+)/fd/\d+)$")
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122", "storagefull",
                   "filesystemquotaexceeded")


class DiskFullError(OSError):
    """The disk (or the user's quota) filled up while an output was written; the output was not changed."""

    def __init__(self, message: str, filename: str | os.PathLike = ""):
        super().__init__(message)
        self.errno = errno.ENOSPC
        self.filename = str(filename)

    def __str__(self) -> str:
        return self.args[0]


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where an output named `path` is written, by the policy of the module docstring.

    Returns:
        (the path to write, True when it is written through in place: a device, a FIFO, a socket).
    """
    path = Path(path)
    if _FD_PATH.match(str(path.absolute())):
        return path, True
    try:
        mode = os.stat(path).st_mode  # follows links
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return path, True
    if path.is_symlink():
        return Path(os.path.realpath(path)), False
    return path, False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error delete it.

    Works for files and for folders (the caller creates whatever it likes at the yielded path). A device,
    a FIFO or a socket is yielded itself (written through); a link's target is written, the link kept.

    Raises:
        DiskFullError: the disk filled up (one line naming `path`); `path` was not changed.
    """
    path = Path(path)
    target, through = output_target(path)
    if through:
        try:
            yield target
        except BaseException as err:
            _raise_if_disk_full(err, path, target, target.parent)
            raise
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    tmp.rmdir()  # the caller decides whether it is a file or a folder
    try:
        yield tmp
        _rename_into_place(tmp, target)
    except BaseException as err:
        _raise_if_disk_full(err, path, tmp, target.parent)
        raise
    finally:
        _remove(tmp)


def _rename_into_place(tmp: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        if not tmp.is_dir():
            raise IsADirectoryError(f"{target}: is a folder; refusing to replace it with a file")
        # Move the old folder aside first, so the new one appears in a single rename.
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old", dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def move_into_place(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Publish a complete file `source` (e.g. a finished download's ``.part``) as the output `path`, by the
    module's policy: renamed onto a file (or onto a link's target), copied into a device or a FIFO.

    Returns:
        The path written.
    """
    source, path = Path(source), Path(path)
    target, through = output_target(path)
    if through:
        with atomic_path(path) as out, open(source, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        source.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    return path


@contextlib.contextmanager
def scratch_folder(near: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder named as a temporary of `near` (beside it), removed on exit; the scratch folders
    that killed processes left for the same `near` are removed first. For work that is not an output
    (extracting an archive, say) but must not outlive a kill."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(near)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(near), suffix=".tmp", dir=near.parent))
    try:
        yield tmp
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists() or tmp.is_symlink():
        tmp.unlink()


# ----------------------------------------------------------------------------------------------
# Temporary names: .NAME.HOST-PID-START.random.tmp, within NAME_MAX bytes.


def _host() -> str:
    return socket.gethostname()[:64] or "host"


def _stem(name: str) -> str:
    """`name` as it appears in temporary names: shortened (with a hash of the whole) when too long."""
    budget = NAME_MAX - len(f"..{_host()}-.{'x' * _RANDOM}.tmp".encode()) - _TOKEN_MAX
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= budget:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:10]
    return raw[: budget - 11].decode("utf-8", "ignore") + "~" + digest


def sibling(path: str | os.PathLike, prefix: str = "", suffix: str = "") -> Path:
    """``prefix + NAME + suffix`` beside `path` (e.g. ``NAME.part``), the name shortened (with a hash of the whole)
    when the result would pass NAME_MAX bytes."""
    path = Path(path)
    name, room = path.name, NAME_MAX - len(f"{prefix}{suffix}".encode())
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        name = raw[: room - 11].decode("utf-8", "ignore") + "~" + hashlib.sha1(raw).hexdigest()[:10]
    return path.with_name(f"{prefix}{name}{suffix}")


def _host_prefix(path: Path) -> str:
    """``.NAME.HOST-``: the start of every temporary of `path` written on this host."""
    return f".{_stem(path.name)}.{_host()}-"


def _temp_prefix(path: Path) -> str:
    start = process_start_time(os.getpid())
    return f"{_host_prefix(path)}{os.getpid()}{'' if start is None else f'-{start}'}."


OTHER_HOST_STALE = 7 * 24 * 3600.0  # seconds untouched after which another host's temporary is taken as left


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `path` that killed writers left.

    On this host: those whose process is gone (PID and start time). Another host's (shared storage, or a
    container that has since gone with its host name) cannot be asked: they are removed once untouched for
    OTHER_HOST_STALE seconds (a week; a temporary lives as long as one output takes to write). Returns what was
    deleted.
    """
    path = Path(path)
    ours, any_host = _host_prefix(path), re.compile(rf"{re.escape(f'.{_stem(path.name)}.')}.+-\d+(-\d+)?\.[^.]+\.tmp")
    removed = []
    for entry in path.parent.iterdir() if path.parent.is_dir() else ():
        if not entry.name.endswith(".tmp"):
            continue  # a ".old" folder may hold the only copy of the previous output: kept
        if entry.name.startswith(ours):
            token = entry.name[len(ours):].split(".", 1)[0]
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
            if not match or same_process_alive(int(match.group(1)), match.group(2)):
                continue
        elif not any_host.fullmatch(entry.name) or _age(entry) < OTHER_HOST_STALE:
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _age(entry: Path) -> float:
    """Seconds since `entry` (or, for a folder, anything directly in it) last changed."""
    try:
        newest = entry.lstat().st_mtime
        if entry.is_dir() and not entry.is_symlink():
            newest = max([newest, *(child.lstat().st_mtime for child in entry.iterdir())])
    except OSError:
        return 0.0
    return time.time() - newest


# ----------------------------------------------------------------------------------------------
# A full disk, however it is reported.


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike) -> Iterator[None]:
    """A full disk while the body writes `path` (a file inside an atomic folder, say) is a DiskFullError naming
    it; the enclosing atomic_path renames it after the output (``out/features.safetensors``)."""
    path = Path(path)
    try:
        yield
    except Exception as err:
        _raise_if_disk_full(err, path, path, path.parent)
        raise


def _raise_if_disk_full(err: BaseException, path: Path, tmp: Path, folder: Path) -> None:
    """Re-raise `err` as one DiskFullError line naming the output when it means the disk is full."""
    if isinstance(err, DiskFullError):
        inner = Path(err.filename)
        if inner == tmp or tmp in inner.parents:  # an inner writer named our temporary: name the output
            named = path / inner.relative_to(tmp) if inner != tmp else path
            raise DiskFullError(_disk_full_message(named, folder), named) from None
        return
    if not isinstance(err, Exception) or not _means_disk_full(err, folder):
        return
    raise DiskFullError(_disk_full_message(path, folder), path) from None


def _means_disk_full(err: Exception, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    if any(fragment in text for fragment in _DISK_FULL_TEXT):  # safetensors: "... (os error 28)"
        return True
    # torch.save drops its writer's OSError and fails later with "unexpected pos ...": ask the disk.
    return isinstance(err, RuntimeError) and _free_bytes(folder) < (1 << 20)


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _disk_full_message(path: Path, folder: Path) -> str:
    return (f"{path}: disk full (no space left on the device; {_free_bytes(folder)} bytes free in {folder}); "
            "the output was not written")


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file `source` to the output `path` atomically (its bytes, not its permissions). Returns `path`."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)
