"""The heads' losses: cross-entropy with the ignored labels of both conventions, and the masked-LM loss on
labelled positions only (the vocabulary projection is the costliest matrix product of pre-training)."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from bert.model.plan import IGNORED_LABELS, Packing, tracing


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label -1 (the original's convention) and -100 (HF's)."""
    labels = labels.masked_fill(labels == IGNORED_LABELS[1], IGNORED_LABELS[0])
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORED_LABELS[0])


def masked_lm_loss(predictions: nn.Module, sequence_output: Tensor, labels: Tensor,
                    packing: Optional[Packing]) -> Tensor:
    """The masked-LM loss; the vocabulary projection runs on the labelled positions only where they are
    known without reading the device (given by the packing, or found on the CPU)."""
    labels = labels.reshape(-1)  # [B * T]
    picked = None if packing is None else packing.labelled
    if picked is None and labels.device.type == "cpu" and not tracing():
        picked = ((labels != IGNORED_LABELS[0]) & (labels != IGNORED_LABELS[1])).nonzero().squeeze(1)
    if picked is None:
        return cross_entropy(predictions(sequence_output).flatten(0, -2), labels)  # [B * T, V]
    hidden = sequence_output.flatten(0, -2).index_select(0, picked)  # [M, H]
    return F.cross_entropy(predictions(hidden).float(), labels.index_select(0, picked))


def may_skip_padding(attention_mask: Optional[Tensor], labels: Optional[Tensor], packing: Optional[Packing]) -> bool:
    """Whether a loss may skip padding: no label (other than -1/-100) sits on a padded position. A packing
    from the data loader vouches for it; otherwise only CPU tensors are read."""
    if packing is not None or attention_mask is None or labels is None:
        return True
    if labels.device.type != "cpu" or tracing():
        return False
    counted = (labels != IGNORED_LABELS[0]) & (labels != IGNORED_LABELS[1])
    return not bool((counted & (attention_mask == 0)).any())
