"""LAMB: Adam's moments with a layer-wise trust ratio, for large-batch pre-training.

You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes" (ICLR 2020),
Algorithm 2. For each parameter tensor w with gradient g, at step t (1-based):

    m = beta1 * m + (1 - beta1) * g                  v = beta2 * v + (1 - beta2) * g^2
    m_hat = m / (1 - beta1^t)                        v_hat = v / (1 - beta2^t)      (bias_correction)
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w        (decay decoupled from the moments)
    r = ||w|| / ||u||   (1 when either norm is 0)    the layer's trust ratio, phi = identity
    w = w - lr * r * u

As TensorFlow Addons' LAMB and NVIDIA's FusedLAMB (the BERT recipes), a group without weight decay
(biases and LayerNorm, through param groups) also skips the trust ratio (r = 1) unless
``always_adapt`` is set (NVLAMB). Global gradient clipping and the learning-rate schedule are the
caller's (the engine clips the global norm and drives a LambdaLR).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch


class Lamb(torch.optim.Optimizer):
    """The LAMB optimizer.

    Args:
        params: parameters or param groups (a group may set any of the options below).
        lr: learning rate.
        betas: (beta1, beta2), Adam's moment decays.
        eps: added to sqrt(v_hat).
        weight_decay: decoupled decay, added to the update before the trust ratio.
        bias_correction: divide the moments by (1 - beta^t) as Adam.
        always_adapt: apply the trust ratio in groups without weight decay too.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, bias_correction: bool = True,
                 always_adapt: bool = False):
        if not lr > 0.0:
            raise ValueError(f"Lamb: lr must be > 0, got {lr!r}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lamb: betas must be in [0, 1), got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"Lamb: eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Lamb: weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, always_adapt=always_adapt)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """One update of every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            decay = group["weight_decay"]
            adapt = group["always_adapt"] or decay != 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise ValueError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["bias_correction"]:
                    m_hat = m / (1.0 - beta1 ** state["step"])
                    v_hat = v / (1.0 - beta2 ** state["step"])
                else:
                    m_hat, v_hat = m, v
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if decay != 0.0:
                    update.add_(p, alpha=decay)
                if adapt:
                    # torch.where keeps the ratio on the device: no host sync per parameter.
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(ratio)
                p.add_(update, alpha=-group["lr"])
        return loss
