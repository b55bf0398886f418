"""Mixed precision: fp32, fp16 with loss scaling, bf16 — the same calls for all three.

Master weights and optimizer state stay fp32 in every mode; autocast runs the matmuls in half
precision. fp16 gradients underflow without loss scaling, so the loss is multiplied by a scale
before backward and the gradients divided by it again (``unscale``) before clipping and the update.
Dynamic scaling (the default) halves the scale and skips the step when a gradient overflows and
doubles it after 2000 clean steps; a static scale (the seed's ``--loss_scale``) never changes, and
an overflowing step is still skipped. bf16 has fp32's exponent range and needs no scaling.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingDiverged(FloatingPointError, ValueError):
    """Training produced non-finite numbers (a NaN or infinite loss, weights or loss scale): it stops, nothing
    is written. A ValueError too: its causes are settings or data (a stage reports it in one line)."""


class LossScaleCollapse(TrainingDiverged):
    """fp16 training kept overflowing until the loss scale fell below its floor."""


class Precision:
    """Autocast and (for fp16) a GradScaler for one device.

    Args:
        precision: "fp32", "fp16" or "bf16".
        device: the training device.
        loss_scale: 0 for dynamic loss scaling (fp16), or a positive static scale.
        min_loss_scale: dynamic scaling aborts when the scale falls below this.
        max_consecutive_skips: a static scale aborts after this many overflowing steps in a row.
    """

    def __init__(self, precision: str, device: torch.device, loss_scale: float = 0.0,
                 min_loss_scale: float = 1.0, max_consecutive_skips: int = 20):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if loss_scale < 0:
            raise ValueError(f"loss_scale must be 0 (dynamic) or positive, got {loss_scale}")
        self.precision = precision
        self.device = torch.device(device)
        self.static_scale = float(loss_scale) if loss_scale > 0 else None
        self.min_loss_scale = min_loss_scale
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.scaler = None
        if precision == "fp16":
            init = self.static_scale if self.static_scale is not None else 2.0 ** 16
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=init)

    def autocast(self) -> ContextManager:
        """The forward pass's autocast context (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    @property
    def loss_scale(self) -> float:
        """The current loss scale (1.0 without fp16)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the (scaled, for fp16) loss."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the loss scale (before clipping or measuring them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, grads_finite: bool) -> bool:
        """Apply the update unless fp16 gradients overflowed; adjust the scale.

        Args:
            optimizer: the optimizer (already unscaled through `unscale_`).
            grads_finite: whether every gradient is finite (from the gradient norm).
        Returns:
            True when the step was taken, False when it was skipped.
        Raises:
            LossScaleCollapse: when the scale falls below its floor, or a static scale keeps overflowing.
        """
        if self.scaler is None:
            optimizer.step()
            return True
        if grads_finite:
            self.scaler.step(optimizer)
        # Records found-inf from unscale_: halves a dynamic scale on overflow.
        self.scaler.update(new_scale=self.static_scale)
        if grads_finite:
            self.consecutive_skips = 0
            return True
        self.skipped_steps += 1
        self.consecutive_skips += 1
        scale = self.loss_scale
        logger.warning("fp16 gradient overflow: step skipped, loss scale now %g (%d skipped so far)",
                       scale, self.skipped_steps)
        if self.static_scale is None and scale < self.min_loss_scale:
            raise LossScaleCollapse(
                f"fp16 loss scale collapsed to {scale:g} (floor {self.min_loss_scale:g}) after "
                f"{self.consecutive_skips} overflowing steps in a row: the loss or gradients are "
                f"inf/NaN; lower the learning rate or use precision bf16 or fp32")
        if self.static_scale is not None and self.consecutive_skips >= self.max_consecutive_skips:
            raise LossScaleCollapse(
                f"fp16 gradients overflowed on {self.consecutive_skips} steps in a row at the static "
                f"loss scale {self.static_scale:g}: use a smaller loss_scale or 0 (dynamic)")
        return False

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"skipped_steps": self.skipped_steps,
                                 "consecutive_skips": self.consecutive_skips}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
