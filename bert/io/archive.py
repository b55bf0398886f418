"""Safe extraction of zip and tar archives: nothing is ever written outside the target folder.

Every member is checked before a single byte is written. Refused, with a ValueError naming the
archive and the member:
- absolute paths (``/etc/x``, ``C:\\x``), any ``..`` part, backslashes, NUL characters;
- links (symbolic or hard) whose target leaves the archive's root; links inside it are written as
  copies of the file they point to, so no link is ever created on disk (a chain of links could
  otherwise lead a later member out);
- device files, FIFOs, sockets;
- zip bombs: a member that expands more than `max_ratio` times, or more than `max_total_size` bytes
  in all, or more than `max_members` members. Sizes are enforced while writing too, in case a
  header lies.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from bert.io.fileio import DiskFullError, sibling

MAX_TOTAL_SIZE = 16 << 30  # 16 GiB: BERT-Large's archive expands to about 1.3 GB
MAX_RATIO = 200  # deflate rarely beats 100:1 on real data; bombs reach 1000:1 and more
RATIO_FLOOR = 1 << 20  # small members (a config of spaces, say) may compress very well
MAX_MEMBERS = 100_000


class UnsafeArchiveError(ValueError):
    """The archive holds a member that would escape the target or exhaust the disk."""


class CorruptArchiveError(ValueError):
    """The file is not a readable archive: truncated, damaged, or not an archive at all."""


# What the readers raise on a damaged stream (a failing disk write is an OSError and passes through).
_STREAM_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
                  gzip.BadGzipFile, NotImplementedError)


@dataclass
class _Member:
    name: str  # normalised relative POSIX path, never empty
    kind: str  # "file", "dir" or "link" (links are materialised as copies)
    size: int
    link_target: Optional[str] = None  # normalised path of the file a link copies
    open: Optional[Callable[[], BinaryIO]] = None


def safe_extract(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    max_total_size: int = MAX_TOTAL_SIZE,
    max_ratio: float = MAX_RATIO,
    max_members: int = MAX_MEMBERS,
) -> list[Path]:
    """Extract a zip or tar (plain, .gz, .bz2, .xz) archive into `target` after checking every member.

    Args:
        archive: the archive file.
        target: the folder to extract into (created if missing).
        max_total_size: refuse archives that expand to more bytes than this.
        max_ratio: refuse members over 1 MiB that expand more than this many times.
        max_members: refuse archives with more members than this.
    Returns:
        The paths of the files written, in archive order.
    Raises:
        UnsafeArchiveError: a hostile member (see the module docstring); nothing was written.
        CorruptArchiveError: the file is missing, not a zip or tar archive, or damaged.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise CorruptArchiveError(f"{archive}: archive not found")
    limits = (max_total_size, max_ratio, max_members)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return _extract(archive, _zip_members(archive, zf, limits), Path(target))
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                return _extract(archive, _tar_members(archive, tf, limits), Path(target))
    except _STREAM_ERRORS as err:
        raise CorruptArchiveError(f"{archive}: corrupt archive ({type(err).__name__}: {err})") from None
    raise CorruptArchiveError(f"{archive}: not a zip or tar archive (or a damaged one)")


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: refusing member {member!r}: {why}")


def _clean_name(archive: Path, raw: str) -> str:
    """The member's path relative to the target, or UnsafeArchiveError."""
    if "\x00" in raw or "\\" in raw:
        raise _refuse(archive, raw, "backslash or NUL in the name")
    if raw.startswith("/") or (len(raw) > 1 and raw[0].isalpha() and raw[1] == ":"):
        raise _refuse(archive, raw, "absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, raw, "'..' in the path")
    if not parts:
        return ""
    return "/".join(parts)


def _link_target(archive: Path, name: str, link: str, symbolic: bool) -> str:
    """Where a link points, relative to the archive root; refused when it leads outside."""
    if link.startswith("/") or "\x00" in link or "\\" in link:
        raise _refuse(archive, name, f"link to absolute path {link!r}")
    # A symlink is relative to its own folder; a tar hard link names an archive member.
    base = posixpath.dirname(name) if symbolic else ""
    joined = posixpath.normpath(posixpath.join(base, link))
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise _refuse(archive, name, f"link {link!r} leads outside the target")
    return joined


def _check_totals(archive: Path, members: list[_Member], limits: tuple[int, float, int]) -> None:
    max_total_size, max_ratio, max_members = limits
    if len(members) > max_members:
        raise _refuse(archive, members[max_members].name, f"more than {max_members} members")
    total = 0
    for member in members:
        total += member.size
        if total > max_total_size:
            raise _refuse(archive, member.name, f"expands to more than {max_total_size} bytes in all")
    # Many small members can make a bomb too: judge the whole archive as well.
    _check_ratio(archive, "(all members)", total, archive.stat().st_size, max_ratio)


def _check_ratio(archive: Path, name: str, size: int, packed: int, max_ratio: float) -> None:
    if size > RATIO_FLOOR and size > max_ratio * max(packed, 1):
        raise _refuse(archive, name, f"compression ratio {size / max(packed, 1):.0f}:1 exceeds {max_ratio:.0f}:1")


def _zip_members(archive: Path, zf: zipfile.ZipFile, limits) -> list[_Member]:
    members = []
    for info in zf.infolist():
        name = _clean_name(archive, info.filename)
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix mode bits
        if stat.S_ISLNK(mode):
            link = zf.read(info).decode("utf-8", "replace")
            target = _link_target(archive, info.filename, link, symbolic=True)
            members.append(_Member(name, "link", 0, link_target=target))
            continue
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # 0: type not recorded
            raise _refuse(archive, info.filename, "not a regular file or folder (device, FIFO or socket)")
        if info.is_dir():
            if name:
                members.append(_Member(name, "dir", 0))
            continue
        if not name:
            raise _refuse(archive, info.filename, "empty file name")
        _check_ratio(archive, info.filename, info.file_size, info.compress_size, limits[1])
        members.append(_Member(name, "file", info.file_size, open=lambda info=info: zf.open(info)))
    _check_totals(archive, members, limits)
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile, limits) -> list[_Member]:
    members, total = [], 0
    for info in tf:  # iterate (not getmembers) so that a bomb is stopped as soon as it is seen
        name = _clean_name(archive, info.name)
        if info.issym() or info.islnk():
            target = _link_target(archive, info.name, info.linkname, symbolic=info.issym())
            members.append(_Member(name, "link", 0, link_target=target))
        elif info.isdir():
            if name:
                members.append(_Member(name, "dir", 0))
        elif info.isreg():
            if not name:
                raise _refuse(archive, info.name, "empty file name")
            members.append(_Member(name, "file", info.size, open=lambda info=info: tf.extractfile(info)))
            total += info.size
        else:
            raise _refuse(archive, info.name, "not a regular file or folder (device, FIFO or socket)")
        if len(members) > limits[2] or total > limits[0]:
            _check_totals(archive, members, limits)
    _check_totals(archive, members, limits)  # one compressed stream: the whole-archive ratio is the one
    return members


def _extract(archive: Path, members: list[_Member], target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    files = {m.name: m for m in members if m.kind == "file"}
    for member in members:
        if member.kind == "link" and member.link_target not in files:
            raise _refuse(archive, member.name, f"link to {member.link_target!r}, which is not a file in the archive")
    written = []
    for member in members:
        parts = member.name.split("/")
        if member.kind == "dir":
            _make_folders(archive, member.name, root, parts)
            continue
        dest = _make_folders(archive, member.name, root, parts[:-1]) / parts[-1]
        source = files[member.link_target] if member.kind == "link" else member
        _copy_member(archive, member.name, source, dest)
        written.append(dest)
    return written


def _make_folders(archive: Path, name: str, root: Path, parts: list[str]) -> Path:
    """root/parts, made one folder at a time and never through a link: a link already in the target (or a file
    where a folder goes) is refused before anything is created beyond it."""
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise _refuse(archive, name, f"would be written through {path}, a link already there (outside {root}?)")
        if not path.exists():
            _write_guard(archive, name, path, lambda p=path: p.mkdir(exist_ok=True))
        elif not path.is_dir():
            raise CorruptArchiveError(f"{archive}: member {name!r} needs {path} to be a folder; it is a file")
    return path


def _write_guard(archive: Path, name: str, dest: Path, write: Callable[[], object]) -> None:
    """Run `write`; a full disk is bert.io.fileio's DiskFullError naming `dest`, a member the file system cannot
    hold (a name too long, a file where a folder is) a CorruptArchiveError naming it."""
    try:
        write()
    except OSError as err:
        if isinstance(err, (UnsafeArchiveError, CorruptArchiveError, DiskFullError)):
            raise
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{dest}: disk full while extracting {archive} ({err.strerror})", dest) from None
        if err.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EINVAL, errno.EILSEQ):
            raise CorruptArchiveError(f"{archive}: member {name!r} cannot be written as {dest} "
                                      f"({err.strerror})") from None
        raise


def _copy_member(archive: Path, name: str, source: _Member, dest: Path) -> None:
    """Stream one member to a temp file beside `dest`, enforcing its declared size, then rename."""
    tmp = sibling(dest, prefix=".", suffix=".extracting")  # within 255 bytes, however long the member's name

    def write() -> None:
        written = 0
        with source.open() as src, open(tmp, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > source.size:
                    raise _refuse(archive, name, f"expands beyond its declared {source.size} bytes")
                out.write(chunk)
        if written != source.size:
            raise CorruptArchiveError(f"{archive}: member {name!r} is truncated ({written} of {source.size} bytes)")
        if dest.is_symlink() or dest.is_dir():
            raise _refuse(archive, name, "the target path is a link or folder already")
        os.replace(tmp, dest)

    try:
        _write_guard(archive, name, dest, write)
    finally:
        if tmp.exists():
            tmp.unlink()

