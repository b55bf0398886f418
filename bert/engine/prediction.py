"""Inference over a dataset, sharded across ranks and gathered back in dataset order.

Each rank runs every world_size-th example (after sorting by length, when lengths are known, so that
batches need little padding), each example exactly once: unlike DistributedSampler, nothing is
duplicated to even out the shards. The shards are then padded to equal size, all-gathered and put
back in dataset order on every rank. Real tokens only: the collate functions' packing (bert/data/cache.py)
makes the heads skip padding, and the outputs at padded positions are zeroed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bert.engine.distributed import DistContext
from bert.engine.batch import to_device
from bert.engine.precision import Precision
from bert.engine.sampler import eval_shard
from bert.model.plan import Packing

# Keys that make a head return its loss instead of its logits.
LABEL_KEYS = ("labels", "start_positions", "end_positions", "masked_lm_labels", "next_sentence_label")

# Upper bounds for the shape exchange between ranks (outputs per model, dims per output).
_MAX_OUTPUTS, _MAX_DIMS = 8, 8
# A batch whose real tokens fill at least this share of it runs padded: there, packing's gathers and scatters
# (bert/model/plan.py) cost more than the few padded positions (3-5% of a length-sorted MRPC pass, CPU).
_DENSE = 0.95


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise ValueError(f"the model returned {type(out).__name__}; predict expects a tensor or a tuple "
                     f"of tensors (logits)")


def _zero_padding(t: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero a per-token output at padding positions, so results never depend on batch composition."""
    if mask is None or t.shape[: mask.dim()] != mask.shape:
        return t
    keep = mask.bool().reshape(*mask.shape, *([1] * (t.dim() - mask.dim())))
    return t.masked_fill(~keep, 0.0)


def _padded_if_dense(batch: dict) -> dict:
    """Replace a nearly full batch's packing by one that lists every position: the model then runs padded."""
    packing, mask = batch.get("packing"), batch.get("attention_mask")
    if packing is None or mask is None or packing.labelled is not None:
        return batch
    if packing.positions.numel() < _DENSE * mask.numel():
        return batch
    rows, width = mask.numel() // mask.shape[-1], mask.shape[-1]
    return {**batch, "packing": Packing(torch.arange(rows * width), torch.arange(0, rows * width, width))}


def _pad_to(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad `t` at the end of every dimension to `shape`."""
    if tuple(t.shape) == tuple(shape):
        return t
    out = t.new_zeros(shape)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def _global_shapes(ctx: DistContext, local: list[list[torch.Tensor]]) -> list[tuple[int, ...]]:
    """Per output, the largest shape (after the batch dimension) on any rank.

    A rank with no examples contributes zeros; the others agree on the number of outputs and dims.
    """
    meta = torch.zeros(1 + _MAX_OUTPUTS * (1 + _MAX_DIMS), dtype=torch.int64)
    if local:
        if len(local) > _MAX_OUTPUTS:
            raise ValueError(f"predict supports at most {_MAX_OUTPUTS} model outputs, got {len(local)}")
        meta[0] = len(local)
        for k, chunks in enumerate(local):
            ndim = chunks[0].dim() - 1
            if ndim > _MAX_DIMS:
                raise ValueError(f"model output {k} has {ndim + 1} dimensions; at most {_MAX_DIMS + 1}")
            base = 1 + k * (1 + _MAX_DIMS)
            meta[base] = ndim
            for d in range(ndim):
                meta[base + 1 + d] = max(c.shape[d + 1] for c in chunks)
    meta = ctx.all_reduce_max(meta.to(ctx.device)).cpu()
    shapes = []
    for k in range(int(meta[0])):
        base = 1 + k * (1 + _MAX_DIMS)
        shapes.append(tuple(int(x) for x in meta[base + 1: base + 1 + int(meta[base])]))
    return shapes


@torch.no_grad()  # not inference_mode: under it, autocast's cache would cast every weight again in every batch
def predict(model: nn.Module, dataset: Dataset, collate_fn: Callable[[list], dict],
            batch_size: int = 64, precision: str = "fp32", ctx: Optional[DistContext] = None,
            lengths: Optional[Sequence[int]] = None, num_workers: int = 0,
            progress: bool = True) -> tuple[torch.Tensor, ...]:
    """Run `model` over `dataset` without labels; every rank gets all outputs in dataset order.

    Args:
        model: an unwrapped model (moved to ctx.device, evaluated in eval mode).
        dataset: map-style dataset; collate_fn turns a list of items into model keyword arguments
            (label keys are dropped).
        batch_size: examples per forward pass on each rank.
        precision: "fp32", "fp16" or "bf16" (autocast); outputs are returned as float32.
        ctx: from setup_distributed(); None means one process on the CPU.
        lengths: true lengths; sorting by them makes batches with little padding (default: the dataset's
            ``lengths`` attribute when it has one, as CachedFeatures does).
        num_workers: DataLoader worker processes.
        progress: show a tqdm bar on rank 0.
    Returns:
        One CPU tensor per model output (e.g. (logits,) or (start_logits, end_logits)), first
        dimension len(dataset); per-token outputs are 0 at padding positions (attention_mask 0)
        and padded with 0 to the longest item in the dataset.
    """
    ctx = ctx or DistContext()
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("predict got an empty dataset")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if lengths is None:
        lengths = getattr(dataset, "lengths", None)
    shards = [eval_shard(n, ctx.world_size, r, lengths) for r in range(ctx.world_size)]
    mine = shards[ctx.rank]
    policy = Precision(precision, ctx.device)
    model.to(ctx.device)
    was_training = model.training
    model.eval()
    batches = [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                        num_workers=num_workers, pin_memory=ctx.device.type == "cuda")
    local: list[list[torch.Tensor]] = []
    # One autocast region for the whole loop: its cache casts each weight to half precision once, not per batch.
    with policy.autocast():
        for batch in tqdm(loader, desc="predict", unit="batch", disable=not (ctx.is_main and progress)):
            inputs = {k: v for k, v in to_device(_padded_if_dense(batch), ctx.device).items() if k not in LABEL_KEYS}
            outs = _as_tuple(model(**inputs))
            if not local:
                local = [[] for _ in outs]
            mask = inputs.get("attention_mask")
            for k, t in enumerate(outs):
                local[k].append(_zero_padding(t.float(), mask))
    model.train(was_training)

    shapes = _global_shapes(ctx, local)
    rows = math.ceil(n / ctx.world_size)  # the largest shard; the others are padded to it
    results = []
    for k, shape in enumerate(shapes):
        mine_t = torch.zeros((rows, *shape), device=ctx.device)
        if local:
            block = torch.cat([_pad_to(c, (c.shape[0], *shape)) for c in local[k]])
            mine_t[: block.shape[0]] = block
        gathered = ctx.all_gather(mine_t)
        out = torch.zeros((n, *shape))
        for r, idx in enumerate(shards):
            out[torch.tensor(idx, dtype=torch.long)] = gathered[r][: len(idx)].cpu()
        results.append(out)
    return tuple(results)
