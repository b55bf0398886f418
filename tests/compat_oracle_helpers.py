"""Shared pieces of the tests against the real pytorch-pretrained-bert 0.6.2 (tests/test_compat_*.py).

The oracle is the package itself, installed for the tests only. ``OURS`` and ``ORIGINAL`` name the two
packages compared; every test reaches them through ``ours()`` / ``original()``, so that pointing ``OURS``
at ``pytorch_pretrained_bert`` runs each test with the original on both sides (how the tests themselves
were checked: a test that fails that way is a bug in the test, not a gap in ours).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import pytest
import torch

from bert.formats.tf_checkpoint import GOOGLE_CONFIG_FIELDS  # the fields of Google's bert_config.json: all 0.6.2 knows

OURS = "bert"
ORIGINAL = "pytorch_pretrained_bert"



def ours(module: str = "") -> ModuleType:
    """Our package, or one of its modules ("modeling", "optimization", ...)."""
    return importlib.import_module(f"{OURS}.{module}" if module else OURS)


def original(module: str = "") -> ModuleType:
    """The original package, or one of its modules.

    Raises:
        AssertionError: the module is not the original's file but ours (bert.compat's import hook, which
            maps ``pytorch_pretrained_bert.<module>`` to ``bert.<module>``, is installed in this process).
    """
    found = importlib.import_module(f"{ORIGINAL}.{module}" if module else ORIGINAL)
    home = Path(importlib.import_module(ORIGINAL).__file__).resolve().parent
    if OURS != ORIGINAL and Path(found.__file__).resolve().parent != home:
        raise AssertionError(f"{ORIGINAL}.{module} is {found.__file__}, not the original's (in {home}): "
                             "an alias of ours stands in for the oracle")
    return found


def skip_unless_real_original() -> None:
    """Skip the calling test module unless the real 0.6.2 is what ``import pytorch_pretrained_bert`` finds.

    Our package ships an alias of that name (bert/compat): where the original is not installed, the alias
    would be found, and every comparison would be ours against ours.
    """
    package = pytest.importorskip(ORIGINAL)
    if OURS == ORIGINAL:
        return  # the tests checking themselves
    found = Path(package.__file__).resolve()
    if Path(ours().__file__).resolve().parent in found.parents or getattr(package, "__version__", "") != "0.6.2":
        pytest.skip(f"{ORIGINAL} resolves to {found} (version {getattr(package, '__version__', '?')}), not the "
                    "original 0.6.2: pip install pytorch-pretrained-bert==0.6.2", allow_module_level=True)


def google_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """Google's fields of a config (a dict or an object with those attributes), nothing else."""
    get = values.get if isinstance(values, Mapping) else lambda key: getattr(values, key)
    return {key: get(key) for key in GOOGLE_CONFIG_FIELDS}


def to_original_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LayerNorm weight/bias -> gamma/beta: the names of a Google checkpoint converted by 0.6.2's script."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", key)
        out[re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", key)] = value
    return out


def write_original_folder(folder: Path, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> Path:
    """A model folder as 0.6.2 reads it: ``bert_config.json`` (Google's fields) + ``pytorch_model.bin``.

    Args:
        folder: created if missing.
        config: at least Google's fields.
        state_dict: weights with our/HF names; written with LayerNorm gamma/beta names.
    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bert_config.json").write_text(json.dumps(google_config(config), indent=2, sort_keys=True) + "\n")
    torch.save(to_original_names(state_dict), folder / "pytorch_model.bin")
    return folder


def max_abs_diff(ours_out: Any, ref_out: Any, where: str = "output") -> float:
    """The largest absolute difference between two outputs of the same structure.

    Args:
        ours_out: a tensor, or a list/tuple of them (nested), as our model returned it.
        ref_out: the original's output of the same call.
        where: names the output in error messages.
    Returns:
        max |ours - ref| over every tensor (0.0 for empty structures).
    Raises:
        AssertionError: the structures differ: a tensor against a sequence, lengths, shapes or dtypes.
    """
    if isinstance(ref_out, torch.Tensor):
        assert isinstance(ours_out, torch.Tensor), f"{where}: a tensor in 0.6.2, {type(ours_out).__name__} in ours"
        assert ours_out.shape == ref_out.shape, f"{where}: shape {tuple(ours_out.shape)}, 0.6.2 {tuple(ref_out.shape)}"
        assert ours_out.dtype == ref_out.dtype, f"{where}: dtype {ours_out.dtype}, 0.6.2 {ref_out.dtype}"
        if ref_out.numel() == 0:
            return 0.0
        return (ours_out.detach().double() - ref_out.detach().double()).abs().max().item()
    assert isinstance(ref_out, (list, tuple)), f"{where}: unexpected {type(ref_out).__name__} from 0.6.2"
    assert isinstance(ours_out, (list, tuple)), (
        f"{where}: a {type(ref_out).__name__} of {len(ref_out)} in 0.6.2, {type(ours_out).__name__} in ours")
    assert len(ours_out) == len(ref_out), f"{where}: {len(ours_out)} items, 0.6.2 {len(ref_out)}"
    return max((max_abs_diff(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(ours_out, ref_out))),
               default=0.0)
