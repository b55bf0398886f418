"""Loading and saving weights: our folders, HF-style folders, sentence-transformers and the original dumps.

A model folder is ``config.json`` (or Google's ``bert_config.json``) plus ``model.safetensors`` (or a
``pytorch_model.bin``, read with ``weights_only=True`` so that no pickled code runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from bert.formats.safeload import first_line, torch_load_weights_only
from bert.io.fileio import atomic_path, atomic_write_text
from bert.model.config import BertConfig

logger = logging.getLogger(__name__)

CONFIG_NAMES = ("config.json", "bert_config.json")
BERT_CONFIG_NAME = "bert_config.json"  # Google's and the original's name (config.json is HF's and ours)
TF_WEIGHTS_NAME = "model.ckpt"  # the TF checkpoint prefix the original's from_tf looks for
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")
# Parameters tied to another one: never stored, never reported missing.
TIED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
# Buffers some writers store that carry no weights.
IGNORED_KEYS = re.compile(r"(^|\.)embeddings\.position_ids$")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a weights file: safetensors, or a torch ``.bin`` with ``weights_only=True``.

    Raises:
        ValueError: the file is missing, truncated, corrupt, or holds something other than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path))
        else:
            state_dict = torch_load_weights_only(path, "weights file")
    except ValueError:
        raise
    except Exception as err:  # safetensors: truncated or foreign file
        raise ValueError(f"{path}: not a readable weights file ({first_line(err)})") from None
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict and len(state_dict) < 8:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state_dict)


def normalize_key(key: str) -> str:
    """Map other writers' names onto ours: LayerNorm gamma/beta (TF-style dumps) to weight/bias."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    for prefix in ("module.", "0.auto_model."):  # DDP wrappers, sentence-transformers modules
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def adapt_state_dict(state_dict: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Rename a checkpoint's keys to the model's: normalise, then add or drop the ``bert.`` prefix."""
    renamed = {normalize_key(k): v for k, v in state_dict.items() if not IGNORED_KEYS.search(k)}
    model_has_prefix = any(k.startswith("bert.") for k in expected)
    out = {}
    for key, value in renamed.items():
        if model_has_prefix and key.startswith(ENCODER_PREFIXES):
            key = "bert." + key  # encoder-only dump (sentence-transformers, HF BertModel) into a head
        elif not model_has_prefix and key.startswith("bert."):
            key = key[len("bert."):]  # a head's dump into a bare BertModel
        out[key] = value
    return out


@dataclasses.dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]
    newly_initialized: list[str]


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, Tensor], source: str = "state_dict") -> LoadReport:
    """Copy a checkpoint into `model`, checking names and shapes.

    A missing encoder weight is an error; a missing head (``cls.*``, ``classifier.*``, ``qa_outputs.*``)
    or pooler is newly initialised and said so once; unused checkpoint keys are reported once.

    Raises:
        ValueError: a shape mismatch (naming the parameter and both shapes) or missing encoder weights.
    """
    own = model.state_dict()
    expected = {k for k in own if k not in TIED_KEYS}
    adapted = adapt_state_dict(state_dict, expected)
    for key, value in adapted.items():
        if key not in own:
            continue
        if own[key].shape != value.shape:
            raise ValueError(
                f"{source}: parameter {key} has shape {tuple(value.shape)} in the checkpoint, "
                f"expected {tuple(own[key].shape)} by the model config"
            )
        if own[key].is_floating_point() and not value.is_floating_point():  # ints, bools: not weights
            raise ValueError(f"{source}: parameter {key} is {value.dtype} in the checkpoint, expected floating point")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{source}: parameter {key} holds NaN or infinite values; the checkpoint is damaged")
    missing = sorted(expected - adapted.keys())
    unexpected = sorted(k for k in adapted.keys() - own.keys() if k not in TIED_KEYS)
    encoder_missing = [k for k in missing if _is_encoder_key(k)]
    if encoder_missing:
        shown = ", ".join(encoder_missing[:8]) + (" ..." if len(encoder_missing) > 8 else "")
        raise ValueError(f"{source}: {len(encoder_missing)} encoder weights missing from the checkpoint: {shown}")
    with torch.no_grad():
        for key, value in adapted.items():
            if key in own:
                own[key].copy_(value.to(own[key].dtype))
    if missing:
        logger.warning("%s: newly initialised (not in the checkpoint; train them): %s", source, ", ".join(missing))
    if unexpected:
        logger.info("%s: checkpoint weights not used by %s: %s", source, type(model).__name__, ", ".join(unexpected))
    return LoadReport(missing=missing, unexpected=unexpected, newly_initialized=missing)


# config field -> (bare parameter name, dimension) of the same size. A config larger than its weights is
# refused before the model is built, so that a config.json claiming a huge model never allocates it (a
# smaller one fails in load_weights, which names each parameter and both shapes).
_CONFIG_SHAPES = {
    "vocab_size": ("embeddings.word_embeddings.weight", 0),
    "hidden_size": ("embeddings.word_embeddings.weight", 1),
    "max_position_embeddings": ("embeddings.position_embeddings.weight", 0),
    "type_vocab_size": ("embeddings.token_type_embeddings.weight", 0),
    "intermediate_size": ("encoder.layer.0.intermediate.dense.weight", 0),
}
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def check_config_matches(config: BertConfig, state_dict: Mapping[str, Tensor], config_source: str,
                         weights_source: str) -> None:
    """Refuse a config whose sizes exceed the checkpoint's tensors, before any model is allocated.

    Raises:
        ValueError: naming the config field, its value and the tensor that is smaller.
    """
    bare = {}
    for key, value in state_dict.items():
        key = normalize_key(key)
        bare[key[len("bert."):] if key.startswith("bert.") else key] = value
    for field, (name, dim) in _CONFIG_SHAPES.items():
        tensor = bare.get(name)
        if tensor is not None and tensor.dim() > dim and tensor.shape[dim] < getattr(config, field):
            raise ValueError(f"{config_source}: {field} is {getattr(config, field)}, but {weights_source} has "
                             f"{name} of shape {tuple(tensor.shape)}")
    layers = {int(m.group(1)) for m in map(_LAYER.match, bare) if m}
    if layers and config.num_hidden_layers > max(layers) + 1:  # fewer is fine: the extra layers go unused
        raise ValueError(f"{config_source}: num_hidden_layers is {config.num_hidden_layers}, but {weights_source} "
                         f"has {max(layers) + 1} layers")


def _is_encoder_key(key: str) -> bool:
    bare = key[len("bert."):] if key.startswith("bert.") else key
    return bare.startswith(("embeddings.", "encoder."))


def find_file(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder}: no {what} found (looked for {', '.join(names)})")


def save_model_folder(folder: str | os.PathLike, config: BertConfig, tensors: Mapping[str, Tensor],
                      architecture: str, head_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors``: names HF's Bert classes load with no missing keys.

    Args:
        folder: created if missing; each file written atomically.
        config: the model's config.
        tensors: its state dict (tied weights are left out).
        architecture: the model class's name (HF's ``architectures``).
        head_kwargs: constructor arguments to record (num_labels, num_choices).
    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if k not in TIED_KEYS}
    values = {**config.to_dict(), **(head_kwargs or {}),
              "model_type": "bert",  # lets HF's AutoConfig read the folder too
              "architectures": [architecture]}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_text(folder / "config.json", json.dumps(values, indent=2, sort_keys=True) + "\n")
    return folder
