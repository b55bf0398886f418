"""torch.load that never runs pickled code and fails in one line."""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch's can span paragraphs), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def torch_load_weights_only(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU.

    Args:
        path: the file.
        what: what the file should be, for the error ("weights file", "training checkpoint").
    Raises:
        ValueError: one line naming the file; for a pickle that would run code, the call it names.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused something: say what
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        refused = f"it would call {found.group(1)}" if found else "it holds objects other than tensors"
        raise ValueError(f"{path}: not a readable {what}: refused, {refused} (loading never runs pickled "
                         "code, only tensors are read; re-save it from a trusted copy)") from None
    except Exception as err:  # truncated or foreign file: the same thing to the user
        raise ValueError(f"{path}: not a readable {what} ({first_line(err)})") from None
