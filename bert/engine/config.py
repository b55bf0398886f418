"""The training settings (TrainConfig) and what a training run returns (FitResult)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from bert.engine.precision import PRECISIONS
from bert.engine.selection import SELECT
from bert.io.settings import SettingError, above, at_least, check_fields, one_of, proportion, seed_range
from bert.optim.schedules import SCHEDULES

OPTIMIZERS = ("bertadam", "adamw", "lamb")

# Settings that change the training trajectory, or which step ends it and whose weights it keeps (the
# evaluation keys): a checkpoint written with other values cannot be resumed. (grad_accum_steps and the
# world size do not change it, by construction; log_every, checkpoint_every, resume and num_workers change
# how a run is watched, not what it computes.)
TRAJECTORY_KEYS = ("epochs", "learning_rate", "global_batch_size", "warmup_proportion",
                   "weight_decay", "max_grad_norm", "precision", "loss_scale", "optimizer",
                   "schedule", "seed", "group_by_length", "eval_every", "select", "patience")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters, independent of the task and of the number of processes.

    Each field is checked when the config is made (bert.io.settings: its type, and the range or choices in
    its metadata); a bad one is a SettingError naming it. The pipeline reads params.yaml's finetune and
    pretrain sections into this class, so the same checks hold there.

    global_batch_size is the number of examples per optimizer step; each process gets
    global_batch_size / (grad_accum_steps * world_size) examples per micro-batch.
    loss_scale: 0 is dynamic fp16 loss scaling, > 0 a static scale (fp16 only).
    checkpoint_every: optimizer steps between checkpoints (0: none); resume: continue from the
    newest checkpoint in the work folder when there is one.
    eval_every: optimizer steps between evaluations by fit's evaluator (and one at the last step; 0: none);
    select: the weights a run ends with, the last step's or the best evaluated one's; patience: evaluations
    in a row without improvement after which training stops early (0: never). See selection.py.
    """

    epochs: float = field(default=3.0, metadata=above(0))
    learning_rate: float = field(default=5e-5, metadata=above(0))
    global_batch_size: int = field(default=32, metadata=at_least(1))
    grad_accum_steps: int = field(default=1, metadata=at_least(1))
    warmup_proportion: float = field(default=0.1, metadata=proportion())
    weight_decay: float = field(default=0.01, metadata=at_least(0))
    max_grad_norm: float = field(default=1.0, metadata=at_least(0))
    precision: str = field(default="fp32", metadata=one_of(*PRECISIONS))
    loss_scale: float = field(default=0.0, metadata=at_least(0))
    optimizer: str = field(default="bertadam", metadata=one_of(*OPTIMIZERS))
    schedule: str = field(default="warmup_linear", metadata=one_of(*(name for name in SCHEDULES if name)))
    seed: int = field(default=42, metadata=seed_range())
    log_every: int = field(default=10, metadata=at_least(1))
    checkpoint_every: int = field(default=0, metadata=at_least(0))
    resume: bool = True
    group_by_length: bool = True
    num_workers: int = field(default=0, metadata=at_least(0))
    min_loss_scale: float = field(default=1.0, metadata=at_least(0))
    keep_checkpoints: int = field(default=1, metadata=at_least(1))
    eval_every: int = field(default=0, metadata=at_least(0))
    select: str = field(default="last", metadata=one_of(*SELECT))
    patience: int = field(default=0, metadata=at_least(0))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.loss_scale > 0 and self.precision != "fp16":
            raise SettingError("loss_scale", f"{self.loss_scale} is for precision fp16 only, not {self.precision}",
                               type(self).__name__)
        for key, asks in (("select", self.select == "best"), ("patience", self.patience > 0)):
            if asks and not self.eval_every:
                raise SettingError(key, f"{getattr(self, key)} needs evaluations during training: set eval_every "
                                   "to the optimizer steps between them (it is 0)", type(self).__name__)

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
    # With an evaluator (rank 0): {"metric", "select", "selected_step", "best_step", "best_value",
    # "evaluations", "patience", "stopped_early"}; else None.
    selection: Optional[dict[str, Any]] = None
