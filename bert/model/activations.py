"""The activation functions a BertConfig's ``hidden_act`` names (or a function given instead)."""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor


def gelu(x: Tensor) -> Tensor:
    """The exact GELU, x * Phi(x) with the erf form (HF, pytorch-pretrained-bert)."""
    return F.gelu(x)


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU that Google's TF BERT used from February 2019 on."""
    return F.gelu(x, approximate="tanh")


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x) (SiLU)."""
    return F.silu(x)


ACT2FN = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
          "relu": F.relu, "silu": swish, "swish": swish}


def activation(hidden_act) -> Callable[[Tensor], Tensor]:
    """The function for a config's hidden_act: a name in ACT2FN, or the function itself (as the original)."""
    return ACT2FN[hidden_act] if isinstance(hidden_act, str) else hidden_act
