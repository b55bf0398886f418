"""The training settings (TrainConfig) and what a training run returns (FitResult)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bert.engine.precision import PRECISIONS

OPTIMIZERS = ("bertadam", "adamw", "lamb")

# Settings that change the training trajectory: a checkpoint written with other values cannot be
# resumed. (grad_accum_steps and the world size do not change it, by construction.)
TRAJECTORY_KEYS = ("epochs", "learning_rate", "global_batch_size", "warmup_proportion",
                   "weight_decay", "max_grad_norm", "precision", "loss_scale", "optimizer",
                   "schedule", "seed", "group_by_length")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters, independent of the task and of the number of processes.

    global_batch_size is the number of examples per optimizer step; each process gets
    global_batch_size / (grad_accum_steps * world_size) examples per micro-batch.
    loss_scale: 0 is dynamic fp16 loss scaling, > 0 a static scale (fp16 only).
    checkpoint_every: optimizer steps between checkpoints (0: none); resume: continue from the
    newest checkpoint in the work folder when there is one.
    """

    epochs: float = 3.0
    learning_rate: float = 5e-5
    global_batch_size: int = 32
    grad_accum_steps: int = 1
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    loss_scale: float = 0.0
    optimizer: str = "bertadam"
    schedule: str = "warmup_linear"
    seed: int = 42
    log_every: int = 10
    checkpoint_every: int = 0
    resume: bool = True
    group_by_length: bool = True
    num_workers: int = 0
    min_loss_scale: float = 1.0
    keep_checkpoints: int = 1

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(name: str, low: int) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        def is_num(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        check(is_num("epochs") and self.epochs > 0, "epochs", "a positive number")
        check(is_num("learning_rate") and self.learning_rate > 0, "learning_rate", "a positive number")
        for name in ("global_batch_size", "grad_accum_steps", "log_every", "keep_checkpoints"):
            check(is_int(name, 1), name, "a positive integer")
        for name in ("checkpoint_every", "num_workers", "seed"):
            check(is_int(name, 0), name, "a non-negative integer")
        check(is_num("warmup_proportion") and 0 <= self.warmup_proportion < 1, "warmup_proportion",
              "in [0, 1)")
        for name in ("weight_decay", "max_grad_norm", "loss_scale", "min_loss_scale"):
            check(is_num(name) and getattr(self, name) >= 0, name, "a non-negative number")
        check(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        check(isinstance(self.schedule, str), "schedule", "a schedule name")
        for name in ("resume", "group_by_length"):
            check(isinstance(getattr(self, name), bool), name, "true or false")
        if self.loss_scale > 0 and self.precision != "fp16":
            raise ValueError(f"TrainConfig.loss_scale={self.loss_scale} is for precision fp16 only, "
                             f"not {self.precision}")

    def per_device_batch_size(self, world_size: int) -> int:
        """Examples per process per micro-batch.

        Raises:
            ValueError: global_batch_size is not a multiple of grad_accum_steps x world_size.
        """
        shards = self.grad_accum_steps * world_size
        if self.global_batch_size % shards:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be divisible by grad_accum_steps "
                f"{self.grad_accum_steps} x world size {world_size} = {shards}")
        return self.global_batch_size // shards

    def steps(self, num_items: int) -> tuple[int, int]:
        """(optimizer steps per epoch, total optimizer steps), both rounded up."""
        per_epoch = math.ceil(num_items / self.global_batch_size)
        # round() first: 3 * 0.1-style float noise must not add a step.
        return per_epoch, math.ceil(round(self.epochs * per_epoch, 6))

    def trajectory(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TRAJECTORY_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FitResult:
    """What fit returns: steps done in total, time and throughput of this call, the log history."""

    global_steps: int
    seconds: float
    sequences_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
