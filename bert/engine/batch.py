"""A batch: the keyword arguments of one model call, as the collate functions make them, on its device."""

from __future__ import annotations

from typing import Any

import torch

from bert.model.plan import Packing

Batch = dict[str, Any]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move a batch's tensors (and its Packing) to `device`; other values pass through."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, (torch.Tensor, Packing)) else v
            for k, v in batch.items()}
