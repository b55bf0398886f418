"""A resumable, verified, atomic HTTP(S) downloader (stdlib only) with a tqdm progress bar.

    url ──GET (Range: bytes=N-)──► dest.part ──size + sha256 check──► os.replace ──► dest

A transfer cut part-way leaves ``dest.part``; the next attempt (in the same call, or a later call)
asks only for the missing bytes. ``dest`` itself only ever appears complete and verified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from tqdm.auto import tqdm

from bert.io.fileio import sha256_of  # noqa: F401 (re-exported: the stages import it from here)

logger = logging.getLogger(__name__)

USER_AGENT = "bert-toolkit/0.1 (+https://github.com/google-research/bert)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


# Worth another, resumed attempt: a stalled or reset connection, a transfer cut short. (A refused
# connection or an unknown host is not: offline, the caller should hear it at once.)
_RETRY_ERRORS = (socket.timeout, TimeoutError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                 http.client.HTTPException)


class DownloadError(OSError):
    """The file could not be fetched (network down, HTTP error, transfer cut too often)."""


class ChecksumError(DownloadError, ValueError):
    """The bytes arrived but are not the expected ones (size or sha256)."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed), e.g. so that the ranks of a
    torchrun job do not download the same file at the same time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(dest: Path) -> Path:
    # Outside dest's folder, so that a DVC-tracked output never holds a stray lock file.
    key = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / "bert-toolkit-locks" / f"{key}.lock"


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: Optional[str] = None,
    *,
    size: Optional[int] = None,
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Fetch `url` into `dest`, resuming a partial ``dest.part`` and verifying before the rename.

    A `dest` that already exists (and matches `sha256` when given) is returned without any request.

    Args:
        url: http(s):// or file:// address.
        dest: the final file path; its folder is created.
        sha256: expected hex digest, checked after the transfer (None: size check only).
        size: expected size in bytes, if known beforehand.
        retries: further attempts after a cut transfer or a server error (5xx); each one resumes.
        timeout: seconds of socket inactivity before an attempt counts as cut.
        chunk_size: bytes per read.
        progress: show a tqdm bar.
        backoff: seconds before the first retry, doubled each time.
    Returns:
        `dest` as a Path.
    Raises:
        DownloadError: the server or network failed (one line naming the URL); a partial file is kept.
        ChecksumError: the complete file has the wrong size or sha256 (the bad file is removed).
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = sha256.lower()
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        logger.warning("%s: sha256 does not match %s, fetching it again", dest, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with file_lock(_lock_path(dest)):
        if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
            return dest  # another process finished it while we waited for the lock
        total = _fetch_with_retries(url, part, size, retries, timeout, chunk_size, progress, backoff)
        _verify(url, part, total if size is None else size, sha256)
        os.replace(part, dest)
    logger.info("downloaded %s -> %s", url, dest)
    return dest


def _fetch_with_retries(url, part, size, retries, timeout, chunk_size, progress, backoff) -> Optional[int]:
    attempt = 0
    while True:
        try:
            return _fetch_once(url, part, timeout, chunk_size, progress)
        except _Retryable as err:
            if attempt >= retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"could not download {url}: {err} (after {attempt + 1} attempts; "
                    f"{have} bytes kept in {part}, the next call resumes)"
                ) from None
            wait = backoff * (2**attempt)
            logger.warning("download of %s interrupted (%s); resuming in %.1f s", url, err, wait)
            time.sleep(wait)
            attempt += 1


class _Retryable(Exception):
    """A cut transfer, a timeout or a 5xx: worth another (resumed) attempt."""


def _fetch_once(url: str, part: Path, timeout: float, chunk_size: int, progress: bool) -> Optional[int]:
    """One request, appending to `part`. Returns the full size when the server said it."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Nothing left past `offset`: the part is complete if the server's size agrees.
            match = _UNSATISFIED_RANGE.search(err.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == offset:
                return offset
            part.unlink()
            raise _Retryable("the server refused to resume (HTTP 416); restarting") from None
        if err.code >= 500 or err.code == 429:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, _RETRY_ERRORS):
            raise _Retryable(str(reason)) from None
        raise DownloadError(f"could not download {url}: {reason}") from None
    except _RETRY_ERRORS as err:
        raise _Retryable(str(err) or type(err).__name__) from None
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and status == 206:
            match = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink()  # the server sent some other range: start over next attempt
                raise _Retryable("the server answered with an unexpected range; restarting")
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:
            if offset:
                logger.info("%s: the server ignored the Range request; downloading from the start", url)
            offset, total, mode = 0, length, "wb"
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[: -len(".part")], disable=not progress, leave=False)
        # read1: whatever has arrived (up to chunk_size), so that a process killed mid-transfer has
        # every byte it received in `part` for the next call to resume from.
        read = getattr(response, "read1", None) or response.read
        with bar, open(part, mode) as out:
            try:
                for chunk in iter(lambda: read(chunk_size), b""):
                    out.write(chunk)
                    out.flush()
                    received += len(chunk)
                    bar.update(len(chunk))
            except _RETRY_ERRORS as err:
                out.flush()
                raise _Retryable(f"transfer cut after {received} bytes ({type(err).__name__})") from None
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received < total:
            raise _Retryable(f"transfer cut after {received} of {total} bytes")
        return total


def _verify(url: str, part: Path, size: Optional[int], sha256: Optional[str]) -> None:
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise ChecksumError(f"{url}: downloaded {actual_size} bytes, expected {size}; the file was removed")
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise ChecksumError(f"{url}: sha256 {actual} does not match the expected {sha256}; the file was removed")
