"""The heads' losses: cross-entropy with the ignored labels of both conventions, sequence classification's
choice of loss (as HF's problem_type), and the masked-LM loss on labelled positions only (the vocabulary
projection is the costliest matrix product of pre-training)."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from bert.model.plan import IGNORED_LABELS, Packing, tracing


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label -1 (the original's convention) and -100 (HF's)."""
    labels = labels.masked_fill(labels == IGNORED_LABELS[1], IGNORED_LABELS[0])
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORED_LABELS[0])


PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def sequence_classification_loss(logits: Tensor, labels: Tensor, problem_type: Optional[str] = None) -> Tensor:
    """The loss of [B, num_labels] logits, chosen as HF's BertForSequenceClassification chooses it.

    Args:
        logits: [B, num_labels].
        labels: class ids [B]; scores [B] (one label) or [B, num_labels] (regression); multi-hot [B, num_labels].
        problem_type: the config's: "regression" (MSE), "multi_label_classification" (binary cross-entropy
            with logits on multi-hot labels, the mean over every label), "single_label_classification"
            (cross-entropy, ignoring -1 and -100). None: regression for one label, multi-label for
            floating-point labels shaped as the logits, else single-label.
    """
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.is_floating_point() and labels.shape == logits.shape:
            problem_type = "multi_label_classification"
        else:
            problem_type = "single_label_classification"
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
        return F.mse_loss(logits.float(), labels.float().view_as(logits))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float().view_as(logits))
    if problem_type == "single_label_classification":
        return cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    raise ValueError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)} (or absent), got {problem_type!r}")


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
