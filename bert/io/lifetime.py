"""Process lifetime and folder locks: the one place the project checks whether a process lives, makes a
worker die with its launcher, turns a stop signal into one clean exit, and locks a folder for a run.

    die_with_parent()             a worker that torchrun started (in a session of its own) dies with it
    with stop_signals():          SIGTERM / SIGHUP end the program as Ctrl-C does: an Interrupted, once
    with lock_folder(work, "stage finetune"):   a second run is refused: "... in use by PID n ..."
    with lock_file(path):         one process at a time (the ranks of a job downloading one file)
    same_process_alive(pid, t)    a PID and its start time: a PID reused by another process is not alive

A folder lock is the kernel's (flock on the folder itself, no lock file): it is held while the holder's
process lives and released when it dies however it dies, so a dead run's lock is taken over at once and
never needs cleaning up. Linux and macOS; die_with_parent is Linux's (prctl), a no-op elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import Iterator, Optional

LAUNCHER_PID_ENV = "BERT_LAUNCHER_PID"  # set by bert.engine.launch for its workers
_PR_SET_PDEATHSIG = 1


class FolderInUseError(OSError):
    """Another live process holds the folder's lock; the message names its PID when the system says."""


class Interrupted(KeyboardInterrupt):
    """The program was asked to stop (SIGINT, SIGTERM or SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports it (130 for Ctrl-C)."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def process_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this host (someone else's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> Optional[int]:
    """When process `pid` started (clock ticks since boot, from /proc), or None where unknown.

    With the PID it names a process for good: a new process that reuses a dead one's PID (common in
    containers, where every run counts from 1) has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def same_process_alive(pid: int, started: Optional[str]) -> bool:
    """Whether the process `pid` that started at `started` (process_start_time, as text) still lives; None
    for `started` trusts the PID alone. Where start times are unknown (no /proc) a live PID counts."""
    if not process_alive(pid):
        return False
    if started is None:
        return True
    now = process_start_time(pid)
    return now is None or str(now) == started


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (the launcher) dies.

    torchrun starts every worker in a session of its own, so a kill of the launcher's process group (a
    killed ``dvc repro``, a timed-out flow) does not reach them: without this they would keep training,
    write outputs after the pipeline "died" and race its rerun. A launcher that died before this call is
    caught too: the parent is no longer the one $BERT_LAUNCHER_PID names (bert.engine.launch sets it),
    or, without it, this process was handed to init. The variable is then removed, so that this
    process's own children do not compare themselves with it.

    Returns:
        True when the request was made (Linux), False elsewhere.
    """
    expected = os.environ.pop(LAUNCHER_PID_ENV, "")
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    parent = os.getppid()
    if parent == 1 or (expected.isdigit() and parent != int(expected)):
        os.kill(os.getpid(), sig)  # the launcher is gone already: so are we
    return True


@contextlib.contextmanager
def stop_signals(*signums: int) -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP (or `signums`) raise Interrupted in the main thread.

    Only the first: the others are ignored from then on, so that the clean-up after it (one log line, the
    temporaries removed) is not cut short by the second signal a launcher and a process group both send.
    The previous handlers come back after the block.
    """
    signums = signums or (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, _frame) -> None:
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in signums}
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def lock_holder(folder: str | os.PathLike) -> Optional[int]:
    """The PID holding a flock on `folder` (from /proc/locks), or None when none is known."""
    try:
        st = os.stat(folder)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:131090 0 EOF" (a waiter's line has "->" after the number)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    same_inode = []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
            continue
        dev, _, inode = fields[5].rpartition(":")
        if inode == str(st.st_ino):
            if dev == device:
                return int(fields[4])
            same_inode.append(int(fields[4]))  # an overlay file system shows the lower device
    return same_inode[0] if len(same_inode) == 1 else None


@contextlib.contextmanager
def lock_file(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if needed; waits for it), e.g. so that the ranks of a
    torchrun job do not download the same file at the same time. The kernel releases it when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, owner: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) for the block; refuse at once if it is held.

    Args:
        folder: the folder a run works in (e.g. a training stage's --work).
        owner: who wants it, for the message (e.g. "stage finetune").
    Yields:
        The folder; created for the block if it did not exist, and removed after it if it is still empty.
    Raises:
        FolderInUseError: another live process holds it: "<folder>: in use by PID n (...)".
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = lock_holder(folder)
            who = f"PID {pid}" if pid else "another process"
            raise FolderInUseError(f"{folder}: in use by {who} (another run of {owner}, or one still stopping): "
                                   "wait for it to end or stop it; a dead run's lock is released by itself") from None
        locked = True
        yield folder
    finally:
        if created and locked:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a run that failed before writing anything leaves nothing
        os.close(fd)  # releases the lock
