"""The one content fingerprint: what a file or a folder holds, byte for byte.

    fingerprint(path) -> "sha256:4f0c..."    # a file: its bytes; a folder: every file's name and bytes
    file_digests(folder) -> {"config.json": "9a1e...", ...}
    changed_files(folder, digests) -> ["model.safetensors"]   # what differs from digests (missing: too)

A training run resumes its checkpoints only when the fingerprints of its inputs (the feature or instance
files, the start model) are those it started with: corrected labels, another generated dataset with the
same counts or another start model are another run, whatever their manifests or names say.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bert.io.fileio import sha256_of


def fingerprint(path: str | os.PathLike) -> str:
    """The sha256 of what `path` holds.

    Args:
        path: a file, or a folder: its files, in any depth, by their names relative to it (links followed;
            hidden entries, such as a writer's temporaries, left out).
    Returns:
        "sha256:" and the hex digest; a folder's is the digest of its lines "<relative name> <sha256>".
    Raises:
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if not path.is_dir():
        return f"sha256:{sha256_of(path)}"
    digest = hashlib.sha256()
    for file in sorted(_files(path)):
        digest.update(f"{file.relative_to(path).as_posix()} {sha256_of(file)}\n".encode("utf-8"))
    return f"sha256:{digest.hexdigest()}"


def file_digests(folder: str | os.PathLike) -> dict[str, str]:
    """{name relative to `folder`: hex sha256} of each file `fingerprint` reads in it."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): sha256_of(f) for f in sorted(_files(folder))}


def changed_files(folder: str | os.PathLike, digests: dict[str, str]) -> list[str]:
    """The names in `digests` whose file under `folder` is missing or holds other bytes, sorted."""
    folder = Path(folder)
    return sorted(name for name, digest in digests.items()
                  if not (folder / name).is_file() or sha256_of(folder / name) != digest)


def _files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root) / name for name in files if not name.startswith("."))
    return found
