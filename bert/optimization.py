"""BertAdam, OpenAIAdam and their learning-rate schedules, as pytorch-pretrained-bert (0.6.2) has them.

BertAdam is Google's AdamWeightDecayOptimizer in PyTorch: Adam *without* bias correction, weight
decay added to the update (decoupled from the moments, not an L2 term in the loss), each
parameter's gradient clipped to max_grad_norm on its own, and the schedule applied inside the
optimizer. Per parameter, with g its gradient and n = (steps it already took):

    g <- g * min(1, max_grad_norm / (||g|| + 1e-6))
    m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
    p <- p - lr * schedule(n / t_total) * (m / (sqrt(v) + e) + weight_decay * p)

The schedule (bert.optim.schedules, exported here under the original names) reads the progress
*before* the step is counted, so with warmup the very first update has learning rate 0, as in the original.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import torch
from torch.optim.optimizer import required

from bert.optim.schedules import (  # noqa: F401  (the schedules' own module; here under their original names)
    SCHEDULES,
    ConstantLR,
    ScheduleFn,
    WarmupConstantSchedule,
    WarmupCosineSchedule,
    WarmupCosineWithHardRestartsSchedule,
    WarmupCosineWithWarmupRestartsSchedule,
    WarmupLinearSchedule,
    _LRSchedule,
    get_schedule_fn,
    make_schedule,
    schedule_from_dict,
    schedule_multiplier,
)

logger = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # as run_classifier.py


def _check_adam_arguments(owner: str, lr: float, b1: float, b2: float, e: float, ignored: dict) -> None:
    """The original's argument checks (its messages); unknown keyword arguments are ignored, with a warning."""
    if lr is not required and lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Invalid b1 parameter: {b1} - should be in [0.0, 1.0[")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"Invalid b2 parameter: {b2} - should be in [0.0, 1.0[")
    if not e >= 0.0:
        raise ValueError(f"Invalid epsilon value: {e} - should be >= 0.0")
    if ignored:
        logger.warning("%s: ignoring unknown arguments %s", owner, ", ".join(sorted(ignored)))


class BertAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay, per-parameter clipping and a built-in schedule."""

    def __init__(self, params: Iterable, lr: float = required, warmup: float = -1, t_total: int = -1,
                 schedule: str | None | _LRSchedule = "warmup_linear", b1: float = 0.9, b2: float = 0.999,
                 e: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0, *, foreach: bool = True,
                 fused: bool | None = None, **kwargs: Any):
        """Args:
        params: parameters or parameter groups (see param_groups_no_decay).
        lr: peak learning rate (may be left to the parameter groups).
        warmup: warmup fraction of t_total in [0, 1), -1 for none.
        t_total: total steps of the schedule, -1 for a constant learning rate.
        schedule: a name in SCHEDULES, or an _LRSchedule object (then warmup and t_total are its own);
            each parameter group keeps the object under "schedule".
        b1, b2: moment decay rates.
        e: added to sqrt(v).
        weight_decay: decoupled decay rate (0 for none).
        max_grad_norm: per-parameter clipping norm (<= 0: no clipping).
        foreach: update all tensors of a group at once (torch._foreach_*); False runs the
            original per-parameter loop. Both compute the same formulas.
        fused: with foreach, run the moment and parameter updates through torch's fused AdamW
            kernel (one pass over memory instead of about ten); None uses it where torch has it.
            The same formulas (see _update_fused); results differ from the loop by rounding only.
        kwargs: accepted and ignored, as the original does (a warning names them).
        """
        _check_adam_arguments("BertAdam", lr, b1, b2, e, kwargs)
        schedule = make_schedule(schedule, warmup, t_total)
        defaults = dict(lr=lr, schedule=schedule, b1=b1, b2=b2, e=e, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)
        self.foreach = foreach
        self.fused = hasattr(torch, "_fused_adamw_") if fused is None else fused

    def get_lr(self) -> list[float]:
        """The scheduled learning rate of each parameter's next update ([0] before any step, as the original)."""
        lrs = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    return [0]
                lrs.append(group["lr"] * group["schedule"].get_lr(state["step"]))
        return lrs

    def state_dict(self) -> dict:
        """torch's optimizer state, each group's schedule object as plain data (so that
        ``torch.load(weights_only=True)`` reads it back; load_state_dict turns it into an object again)."""
        state = super().state_dict()
        for group in state["param_groups"]:
            if isinstance(group.get("schedule"), _LRSchedule):
                group["schedule"] = group["schedule"].to_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state from state_dict(); a schedule saved as data becomes an object again (one of a
        class not in this module keeps the group's current object)."""
        current = [group["schedule"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, schedule in zip(self.param_groups, current):
            if isinstance(group["schedule"], dict):
                try:
                    group["schedule"] = schedule_from_dict(group["schedule"])
                except ValueError:
                    group["schedule"] = schedule

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient.

        Args:
            closure: optional callable re-evaluating the model and returning the loss.
        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError("BertAdam does not support sparse gradients (use dense embeddings)")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["next_v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            # The multiplier once per distinct step (parameters that missed updates have their own), which
            # also logs the schedule's beyond-t_total warning once a step, as the original.
            multipliers = {}
            for p in params:
                step = self.state[p]["step"]
                if step not in multipliers:
                    multipliers[step] = group["schedule"].get_lr(step)
            lrs = [group["lr"] * multipliers[self.state[p]["step"]] for p in params]
            if self.foreach and self.fused:
                for (_, _, lr), (same, _) in _buckets(params, lrs, by_lr=True):
                    self._update_fused(group, same, lr)
            elif self.foreach:
                for _, (device_params, device_lrs) in _buckets(params, lrs):
                    self._update_foreach(group, device_params, device_lrs)
            else:
                for p, lr in zip(params, lrs):
                    self._update_one(group, p, lr)
            for p in params:
                self.state[p]["step"] += 1
        return loss

    def _update_one(self, group: dict, p: torch.Tensor, lr: float) -> None:
        """The original per-parameter update."""
        grad, state = p.grad, self.state[p]
        next_m, next_v = state["next_m"], state["next_v"]
        if group["max_grad_norm"] > 0:  # what clip_grad_norm_(p, max_grad_norm) does, in place
            norm = torch.linalg.vector_norm(grad)
            grad.mul_(torch.clamp(group["max_grad_norm"] / (norm + 1e-6), max=1.0))
        next_m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
        next_v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
        update = next_m / (next_v.sqrt() + group["e"])
        if group["weight_decay"] > 0.0:
            update += group["weight_decay"] * p
        p.sub_(lr * update)

    @staticmethod
    def _clip_foreach(group: dict, grads: list[torch.Tensor]) -> None:
        """clip_grad_norm_(p, max_grad_norm) of every parameter on its own, in place."""
        if group["max_grad_norm"] > 0:
            norms = torch.stack(torch._foreach_norm(grads))
            coefs = torch.clamp(group["max_grad_norm"] / (norms + 1e-6), max=1.0)
            if grads[0].device.type != "cpu":
                torch._foreach_mul_(grads, list(coefs.unbind(0)))
                return
            # On the CPU reading the coefficients is free: multiply only the clipped gradients (x * 1 == x),
            # which saves a pass over most of them.
            clipped = [(g, c) for g, c in zip(grads, coefs.tolist()) if c < 1.0]  # fp32 values, exact as floats
            if clipped:
                torch._foreach_mul_([g for g, _ in clipped], [c for _, c in clipped])

    def _update_foreach(self, group: dict, params: list[torch.Tensor], lrs: list[float]) -> None:
        """The same update for many tensors of one device and dtype, a kernel per operation."""
        grads = [p.grad for p in params]
        ms = [self.state[p]["next_m"] for p in params]
        vs = [self.state[p]["next_v"] for p in params]
        self._clip_foreach(group, grads)
        torch._foreach_mul_(ms, group["b1"])
        torch._foreach_add_(ms, grads, alpha=1 - group["b1"])
        torch._foreach_mul_(vs, group["b2"])
        torch._foreach_addcmul_(vs, grads, grads, value=1 - group["b2"])
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, group["e"])
        updates = torch._foreach_div(ms, denom)
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(updates, torch._foreach_mul(params, group["weight_decay"]))
        torch._foreach_mul_(updates, lrs)
        torch._foreach_sub_(params, updates)

    def _update_fused(self, group: dict, params: list[torch.Tensor], lr: float) -> None:
        """The same update through torch's fused AdamW kernel, which computes

            p *= 1 - lr * wd;  m, v as above;  p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + e)

        with bias corrections c_i = 1 - b_i ** step. BertAdam has none: a step count of 2**20 makes
        b_i ** step underflow to 0, so c1 = c2 = 1 exactly, and p - lr * (m / (sqrt(v) + e) + wd * p)
        is what remains (the decay reads p before the update in both).
        """
        grads = [p.grad for p in params]
        self._clip_foreach(group, grads)
        no_bias_correction = torch.tensor(2.0**20, device=params[0].device)
        torch._fused_adamw_(
            params, grads, [self.state[p]["next_m"] for p in params], [self.state[p]["next_v"] for p in params],
            [], [no_bias_correction] * len(params), lr=lr, beta1=group["b1"], beta2=group["b2"],
            weight_decay=group["weight_decay"], eps=group["e"], amsgrad=False, maximize=False,
        )  # fmt: skip


class OpenAIAdam(torch.optim.Optimizer):
    """OpenAI GPT's Adam, as pytorch-pretrained-bert exports it beside BertAdam: Adam *with* bias correction,
    the schedule applied inside the optimizer, optional per-parameter clipping, and weight decay applied after
    the update to matrices only (and to vectors too with vector_l2). Per parameter, with n = steps taken
    including this one:

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr_n sqrt(1 - b2^n) / (1 - b1^n) * m / (sqrt(v) + e);    p <- p - lr_n * weight_decay * p

    where lr_n = lr * schedule(n / t_total).
    """

    def __init__(self, params: Iterable, lr: float = required, schedule: str | None | _LRSchedule = "warmup_linear",
                 warmup: float = -1, t_total: int = -1, b1: float = 0.9, b2: float = 0.999, e: float = 1e-8,
                 weight_decay: float = 0, vector_l2: bool = False, max_grad_norm: float = -1, **kwargs: Any):
        _check_adam_arguments("OpenAIAdam", lr, b1, b2, e, kwargs)
        schedule = make_schedule(schedule, warmup, t_total, owner="OpenAIAdam")
        defaults = dict(lr=lr, schedule=schedule, b1=b1, b2=b2, e=e, weight_decay=weight_decay,
                        vector_l2=vector_l2, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    get_lr = BertAdam.get_lr
    state_dict = BertAdam.state_dict
    load_state_dict = BertAdam.load_state_dict

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss, or None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise ValueError("OpenAIAdam does not support sparse gradients (use dense embeddings)")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["b1"], group["b2"]
                state["step"] += 1
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["e"])
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                lr_scheduled = group["lr"] * group["schedule"].get_lr(state["step"])
                step_size = lr_scheduled * math.sqrt(bias_correction2) / bias_correction1
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if (p.dim() > 1 or group["vector_l2"]) and group["weight_decay"] > 0:
                    p.add_(p, alpha=-lr_scheduled * group["weight_decay"])
        return loss


def _buckets(params: list[torch.Tensor], lrs: list[float], by_lr: bool = False):
    """Yield (key, (params, lrs)) per (device, dtype[, lr]): the unit torch's foreach and fused ops take
    (the fused kernel takes one learning rate; a parameter that missed steps has its own)."""
    buckets: dict[tuple, tuple[list, list]] = {}
    for p, lr in zip(params, lrs):
        bucket = buckets.setdefault((p.device, p.dtype, lr if by_lr else None), ([], []))
        bucket[0].append(p)
        bucket[1].append(lr)
    yield from buckets.items()


def param_groups_no_decay(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: with weight decay, and without it for biases and LayerNorm weights.

    Args:
        model: the model (parameter names decide: any name containing "bias", "LayerNorm.bias"
            or "LayerNorm.weight" gets no decay, as Google's and pytorch-pretrained-bert's scripts).
        weight_decay: the decay of the first group.
    Returns:
        [{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}];
        a group with no parameters is left out.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if any(nd in name for nd in NO_DECAY) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
