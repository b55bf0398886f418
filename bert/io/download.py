"""A resumable, verified, atomic HTTP(S) downloader (stdlib only) with a tqdm progress bar.

    url ──GET (Range: bytes=N-)──► dest.part ──size + sha256 check──► move_into_place ──► dest

A transfer cut part-way leaves ``dest.part``; the next attempt (in the same call, or a later call)
asks only for the missing bytes. ``dest`` itself only ever appears complete and verified.

Every download is bounded (``Bounds``): a deadline for all its attempts, a minimum rate (a server that
trickles a byte at a time is cut and retried), and a size: the file's own when it is known (a release's
pinned size), else a cap. A server that announces or sends more is refused and its ``.part`` removed, so
the next call does not resume it. Each failure is one line naming the URL (and the file, once one was written).
"""

from __future__ import annotations

import errno
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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from bert.io.fileio import move_into_place, sha256_of, sibling  # sha256_of: re-exported, the stages import it here
from bert.io.lifetime import lock_file

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


def _lock_path(dest: Path) -> Path:
    # Outside dest's folder, so that a DVC-tracked output never holds a stray lock file.
    key = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / "bert-toolkit-locks" / f"{key}.lock"


# The bounds of one download (all its attempts): a server that trickles, stalls or never stops ends in one line.
DEADLINE_ENV = "BERT_TOOLKIT_DOWNLOAD_DEADLINE"  # seconds for a whole download, every attempt included
MIN_RATE_ENV = "BERT_TOOLKIT_DOWNLOAD_MIN_RATE"  # bytes per second, averaged over RATE_WINDOW seconds
MAX_BYTES_ENV = "BERT_TOOLKIT_DOWNLOAD_MAX_BYTES"  # the size cap of a file whose size is not known beforehand
DEFAULT_DEADLINE = 6 * 3600.0
DEFAULT_MIN_RATE = 1024.0
DEFAULT_MAX_BYTES = 16 << 30  # as bert.io.archive's MAX_TOTAL_SIZE: BERT-Large's zip is 1.2 GB
RATE_WINDOW = 60.0


@dataclass(frozen=True)
class Bounds:
    """How long, how slow and how big one download may be."""

    deadline: float  # seconds, all attempts together
    min_rate: float  # bytes per second over `window` seconds (0: no minimum)
    window: float
    max_bytes: int  # the file's size when known, else a cap

    @classmethod
    def resolve(cls, size: Optional[int], max_bytes: Optional[int], deadline: Optional[float],
                min_rate: Optional[float], window: float) -> "Bounds":
        """The bounds of a call: its arguments, else the environment, else the defaults."""
        if size is not None:
            cap = size
        elif max_bytes is not None:
            cap = max_bytes
        else:
            cap = int(_env_number(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
        return cls(deadline if deadline is not None else _env_number(DEADLINE_ENV, DEFAULT_DEADLINE),
                   min_rate if min_rate is not None else _env_number(MIN_RATE_ENV, DEFAULT_MIN_RATE), window, cap)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"${name}: expected a positive number, got {text!r}")
    return value


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: Optional[str] = None,
    *,
    size: Optional[int] = None,
    max_bytes: Optional[int] = None,
    deadline: Optional[float] = None,
    min_rate: Optional[float] = None,
    rate_window: float = RATE_WINDOW,
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
        size: expected size in bytes, if known beforehand (also the cap: not a byte more is accepted).
        max_bytes: the cap when `size` is unknown (default $BERT_TOOLKIT_DOWNLOAD_MAX_BYTES, else 16 GiB).
        deadline: seconds for the whole download, retries included (default $BERT_TOOLKIT_DOWNLOAD_DEADLINE,
            else 6 hours).
        min_rate: bytes per second the server must keep up over `rate_window` seconds (default
            $BERT_TOOLKIT_DOWNLOAD_MIN_RATE, else 1 KiB/s); a slower attempt is cut and retried.
        rate_window: seconds over which the rate is measured.
        retries: further attempts after a cut transfer or a server error (5xx); each one resumes.
        timeout: seconds of socket inactivity before an attempt counts as cut.
        chunk_size: bytes per read.
        progress: show a tqdm bar.
        backoff: seconds before the first retry, doubled each time.
    Returns:
        `dest` as a Path.
    Raises:
        DownloadError: the server or network failed, the deadline passed (one line naming the URL and the file;
            a partial file is kept for the next call), or the server sent more than the cap (the partial file
            is removed).
        ChecksumError: the complete file has the wrong size or sha256 (the bad file is removed).
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = sha256.lower()
    bounds = Bounds.resolve(size, max_bytes, deadline, min_rate, rate_window)
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        logger.warning("%s: sha256 does not match %s, fetching it again", dest, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = sibling(dest, suffix=".part")
    with lock_file(_lock_path(dest)):
        if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
            return dest  # another process finished it while we waited for the lock
        if part.is_file() and part.stat().st_size > bounds.max_bytes:
            logger.warning("%s: larger than the %d bytes expected; starting over", part, bounds.max_bytes)
            part.unlink()
        try:
            total = _fetch_with_retries(url, part, bounds, retries, timeout, chunk_size, progress, backoff)
        except OSError as err:
            if isinstance(err, DownloadError) or getattr(err, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DownloadError(f"could not download {url}: disk full while writing {part} "
                                f"({err.strerror}); free some space and run it again to resume") from None
        _verify(url, part, total if size is None else size, sha256)
        move_into_place(part, dest)
    logger.info("downloaded %s -> %s", url, dest)
    return dest


def _fetch_with_retries(url, part, bounds: Bounds, retries, timeout, chunk_size, progress, backoff) -> Optional[int]:
    attempt = 0
    ends = time.monotonic() + bounds.deadline
    while True:
        try:
            return _fetch_once(url, part, bounds, ends, timeout, chunk_size, progress)
        except _Retryable as err:
            have = part.stat().st_size if part.exists() else 0
            wait = backoff * (2**attempt)
            if time.monotonic() + wait >= ends:
                raise DownloadError(
                    f"could not download {url}: not complete after the deadline of {bounds.deadline:g} s "
                    f"(${DEADLINE_ENV}; last: {err}); {have} bytes kept in {part}, the next call resumes"
                ) from None
            if attempt >= retries:
                raise DownloadError(
                    f"could not download {url}: {err} (after {attempt + 1} attempts; "
                    f"{have} bytes kept in {part}, the next call resumes)"
                ) from None
            logger.warning("download of %s interrupted (%s); resuming in %.1f s", url, err, wait)
            time.sleep(wait)
            attempt += 1


class _Retryable(Exception):
    """A cut transfer, a timeout or a 5xx: worth another (resumed) attempt."""


def _too_big(url: str, part: Path, what: str, cap: int) -> DownloadError:
    part.unlink(missing_ok=True)  # not resumed: the next call starts over
    return DownloadError(f"could not download {url}: {what}, more than the {cap} bytes expected (an endless "
                         f"stream, or not the file asked for); {part} was removed")


def _fetch_once(url: str, part: Path, bounds: Bounds, ends: float, timeout: float, chunk_size: int,
                progress: bool) -> Optional[int]:
    """One request, appending to `part`. Returns the full size when the server said it."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        # the socket's timeout is also what ends a silent server at the deadline
        response = urllib.request.urlopen(request, timeout=max(0.1, min(timeout, ends - time.monotonic())))
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
        if total is not None and total > bounds.max_bytes:
            raise _too_big(url, part, f"the server announces {total} bytes", bounds.max_bytes)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[: -len(".part")], disable=not progress, leave=False)
        # read1: whatever has arrived (up to chunk_size), so that a process killed mid-transfer has
        # every byte it received in `part` for the next call to resume from.
        read = getattr(response, "read1", None) or response.read
        pace = _Pace(bounds, received)
        with bar, open(part, mode) as out:
            try:
                for chunk in iter(lambda: read(chunk_size), b""):
                    out.write(chunk)
                    out.flush()
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > bounds.max_bytes:
                        out.close()
                        raise _too_big(url, part, f"the server sent over {received} bytes", bounds.max_bytes)
                    pace.check(received, ends)
            except _RETRY_ERRORS as err:
                out.flush()
                raise _Retryable(f"transfer cut after {received} bytes ({type(err).__name__})") from None
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received < total:
            raise _Retryable(f"transfer cut after {received} of {total} bytes")
        return total


class _Pace:
    """The rate and deadline checks of one attempt: every `window` seconds at least min_rate x window bytes."""

    def __init__(self, bounds: Bounds, received: int):
        self.bounds, self.mark, self.mark_bytes = bounds, time.monotonic(), received

    def check(self, received: int, ends: float) -> None:
        now = time.monotonic()
        if now >= ends:
            raise _Retryable(f"{received} bytes received by the deadline")
        if now - self.mark < self.bounds.window:
            return
        rate = (received - self.mark_bytes) / (now - self.mark)
        if rate < self.bounds.min_rate:
            raise _Retryable(f"the server sent {rate:.0f} bytes/s over {now - self.mark:.0f} s, less than the "
                             f"{self.bounds.min_rate:g} required (${MIN_RATE_ENV})")
        self.mark, self.mark_bytes = now, received


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
