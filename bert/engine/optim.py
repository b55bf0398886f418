"""The optimizer and learning-rate schedule of a run: BertAdam (as the seed), torch AdamW, or LAMB.

BertAdam applies its schedule, weight decay and per-parameter gradient clipping itself, as
pytorch-pretrained-bert did. AdamW and LAMB (large-batch pre-training, bert/optim/lamb.py) get the same
schedule through LambdaLR and the engine clips the global gradient norm. All skip decay on biases
and LayerNorm weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from bert.engine.config import TrainConfig


@dataclass
class OptimizerBundle:
    """The optimizer, its LambdaLR scheduler (AdamW only), and the schedule's multiplier function."""

    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.LambdaLR]
    schedule_fn: Callable[[int], float]
    clip_global_norm: float  # > 0: the engine clips the global norm before the step (AdamW)

    def learning_rate(self, base_lr: float, updates_before: int) -> float:
        """The learning rate of the update that follows `updates_before` applied updates."""
        return base_lr * self.schedule_fn(updates_before)


def build_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int) -> OptimizerBundle:
    """Create the run's optimizer over `model`'s parameters.

    Args:
        model: the unwrapped model (its parameter names decide weight decay).
        cfg: the training settings.
        total_steps: optimizer steps of the whole run (the schedule's t_total).
    Returns:
        An OptimizerBundle.
    """
    from bert.optimization import BertAdam, get_schedule_fn, param_groups_no_decay

    groups = param_groups_no_decay(model, cfg.weight_decay)
    schedule_fn = get_schedule_fn(cfg.schedule, cfg.warmup_proportion, total_steps)
    if cfg.optimizer == "bertadam":
        opt = BertAdam(groups, lr=cfg.learning_rate, warmup=cfg.warmup_proportion, t_total=total_steps,
                       schedule=cfg.schedule, weight_decay=cfg.weight_decay,
                       max_grad_norm=cfg.max_grad_norm)
        return OptimizerBundle(opt, None, schedule_fn, 0.0)
    # eps 1e-6 as BertAdam and Google's AdamWeightDecayOptimizer; the groups carry their decay.
    if cfg.optimizer == "lamb":
        from bert.optim.lamb import Lamb

        opt: torch.optim.Optimizer = Lamb(groups, lr=cfg.learning_rate, eps=1e-6,
                                          weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, eps=1e-6, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule_fn)
    return OptimizerBundle(opt, scheduler, schedule_fn, cfg.max_grad_norm)
