"""Resumable training checkpoints: written atomically, loaded without unpickling code.

A checkpoint is one ``torch.save`` file, ``work_dir/checkpoints/step-00000040.pt``:

    {"format": 1, "global_step", "epoch", "step_in_epoch", "model", "optimizer", "scheduler",
     "precision", "rng": [one dict per rank], "train_config": {...}, "history": [...]}

Everything in it is a tensor, a number, a string, a list or a dict, so ``torch.load(weights_only=True)``
reads it: RNG states are stored as tensors and lists rather than as the tuples random/numpy return.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bert.formats.safeload import torch_load_weights_only
from bert.io.fileio import atomic_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


def get_rng_state() -> dict[str, torch.Tensor]:
    """This process's python, numpy, torch and CUDA generator states as a flat dict of tensors.

    Tensors (not the tuples random/numpy return) so that weights_only loading reads them and so that
    ranks can all-gather them: every entry has the same shape on every rank.
    """
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        # version, whether a cached gauss value exists, that value
        "python_meta": torch.tensor([py_version, py_gauss is not None, py_gauss or 0.0],
                                    dtype=torch.float64),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_meta": torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "cuda": torch.stack(cuda) if cuda else torch.zeros(0, dtype=torch.uint8),
    }


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what get_rng_state returned."""
    version, has_gauss, gauss = state["python_meta"].tolist()
    random.setstate((int(version), tuple(state["python_state"].tolist()),
                     gauss if has_gauss else None))
    pos, np_has_gauss, np_gauss = state["numpy_meta"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos),
                         int(np_has_gauss), float(np_gauss)))
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state["cuda"].numel():
        torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))


def checkpoint_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "checkpoints"


def list_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """(global step, path) of the complete checkpoints under work_dir, oldest first."""
    folder = checkpoint_dir(work_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(work_dir: Path, state: dict[str, Any], keep: int = 1) -> Path:
    """Write `state` as the checkpoint of its global step, then drop all but the newest `keep`.

    Args:
        work_dir: the training folder (checkpoints go to work_dir/checkpoints/).
        state: the checkpoint dict (must hold "global_step").
        keep: how many checkpoints to keep.
    Returns:
        The checkpoint's path.
    """
    path = checkpoint_dir(work_dir) / f"step-{int(state['global_step']):08d}.pt"
    state = {"format": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for _, old in list_checkpoints(work_dir)[:-keep]:
        old.unlink(missing_ok=True)
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint (no pickled code is ever executed).

    Raises:
        ValueError: the file is not a readable checkpoint of this format.
    """
    state = torch_load_weights_only(path, "training checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: expected a training checkpoint of format {FORMAT_VERSION}")
    for key in ("global_step", "epoch", "step_in_epoch", "model", "optimizer", "rng"):
        if key not in state:
            raise ValueError(f"{path}: checkpoint lacks the key {key!r}")
    return state


def latest_checkpoint(work_dir: Path) -> Optional[Path]:
    """The newest checkpoint under work_dir, or None."""
    found = list_checkpoints(work_dir)
    return found[-1][1] if found else None
