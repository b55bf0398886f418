"""Embedding gradients accumulated row by row into buffers that live for the whole run (CPU training).

The dense backward of an embedding lookup allocates a table-sized tensor every step, zero-fills it and
adds the looked-up rows. A word-embedding table is 47 MB for MiniLM and 94 MB for BERT-base: above
glibc's largest mmap threshold (32 MB), so every step maps it afresh and faults in each page, about
15 ms a step for MiniLM (3% of an MRPC step) against 2 ms to zero a buffer already mapped.

Here each untied embedding's lookup gives a sparse gradient (the rows), which autograd adds in place
into the parameter's .grad, a dense buffer allocated once and zeroed after every optimizer step. The
optimizer, clipping and DDP see the same dense gradient as before (sums of the same rows; duplicates
may be added in another order, a rounding difference). DDP must be built before `enable` (it would
otherwise expect sparse gradients) and `disable` restores the modules when the run ends.
"""

from __future__ import annotations

import torch
from torch import nn


def untied_embeddings(model: nn.Module) -> list[nn.Embedding]:
    """Trainable nn.Embedding modules whose weight no other module uses (a tied MLM decoder adds a dense
    gradient to the same weight, and a dense + sparse sum allocates the whole table anyway)."""
    users: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    return [m for m in model.modules()
            if isinstance(m, nn.Embedding) and not m.sparse and m.weight.requires_grad
            and users[id(m.weight)] == 1 and m.max_norm is None]


class RowGradients:
    """Persistent dense gradient buffers for a model's untied embeddings (see the module's docstring)."""

    def __init__(self, model: nn.Module):
        self.modules = untied_embeddings(model)

    def enable(self) -> None:
        """Switch the lookups to sparse gradients and give each weight its zeroed .grad buffer."""
        for module in self.modules:
            module.sparse = True
            if module.weight.grad is None or module.weight.grad.is_sparse:
                module.weight.grad = torch.zeros_like(module.weight)

    def zero_(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.zero_grad(set_to_none=True), but the embedding buffers are kept and zeroed."""
        kept = [(m.weight, m.weight.grad) for m in self.modules if m.weight.grad is not None]
        optimizer.zero_grad(set_to_none=True)
        for weight, grad in kept:
            weight.grad = grad.zero_()

    def disable(self) -> None:
        """Dense lookups again (as the model came), gradients released."""
        for module in self.modules:
            module.sparse = False
            module.weight.grad = None
