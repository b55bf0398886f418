"""Loading and saving weights: our folders, HF-style folders, sentence-transformers and the original dumps.

A model folder is ``config.json`` (or Google's ``bert_config.json``) plus ``model.safetensors`` (or a
``pytorch_model.bin``, read with ``weights_only=True`` so that no pickled code runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

import torch
from torch import Tensor

from bert.model.config import DEFAULTS as CONFIG_DEFAULTS
from bert.model.config import BertConfig, read_json_object
from bert.io.fileio import atomic_path, atomic_write_text
from bert.formats.safeload import first_line, torch_load_weights_only

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


def resolve_model_dir(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder as it is; any other name goes through the shortcut names and the download cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from bert.io import hub  # lazy: loading a local folder needs no network code

    return Path(hub.resolve_model_dir(str(name_or_path), cache_dir=cache_dir))


@contextlib.contextmanager
def opened_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The model folder of a folder, a shortcut name, or (as the original) a model archive (``.tar.gz``,
    ``.zip``) given by path or URL, extracted safely into a temporary folder for the duration."""
    name = str(name_or_path)
    if urlparse(name).scheme in ("http", "https", "s3"):
        from bert.file_utils import cached_path

        name = cached_path(name, cache_dir=cache_dir)
    path = Path(name)
    if not (path.is_file() and _is_archive(path)):
        yield resolve_model_dir(name, cache_dir)
        return
    from bert.io.archive import safe_extract

    with tempfile.TemporaryDirectory(prefix=".bert-model-") as tmp:
        safe_extract(path, tmp)
        folders = [Path(tmp)] + sorted(p for p in Path(tmp).iterdir() if p.is_dir())
        found = [f for f in folders if any((f / n).is_file() for n in CONFIG_NAMES)]
        if not found:
            raise ValueError(f"{name_or_path}: no {' or '.join(CONFIG_NAMES)} in the archive")
        yield found[0]


def _is_archive(path: Path) -> bool:
    return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


class PreTrainedBertMixin:
    """``from_pretrained`` and ``save_pretrained`` for every model class."""

    # Constructor arguments beyond the config that a saved folder records (e.g. num_labels).
    def _head_kwargs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("num_labels", "num_choices") if hasattr(self, k)}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any,
                        state_dict: Mapping[str, Tensor] | None = None, cache_dir: str | os.PathLike | None = None,
                        from_tf: bool = False, **kwargs: Any):
        """Load a model from a folder, a shortcut name, the packaged name, or a model archive (path or URL).

        Args:
            pretrained_model_name_or_path: a model folder (ours, HF's, or the original's ``bert_config.json``
                + ``pytorch_model.bin``), e.g. ``bert-base-uncased`` or ``minilm-l6-h384-uncased``, or a
                ``.tar.gz``/``.zip`` holding such a folder.
            inputs: positional arguments of the model's constructor after the config (e.g. num_labels).
            state_dict: weights to use instead of the folder's.
            cache_dir: where downloads are kept (default: ``$BERT_TOOLKIT_CACHE`` or ~/.cache/bert-toolkit).
            from_tf: read the weights from the folder's TensorFlow checkpoint (``model.ckpt`` or
                ``bert_model.ckpt``) instead of a PyTorch file.
            kwargs: constructor arguments (``num_labels``, ``num_choices``) and BertConfig fields to
                override (e.g. ``hidden_dropout_prob=0.0``).
        Returns:
            The model, in training mode as a new torch module is (and as the original returns it): call
            ``.eval()`` before inference.
        Raises:
            ValueError: no such model, an unreadable config or weights file, a missing encoder weight, or a
                shape that does not match (each naming the file and the key).
        """
        with opened_model(pretrained_model_name_or_path, cache_dir) as folder:
            config_file = find_file(folder, CONFIG_NAMES, "config file")
            raw = read_json_object(config_file)
            overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_DEFAULTS}
            with _naming(config_file):
                config = BertConfig.from_dict({**raw, **overrides})
                kwargs = {**_saved_head_kwargs(cls, raw, inputs, kwargs), **kwargs}
            if from_tf:
                from bert.formats.tf_checkpoint import load_tf_weights_in_bert, tf_checkpoint_in_folder

                with _naming(config_file):
                    model = cls(config, *inputs, **kwargs)
                return load_tf_weights_in_bert(model, tf_checkpoint_in_folder(folder))
            source = "state_dict"
            if state_dict is None:
                weights_file = find_file(folder, WEIGHTS_NAMES, "weights file")
                state_dict, source = load_state_dict_file(weights_file), str(weights_file)
            check_config_matches(config, state_dict, str(config_file), source)
            with _naming(config_file):
                model = cls(config, *inputs, **kwargs)
        model.load_report = load_weights(model, state_dict, source)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (names HF's Bert classes load with no missing keys).

        Returns:
            The folder written.
        """
        from safetensors.torch import save_file

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k not in TIED_KEYS}
        config = {
            **self.config.to_dict(),
            **self._head_kwargs(),
            "model_type": "bert",  # lets HF's AutoConfig read the folder too
            "architectures": [type(self).__name__],
        }
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        atomic_write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        return folder


@contextlib.contextmanager
def _naming(config_file: Path) -> Iterator[None]:
    """Prefix a ValueError raised by the config or the model's constructor with the config file."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{config_file}: {err}") from None


def _saved_head_kwargs(cls: type, raw: Mapping[str, Any], inputs: tuple, kwargs: Mapping[str, Any]
                       ) -> dict[str, Any]:
    """The constructor arguments a saved folder records (num_labels, num_choices) that the caller did not
    pass, positionally or by name."""
    parameters = inspect.signature(cls.__init__).parameters
    bound = inspect.signature(cls.__init__).bind_partial(None, None, *inputs).arguments
    out = {}
    for key in ("num_labels", "num_choices"):
        if key in raw and key in parameters and key not in kwargs and key not in bound:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            out[key] = value
    return out
