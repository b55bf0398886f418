"""pytorch-pretrained-bert's ``file_utils``: a local cache of files fetched by URL.

    cached_path("https://host/vocab.txt") ─HEAD: ETag─► <cache>/sha256(url).sha256(etag)   (+ .json: url, etag)
    cached_path("./vocab.txt")            ─► "./vocab.txt" (it exists) or OSError

Files are fetched with bert.io.download (resumable, written under a temporary name and renamed when complete,
the size checked), so an interrupted transfer never leaves a corrupt cache entry. ``s3://`` URLs need
boto3, imported only for them. The cache folder is ``$PYTORCH_PRETRAINED_BERT_CACHE``, else the toolkit's
(``$BERT_TOOLKIT_CACHE`` or ``~/.cache/bert-toolkit``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from functools import wraps
from hashlib import sha256
from pathlib import Path
from typing import IO, Optional, Union
from urllib.parse import urlparse

from bert.io.download import USER_AGENT, DownloadError, download
from bert.io.fileio import atomic_path, atomic_write_text, scratch_folder
from bert.io.jsonfile import read_json
from bert.io.releases import cache_root

logger = logging.getLogger(__name__)

PYTORCH_PRETRAINED_BERT_CACHE = Path(os.getenv("PYTORCH_PRETRAINED_BERT_CACHE", str(cache_root())))
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
HEAD_TIMEOUT = 10.0  # seconds for the ETag request; without an answer the newest cached copy is used

PathLike = Union[str, os.PathLike]


def url_to_filename(url: str, etag: Optional[str] = None) -> str:
    """The cache file name of `url`: sha256(url) in hex, then ``.`` sha256(etag) when there is an ETag."""
    filename = sha256(url.encode("utf-8")).hexdigest()
    if etag:
        filename += "." + sha256(etag.encode("utf-8")).hexdigest()
    return filename


def filename_to_url(filename: str, cache_dir: Optional[PathLike] = None) -> tuple[str, Optional[str]]:
    """The (url, etag) a cache file was fetched from, read from its ``.json`` beside it.

    Raises:
        OSError: the file or its metadata is not in the cache.
        ValueError: the metadata is not the JSON object cached_path writes.
    """
    cache_path = os.path.join(str(cache_dir or PYTORCH_PRETRAINED_BERT_CACHE), filename)
    meta_path = cache_path + ".json"
    for path in (cache_path, meta_path):
        if not os.path.exists(path):
            raise EnvironmentError(f"file {path} not found")
    metadata = read_json(meta_path)  # a damaged file: one line naming it
    if not isinstance(metadata, dict) or "url" not in metadata or "etag" not in metadata:
        raise ValueError(f"{meta_path}: not a cache metadata file (expected {{\"url\": ..., \"etag\": ...}})")
    return metadata["url"], metadata["etag"]


def cached_path(url_or_filename: PathLike, cache_dir: Optional[PathLike] = None) -> str:
    """A local path for a URL (fetched into the cache once) or for a local file (which must exist).

    Args:
        url_or_filename: ``http(s)://`` or ``s3://`` URL, or a local path.
        cache_dir: the cache folder (default PYTORCH_PRETRAINED_BERT_CACHE).
    Returns:
        The path of the cached or local file.
    Raises:
        OSError: a local file that does not exist, or a fetch that failed (naming the URL).
        ValueError: something that is neither a URL nor a path.
    """
    url_or_filename = str(url_or_filename)
    parsed = urlparse(url_or_filename)
    if parsed.scheme in ("http", "https", "s3"):
        return get_from_cache(url_or_filename, cache_dir)
    if os.path.exists(url_or_filename):
        return url_or_filename
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a Windows drive letter is a path too
        raise EnvironmentError(f"file {url_or_filename} not found")
    raise ValueError(f"unable to parse {url_or_filename} as a URL or as a local path")


def split_s3_path(url: str) -> tuple[str, str]:
    """``s3://bucket/key/path`` -> ("bucket", "key/path").

    Raises:
        ValueError: no bucket or no key.
    """
    parsed = urlparse(url)
    if not parsed.netloc or not parsed.path:
        raise ValueError(f"bad s3 path {url}")
    return parsed.netloc, parsed.path[1:] if parsed.path.startswith("/") else parsed.path


def _boto3():
    try:
        import boto3
    except ImportError:
        raise EnvironmentError("s3:// URLs need boto3 (pip install boto3); http(s) URLs do not") from None
    return boto3


def s3_request(func):
    """Decorate an S3 call so that a missing object is an OSError naming the URL (as the original)."""

    @wraps(func)
    def wrapper(url, *args, **kwargs):
        try:
            return func(url, *args, **kwargs)
        except Exception as exc:  # botocore's ClientError, without importing botocore for everyone
            response = getattr(exc, "response", None)
            if isinstance(response, dict) and str(response.get("Error", {}).get("Code")) == "404":
                raise EnvironmentError(f"file {url} not found") from None
            raise

    return wrapper


@s3_request
def s3_etag(url: str) -> Optional[str]:
    """The ETag of an S3 object."""
    bucket_name, s3_path = split_s3_path(url)
    return _boto3().resource("s3").Object(bucket_name, s3_path).e_tag


@s3_request
def s3_get(url: str, temp_file: IO[bytes]) -> None:
    """Write an S3 object into an open binary file."""
    bucket_name, s3_path = split_s3_path(url)
    _boto3().resource("s3").Bucket(bucket_name).download_fileobj(s3_path, temp_file)


def http_get(url: str, temp_file: IO[bytes]) -> None:
    """Write the body of a GET of `url` into an open binary file, with a progress bar.

    Raises:
        OSError: the request failed (naming the URL and the HTTP status or the network error).
    """
    with scratch_folder(Path(tempfile.gettempdir()) / "bert-http-get") as tmp:  # removed after a kill too
        fetched = download(url, tmp / "body", retries=2)
        with open(fetched, "rb") as body:
            shutil.copyfileobj(body, temp_file)


def _http_etag(url: str) -> Optional[str]:
    """The ETag a HEAD request returns, or None (no ETag, no answer, an error status)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT) as response:
            return response.headers.get("ETag") if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def get_from_cache(url: str, cache_dir: Optional[PathLike] = None) -> str:
    """The cached copy of `url`, fetched first if the cache has none for its current ETag.

    Offline (no answer to the HEAD request), the newest cached copy of the URL is used.

    Returns:
        The cache file's path.
    Raises:
        OSError: the fetch failed (one line naming the URL).
    """
    cache_dir = Path(cache_dir or PYTORCH_PRETRAINED_BERT_CACHE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    etag = s3_etag(url) if url.startswith("s3://") else _http_etag(url)
    filename = url_to_filename(url, etag)
    cache_path = cache_dir / filename
    if not cache_path.exists() and etag is None:
        matching = sorted(f for f in fnmatch.filter(os.listdir(cache_dir), filename + ".*")
                          if not f.endswith((".json", ".part", ".tmp")))
        if matching:
            cache_path = cache_dir / matching[-1]
    if not cache_path.exists():
        logger.info("%s not found in cache, downloading to %s", url, cache_path)
        try:
            if url.startswith("s3://"):
                with atomic_path(cache_path) as tmp, open(tmp, "wb") as out:
                    s3_get(url, out)
            else:
                download(url, cache_path)
        except DownloadError as err:
            raise EnvironmentError(str(err)) from None
        atomic_write_text(Path(str(cache_path) + ".json"), json.dumps({"url": url, "etag": etag}))
    return str(cache_path)


def read_set_from_file(filename: PathLike) -> set[str]:
    """The distinct lines of a UTF-8 file, each without its trailing whitespace."""
    with open(filename, "r", encoding="utf-8") as file_:
        return {line.rstrip() for line in file_}


def get_file_extension(path: PathLike, dot: bool = True, lower: bool = True) -> str:
    """The extension of `path` (``.txt``; without the dot if not `dot`; lower-cased if `lower`)."""
    ext = os.path.splitext(str(path))[1]
    ext = ext if dot else ext[1:]
    return ext.lower() if lower else ext
