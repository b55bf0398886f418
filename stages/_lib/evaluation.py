"""Section ``evaluate`` of params.yaml: how dev predictions are made and scored. Stage evaluate reads it whole;
stage predict reads its SQuAD keys, so that test answers are found exactly as dev answers are."""

from __future__ import annotations

from dataclasses import dataclass, field

from bert.engine.precision import PRECISIONS
from bert.io.settings import at_least, one_of


@dataclass(frozen=True)
class EvaluateParams:
    """Section ``evaluate``."""

    batch_size: int = field(metadata=at_least(1))
    precision: str = field(metadata=one_of(*PRECISIONS))
    n_best_size: int = field(metadata=at_least(1))  # SQuAD
    max_answer_length: int = field(metadata=at_least(1))  # SQuAD, in tokens
    null_score_diff_threshold: float  # SQuAD v2.0
    baseline_seed: int  # seeds the random head of the untrained baseline
