"""Evaluation during training: the evaluator the loop calls, and which step's weights win.

Every ``eval_every`` optimizer steps (and at the last one) the loop hands the model to an Evaluator on
rank 0; its primary figure (higher is better, as every task's headline metric is) feeds a Selection,
which remembers the best step and says when ``patience`` evaluations in a row brought no improvement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:  # the config reads SELECT without torch
    from torch import nn

SELECT = ("last", "best")  # TrainConfig.select: the weights written at the end


class Evaluator(Protocol):
    """Scores a model on held-out data; called on rank 0 only, under a forked RNG (training's dropout
    stream is untouched), with the unwrapped model on its training device."""

    primary: str  # the key of __call__'s result that selects, e.g. "dev_f1"

    def __call__(self, model: "nn.Module") -> dict[str, float]:
        """The figures of `model` now, e.g. {"dev_acc": 84.1, "dev_f1": 88.9}; the model is left as it came."""
        ...


@dataclass
class Selection:
    """The best evaluation so far and the count since; ties keep the earlier step (no improvement).

    patience: evaluations in a row without improvement after which training stops (0: never).
    """

    patience: int = 0
    best_value: Optional[float] = None
    best_step: int = -1
    since_best: int = 0  # evaluations since the best one
    evaluations: int = 0

    def update(self, step: int, value: float) -> bool:
        """Count the evaluation of `step`; returns whether it is the new best.

        A value that is not a number (NaN) never improves: a diverging run does not win by it.
        """
        self.evaluations += 1
        if not math.isnan(value) and (self.best_value is None or value > self.best_value):
            self.best_value, self.best_step, self.since_best = float(value), step, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether `patience` evaluations in a row brought no improvement."""
        return self.patience > 0 and self.since_best >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
