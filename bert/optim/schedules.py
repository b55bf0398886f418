"""The learning-rate schedules of BertAdam and OpenAIAdam, as pytorch-pretrained-bert (0.6.2) has them.

A schedule is the multiplier of the learning rate as a function of the progress (steps taken / t_total):
the original's classes (same names, arguments, formulas and warnings), the table of their names
(SCHEDULES), and the same figures as plain functions of the step for torch's LambdaLR (ScheduleFn).
bert.optimization exports them all under their original names. Pure Python: no torch.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math

logger = logging.getLogger("bert.optimization")  # the warnings belong to the public module, as the original's


class _LRSchedule(abc.ABC):
    """Parent of every schedule: ``get_lr(step)`` is the multiplier at progress step / t_total.

    Args:
        warmup: the fraction of t_total spent warming up linearly from 0, in [0, 1), or -1 for none.
        t_total: the planned number of updates; below 0, no schedule (the multiplier is always 1).
    """

    warn_t_total = False  # True where going beyond t_total makes no sense (the rate is then 0 or rising)

    def __init__(self, warmup: float = 0.002, t_total: float = -1, **kw):
        super().__init__(**kw)
        if t_total < 0:
            logger.warning("t_total value of %s results in schedule not being applied", t_total)
        if not 0.0 <= warmup < 1.0 and not warmup == -1:
            raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
        warmup = max(warmup, 0.0)
        self.warmup, self.t_total = float(warmup), float(t_total)
        self.warned_for_t_total_at_progress = -1

    def get_lr(self, step: float, nowarn: bool = False) -> float:
        """The multiplier for the update after `step` updates; logs a warning each time training goes
        further beyond t_total with a schedule whose warn_t_total is set (unless `nowarn`)."""
        if self.t_total < 0:
            return 1.0
        progress = float(step) / self.t_total
        ret = self.get_lr_(progress)
        if not nowarn and self.warn_t_total and progress > 1.0 and progress > self.warned_for_t_total_at_progress:
            logger.warning("Training beyond specified 't_total'. Learning rate multiplier set to %s. "
                           "Please set 't_total' of %s correctly.", ret, type(self).__name__)
            self.warned_for_t_total_at_progress = progress
        return ret

    @abc.abstractmethod
    def get_lr_(self, progress: float) -> float:
        """The multiplier at `progress` (0 to 1, or more beyond t_total)."""
        return 1.0

    def to_dict(self) -> dict:
        """The schedule as plain data (what BertAdam.state_dict stores instead of the object)."""
        return {"class": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("warned")}}


class ConstantLR(_LRSchedule):
    """Always 1."""

    def get_lr_(self, progress: float) -> float:
        return 1.0


class WarmupCosineSchedule(_LRSchedule):
    """Linear warmup from 0 to 1, then 0.5 (1 + cos(2 pi cycles x)) over the rest (x from 0 to 1): with the
    default cycles=0.5, a cosine decay from 1 to 0."""

    warn_t_total = True

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 0.5, **kw):
        super().__init__(warmup=warmup, t_total=t_total, **kw)
        self.cycles = cycles

    def get_lr_(self, progress: float) -> float:
        if progress < self.warmup:
            return progress / self.warmup
        progress = (progress - self.warmup) / (1 - self.warmup)  # progress after warmup
        return 0.5 * (1.0 + math.cos(math.pi * self.cycles * 2 * progress))


class WarmupCosineWithHardRestartsSchedule(WarmupCosineSchedule):
    """Linear warmup, then `cycles` cosine decays from 1 to 0, each restarting at 1 (cycles >= 1)."""

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 1.0, **kw):
        super().__init__(warmup=warmup, t_total=t_total, cycles=cycles, **kw)
        if not cycles >= 1.0:
            raise ValueError(f"Invalid cycles: {cycles} - should be >= 1")

    def get_lr_(self, progress: float) -> float:
        if progress < self.warmup:
            return progress / self.warmup
        progress = (progress - self.warmup) / (1 - self.warmup)  # progress after warmup
        return 0.5 * (1.0 + math.cos(math.pi * ((self.cycles * progress) % 1)))


class WarmupCosineWithWarmupRestartsSchedule(WarmupCosineWithHardRestartsSchedule):
    """Training split into `cycles` equal parts, each a linear warmup (the first `warmup` of the part)
    then a cosine decay from 1 to 0 (warmup * cycles < 1)."""

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 1.0, **kw):
        if not warmup * cycles < 1.0:
            raise ValueError(f"Invalid warmup: {warmup} with {cycles} cycles - warmup * cycles should be < 1")
        warmup = warmup * cycles if warmup >= 0 else warmup
        super().__init__(warmup=warmup, t_total=t_total, cycles=cycles, **kw)

    def get_lr_(self, progress: float) -> float:
        progress = progress * self.cycles % 1.0
        if progress < self.warmup:
            return progress / self.warmup
        progress = (progress - self.warmup) / (1 - self.warmup)  # progress after warmup
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupConstantSchedule(_LRSchedule):
    """Linear warmup from 0 to 1, then 1."""

    def get_lr_(self, progress: float) -> float:
        if progress < self.warmup:
            return progress / self.warmup
        return 1.0


class WarmupLinearSchedule(_LRSchedule):
    """Linear warmup from 0 to 1, then a linear decay to 0 at t_total (and 0 after)."""

    warn_t_total = True

    def get_lr_(self, progress: float) -> float:
        if progress < self.warmup:
            return progress / self.warmup
        return max((progress - 1.0) / (self.warmup - 1.0), 0.0)


# Schedule names (BertAdam's `schedule` argument) -> classes, as the original.
SCHEDULES = {
    None: ConstantLR,
    "none": ConstantLR,
    "warmup_cosine": WarmupCosineSchedule,
    "warmup_constant": WarmupConstantSchedule,
    "warmup_linear": WarmupLinearSchedule,
}
_SCHEDULE_CLASSES = {cls.__name__: cls for cls in (
    ConstantLR, WarmupCosineSchedule, WarmupCosineWithHardRestartsSchedule, WarmupCosineWithWarmupRestartsSchedule,
    WarmupConstantSchedule, WarmupLinearSchedule)}  # fmt: skip


def make_schedule(schedule: str | None | _LRSchedule, warmup: float = -1, t_total: float = -1,
                  owner: str = "BertAdam") -> _LRSchedule:
    """A schedule object from a name in SCHEDULES (with warmup and t_total), or the object itself.

    Raises:
        ValueError: an unknown name, or an invalid warmup.
    """
    if isinstance(schedule, _LRSchedule):
        if warmup != -1 or t_total != -1:
            logger.warning("warmup and t_total on the optimizer are ineffective when _LRSchedule object is "
                           "provided as schedule. Please specify custom warmup and t_total in _LRSchedule object.")
        return schedule
    if not isinstance(schedule, (str, type(None))) or schedule not in SCHEDULES:
        raise ValueError(f"Invalid schedule parameter: {schedule!r} - expected one of "
                         f"{', '.join(repr(k) for k in SCHEDULES)} or an _LRSchedule object ({owner})")
    return SCHEDULES[schedule](warmup=warmup, t_total=t_total)


def schedule_from_dict(values: dict) -> _LRSchedule:
    """The inverse of _LRSchedule.to_dict for this module's classes.

    Raises:
        ValueError: not a dict that to_dict wrote.
    """
    cls = _SCHEDULE_CLASSES.get(values.get("class")) if isinstance(values, dict) else None
    if cls is None:
        raise ValueError(f"not a saved schedule: {values!r}")
    schedule = cls.__new__(cls)
    schedule.__dict__.update({k: v for k, v in values.items() if k != "class"}, warned_for_t_total_at_progress=-1)
    return schedule


def schedule_multiplier(name: str | None, progress: float, warmup: float, cycles: float = 0.5) -> float:
    """The multiplier of the named schedule at `progress` (steps taken / t_total), without a t_total.

    Args:
        name: a key of SCHEDULES.
        progress: may exceed 1.
        warmup: warmup fraction in [0, 1).
        cycles: cosine cycles (warmup_cosine only).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(map(repr, SCHEDULES))}")
    schedule = SCHEDULES[name].__new__(SCHEDULES[name])  # no t_total: get_lr_ reads warmup (and cycles) only
    schedule.warmup, schedule.cycles = float(max(warmup, 0.0)), cycles
    return schedule.get_lr_(progress)


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
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(map(repr, SCHEDULES))}")
    if not (0.0 <= warmup < 1.0 or warmup == -1):
        raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
    if t_total == 0:
        raise ValueError("t_total=0: the schedule needs the number of steps (or -1 for none)")
    return ScheduleFn(name, float(max(warmup, 0.0)), int(t_total), float(cycles))
