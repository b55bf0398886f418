"""BertAdam and its learning-rate schedules, as pytorch-pretrained-bert (0.6.x) has them.

BertAdam is Google's AdamWeightDecayOptimizer in PyTorch: Adam *without* bias correction, weight
decay added to the update (decoupled from the moments, not an L2 term in the loss), each
parameter's gradient clipped to max_grad_norm on its own, and the schedule applied inside the
optimizer. Per parameter, with g its gradient and n = (steps it already took):

    g <- g * min(1, max_grad_norm / (||g|| + 1e-6))
    m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
    p <- p - lr * schedule(n / t_total) * (m / (sqrt(v) + e) + weight_decay * p)

The schedule reads the progress *before* the step is counted, so with warmup the very first update
has learning rate 0, as in the original.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Iterable

import torch

logger = logging.getLogger(__name__)

SCHEDULES = ("warmup_linear", "warmup_cosine", "warmup_constant", "none")
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # as run_classifier.py


def schedule_multiplier(name: str, progress: float, warmup: float, cycles: float = 0.5) -> float:
    """The learning-rate multiplier at `progress` (fraction of t_total already done).

    Args:
        name: one of SCHEDULES.
        progress: steps taken / t_total (may exceed 1).
        warmup: warmup fraction in [0, 1).
        cycles: cosine cycles over the post-warmup part (warmup_cosine only).
    Returns:
        warmup_linear: x/warmup during warmup, then max((x-1)/(warmup-1), 0);
        warmup_cosine: x/warmup, then 0.5 (1 + cos(2 pi cycles (x-warmup)/(1-warmup)));
        warmup_constant: x/warmup, then 1; none: 1.
    """
    if name == "none":
        return 1.0
    if progress < warmup:
        return progress / warmup
    if name == "warmup_linear":
        return max((progress - 1.0) / (warmup - 1.0), 0.0)
    if name == "warmup_cosine":
        progress = (progress - warmup) / (1.0 - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress))
    if name == "warmup_constant":
        return 1.0
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


@dataclasses.dataclass(frozen=True)
class ScheduleFn:
    """A schedule as a function of the step: callable for torch's LambdaLR, and picklable.

    ``fn(step)`` is the multiplier for the update that follows `step` applied updates, so
    ``LambdaLR(AdamW(...), fn)`` gives AdamW exactly BertAdam's learning rates.
    """

    name: str
    warmup: float
    t_total: int
    cycles: float = 0.5

    def __call__(self, step: int) -> float:
        if self.t_total < 0:  # no t_total: no schedule, as the original
            return 1.0
        return schedule_multiplier(self.name, step / self.t_total, self.warmup, self.cycles)

    def past_total(self, step: int) -> bool:
        """Whether `step` is beyond t_total for a schedule whose value then no longer makes sense."""
        return self.name in ("warmup_linear", "warmup_cosine") and 0 < self.t_total < step


def get_schedule_fn(name: str | None, warmup: float, t_total: int, cycles: float = 0.5) -> ScheduleFn:
    """Validated schedule function of the step (LambdaLR-compatible).

    Args:
        name: "warmup_linear", "warmup_cosine", "warmup_constant", "none" (None = "none").
        warmup: fraction of t_total in [0, 1), or -1 for none.
        t_total: total optimizer steps; -1 disables the schedule.
        cycles: for warmup_cosine.
    Returns:
        ScheduleFn; fn(step) is the learning-rate multiplier.
    Raises:
        ValueError: unknown name, warmup outside [0, 1) and not -1, or t_total 0.
    """
    name = "none" if name is None else name
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
    if not (0.0 <= warmup < 1.0 or warmup == -1):
        raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
    if t_total == 0:
        raise ValueError("t_total=0: the schedule needs the number of steps (or -1 for none)")
    return ScheduleFn(name, float(max(warmup, 0.0)), int(t_total), float(cycles))


class BertAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay, per-parameter clipping and a built-in schedule."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        warmup: float = -1,
        t_total: int = -1,
        schedule: str | None = "warmup_linear",
        b1: float = 0.9,
        b2: float = 0.999,
        e: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float = 1.0,
        foreach: bool = True,
        fused: bool | None = None,
    ):
        """Args:
        params: parameters or parameter groups (see param_groups_no_decay).
        lr: peak learning rate.
        warmup: warmup fraction of t_total in [0, 1), -1 for none.
        t_total: total steps of the schedule, -1 for a constant learning rate.
        schedule: one of SCHEDULES.
        b1, b2: moment decay rates.
        e: added to sqrt(v).
        weight_decay: decoupled decay rate (0 for none).
        max_grad_norm: per-parameter clipping norm (<= 0: no clipping).
        foreach: update all tensors of a group at once (torch._foreach_*); False runs the
            original per-parameter loop. Both compute the same formulas.
        fused: with foreach, run the moment and parameter updates through torch's fused AdamW
            kernel (one pass over memory instead of about ten); None uses it where torch has it.
            The same formulas (see _update_fused); results differ from the loop by rounding only.
        """
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid b1 parameter: {b1} - should be in [0.0, 1.0[")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid b2 parameter: {b2} - should be in [0.0, 1.0[")
        if not e >= 0.0:
            raise ValueError(f"Invalid epsilon value: {e} - should be >= 0.0")
        get_schedule_fn(schedule, warmup, t_total)  # validates
        if t_total < 0 and schedule not in (None, "none"):
            logger.warning("t_total value of %s results in schedule not being applied", t_total)
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e,
                        weight_decay=weight_decay, max_grad_norm=max_grad_norm)  # fmt: skip
        super().__init__(params, defaults)
        self.foreach = foreach
        self.fused = hasattr(torch, "_fused_adamw_") if fused is None else fused
        self._warned_past_total = False

    @staticmethod
    def _schedule(group: dict) -> ScheduleFn:
        return get_schedule_fn(group["schedule"], group["warmup"], group["t_total"])

    def get_lr(self) -> list[float]:
        """The scheduled learning rate of each parameter's next update ([0] before any step, as the original)."""
        lrs = []
        for group in self.param_groups:
            schedule = self._schedule(group)
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    return [0.0]
                lrs.append(group["lr"] * schedule(state["step"]))
        return lrs

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
            schedule = self._schedule(group)
            lrs = [group["lr"] * schedule(self.state[p]["step"]) for p in params]
            if not self._warned_past_total and any(schedule.past_total(self.state[p]["step"]) for p in params):
                logger.warning(
                    "Training beyond specified 't_total' (%d steps). Learning rate multiplier set to %s. "
                    "Please set 't_total' of BertAdam correctly.", group["t_total"], schedule(group["t_total"] + 1),
                )  # fmt: skip
                self._warned_past_total = True
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
