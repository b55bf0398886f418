"""Which examples each rank sees, step by step: a length-grouped, world-size-independent order.

Training order is decided for the whole job, never per rank: each epoch is a sequence of *global*
batches (global_batch_size examples each, the last one possibly short), drawn from a generator seeded
with seed + epoch. Each global batch is then cut into world_size contiguous shards, and each shard into
grad_accum_steps micro-batches. So the set of examples behind every optimizer step, and therefore the
training trajectory, is the same on 1 process or 8.

    epoch order:    [ global batch 0 ][ global batch 1 ] ... [ short last batch ]
    global batch:   [ rank 0 : micro 0 | micro 1 ][ rank 1 : micro 0 | micro 1 ]

Length grouping (as HF's group_by_length): a random permutation is cut into "mega-batches" of 50
global batches, each sorted by length so that a global batch holds examples of similar length (little
padding), and the order of the full global batches is shuffled again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

MEGA_BATCH_FACTOR = 50


@dataclass(frozen=True)
class MicroBatch:
    """One rank's share of one optimizer step's examples.

    `indices` is never empty: a rank whose share of a short last batch is empty gets one stand-in
    example with `num_real` 0, so every rank still runs forward/backward and joins the all-reduce.
    """

    indices: list[int]
    num_real: int


@dataclass(frozen=True)
class StepPlan:
    """The micro-batches of this rank for one optimizer step, and the step's global example count."""

    micro_batches: list[MicroBatch]
    global_count: int


def _split_bounds(n: int, parts: int) -> list[int]:
    """Boundaries cutting n items into `parts` contiguous pieces whose sizes differ by at most 1."""
    return [(k * n) // parts for k in range(parts + 1)]


def global_batches(num_items: int, global_batch_size: int, seed: int, epoch: int,
                   lengths: Optional[Sequence[int]] = None) -> list[list[int]]:
    """The epoch's global batches of dataset indices (deterministic in seed and epoch).

    Args:
        num_items: dataset size.
        global_batch_size: examples per optimizer step.
        seed, epoch: the generator is seeded with seed + epoch.
        lengths: true lengths for length grouping, or None for a plain shuffle.
    Returns:
        A list of ceil(num_items / global_batch_size) index lists; only the last may be short.
    """
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(num_items, generator=g).tolist()
    if lengths is not None:
        mega = global_batch_size * MEGA_BATCH_FACTOR
        grouped: list[int] = []
        for start in range(0, num_items, mega):
            grouped.extend(sorted(order[start:start + mega], key=lambda i: -lengths[i]))
        order = grouped
    batches = [order[s:s + global_batch_size] for s in range(0, num_items, global_batch_size)]
    if lengths is not None:
        # Shuffle the full batches, so that long and short ones alternate; a short last one stays last.
        full = len(batches) if len(batches[-1]) == global_batch_size else len(batches) - 1
        perm = torch.randperm(full, generator=g).tolist()
        batches = [batches[i] for i in perm] + batches[full:]
    return batches


class DistributedLengthGroupedSampler:
    """Batch sampler over this rank's micro-batches; the same global order for any world size.

    Use as a DataLoader `batch_sampler`; call `set_epoch(epoch)` before every epoch and
    `set_start_step(k)` to skip the first k optimizer steps of the epoch when resuming.
    """

    def __init__(self, num_items: int, global_batch_size: int, grad_accum_steps: int = 1,
                 world_size: int = 1, rank: int = 0, seed: int = 0,
                 lengths: Optional[Sequence[int]] = None, group_by_length: bool = True):
        if num_items <= 0:
            raise ValueError("the training dataset is empty")
        if lengths is not None and len(lengths) != num_items:
            raise ValueError(f"lengths has {len(lengths)} entries but the dataset has {num_items} items")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items = num_items
        self.global_batch_size = global_batch_size
        self.grad_accum_steps = grad_accum_steps
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.lengths = list(lengths) if (lengths is not None and group_by_length) else None
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_items / self.global_batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce (and start again at its first step)."""
        self.epoch = epoch
        self.start_step = 0

    def set_start_step(self, step: int) -> None:
        """Skip the epoch's first `step` optimizer steps (their examples were already consumed)."""
        if not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"start step {step} outside the epoch's {self.steps_per_epoch} steps")
        self.start_step = step

    def shard(self, batch: list[int]) -> StepPlan:
        """Cut one global batch into this rank's micro-batches."""
        n = len(batch)
        ranks = _split_bounds(n, self.world_size)
        mine = batch[ranks[self.rank]:ranks[self.rank + 1]]
        micro = _split_bounds(len(mine), self.grad_accum_steps)
        out = []
        for k in range(self.grad_accum_steps):
            idx = mine[micro[k]:micro[k + 1]]
            out.append(MicroBatch(idx, len(idx)) if idx else MicroBatch([batch[0]], 0))
        return StepPlan(out, n)

    def plan(self) -> list[StepPlan]:
        """This rank's steps for the current epoch, from the start step on."""
        batches = global_batches(self.num_items, self.global_batch_size, self.seed, self.epoch,
                                 self.lengths)
        return [self.shard(b) for b in batches[self.start_step:]]

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan():
            for mb in step.micro_batches:
                yield mb.indices

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum_steps


def eval_shard(num_items: int, world_size: int, rank: int,
               lengths: Optional[Sequence[int]] = None) -> list[int]:
    """This rank's share of an evaluation set: every index exactly once over all ranks.

    With lengths, indices are sorted by length first (little padding per batch) and dealt out in
    turn, so that every rank gets a similar amount of work.
    """
    order = list(range(num_items))
    if lengths is not None:
        if len(lengths) != num_items:
            raise ValueError(f"lengths has {len(lengths)} entries but the dataset has {num_items} items")
        order.sort(key=lambda i: -lengths[i])
    return order[rank::world_size]
