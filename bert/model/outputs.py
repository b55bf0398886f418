"""What the models return when they return more than one tensor: named tuples, so that ``a, b = model(...)``
works as with the original's plain tuples and ``out.pooled_output`` reads better.

Notation: B batch, T sequence length, H hidden size, A attention heads, V vocabulary size.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class BertModelOutput(NamedTuple):
    """What BertModel returns: all layers (or the last one) and the pooled [CLS] vector."""

    encoded_layers: list[Tensor] | Tensor  # each [B, T, H]
    pooled_output: Tensor  # [B, H]


class BertModelOutputWithAttentions(NamedTuple):
    encoded_layers: list[Tensor] | Tensor
    pooled_output: Tensor
    attentions: list[Tensor]  # one [B, A, T, T] tensor per layer


class QuestionAnsweringLogits(NamedTuple):
    start_logits: Tensor  # [B, T]
    end_logits: Tensor  # [B, T]


class PreTrainingLogits(NamedTuple):
    prediction_scores: Tensor  # [B, T, V]
    seq_relationship_score: Tensor  # [B, 2]
