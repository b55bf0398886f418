"""BertConfig: the hyper-parameters of a BERT model, as in Google's ``bert_config.json``.

The constructor is pytorch-pretrained-bert's: ``BertConfig(vocab_size_or_config_json_file, hidden_size=768,
...)`` takes a vocabulary size or the path of a JSON file. Keys that are not BERT hyper-parameters (HF's
``model_type``, ``id2label``, Google's ``directionality``, ...) are kept as attributes and written back by
``to_dict``, as the original keeps every key it reads.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Union

from bert.io.fileio import atomic_write_text
from bert.io.jsonfile import read_json_object  # noqa: F401 (re-exported: its home before bert.io.jsonfile)

# Names accepted for `hidden_act` (a callable is accepted too, as in the original).
# "gelu" is the exact erf form (HF, pytorch-pretrained-bert);
# "gelu_new" / "gelu_pytorch_tanh" the tanh approximation Google's TF code used from February 2019.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")

# The hyper-parameters and their defaults (BERT-base), in the order of the original constructor.
DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,  # not in the original's config: its LayerNorm hard-codes 1e-12
}
_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size")
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")
_POSITIVE_FLOATS = ("initializer_range", "layer_norm_eps")


class BertConfig:
    """Configuration of a BERT model: Google's bert_config.json fields plus ``layer_norm_eps``.

    Each field is checked when the config is made (a ValueError names it); whether the sizes fit
    together (hidden_size a multiple of num_attention_heads) is checked when a model is built from
    it, as the original does (see ``check_model_shape``).
    """

    def __init__(self, vocab_size_or_config_json_file: Union[int, str, os.PathLike] = DEFAULTS["vocab_size"],
                 hidden_size: int = 768, num_hidden_layers: int = 12, num_attention_heads: int = 12,
                 intermediate_size: int = 3072, hidden_act: Union[str, Callable] = "gelu",
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 max_position_embeddings: int = 512, type_vocab_size: int = 2, initializer_range: float = 0.02,
                 layer_norm_eps: float = 1e-12, *, vocab_size: int | None = None, **extra: Any):
        """Args:
        vocab_size_or_config_json_file: the vocabulary size, or the path of a JSON config whose keys
            then replace every other argument (as the original).
        hidden_size ... initializer_range: Google's fields (see bert_config.json).
        layer_norm_eps: LayerNorm's epsilon.
        vocab_size: the vocabulary size by its field name (HF's spelling), instead of the first argument.
        extra: other keys to keep (e.g. ``id2label``); they are not used by the model.
        """
        if vocab_size is not None:
            if vocab_size_or_config_json_file != DEFAULTS["vocab_size"]:
                raise TypeError("BertConfig: give the vocabulary size once (vocab_size_or_config_json_file "
                                "or vocab_size), not both")
            vocab_size_or_config_json_file = vocab_size
        source = vocab_size_or_config_json_file
        if isinstance(source, (str, os.PathLike)):
            values = read_json_object(source)
            self._set(values, source=str(source))
            return
        if isinstance(source, bool) or not isinstance(source, int):
            raise ValueError("BertConfig: the first argument must be a vocabulary size (int) or the path of a "
                             f"config JSON file (str), got {type(source).__name__}")
        self._set({"vocab_size": source, "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                   "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                   "hidden_act": hidden_act, "hidden_dropout_prob": hidden_dropout_prob,
                   "attention_probs_dropout_prob": attention_probs_dropout_prob,
                   "max_position_embeddings": max_position_embeddings, "type_vocab_size": type_vocab_size,
                   "initializer_range": initializer_range, "layer_norm_eps": layer_norm_eps, **extra})

    def _set(self, values: dict[str, Any], source: str = "") -> None:
        """Fill every field (defaults for the missing ones) and the extra keys, then validate."""
        for key, value in {**DEFAULTS, **values}.items():
            if not isinstance(key, str) or (key not in DEFAULTS and hasattr(type(self), key)):
                continue  # a key that would shadow a method or property (e.g. "to_dict"): not config data
            setattr(self, key, value)
        try:
            self.validate()
        except ValueError as err:
            raise ValueError(f"{source}: {err}" if source else str(err)) from None

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value no model could use."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be a probability in [0, 1), got {value!r}")
        if not callable(self.hidden_act) and (not isinstance(self.hidden_act, str)
                                              or self.hidden_act not in ACTIVATIONS):
            raise ValueError(f"BertConfig.hidden_act must be one of {', '.join(ACTIVATIONS)} (or a function), "
                             f"got {self.hidden_act!r}")
        for name in _POSITIVE_FLOATS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"BertConfig.{name} must be a positive finite number, got {value!r}")

    def check_model_shape(self) -> None:
        """Raise ValueError if no model can be built from this config (called by every model's constructor).

        Raises:
            ValueError: hidden_size is not a multiple of num_attention_heads (naming both).
        """
        self.validate()
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"The hidden size ({self.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({self.num_attention_heads})")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, json_object: dict[str, Any]) -> "BertConfig":
        """Build a config from a dict of its fields (missing ones take the defaults; others are kept)."""
        if not isinstance(json_object, dict):
            raise ValueError(f"a BERT config must be a JSON object, got {type(json_object).__name__}")
        config = cls.__new__(cls)
        config._set(dict(json_object))
        return config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "BertConfig":
        """Read Google's ``bert_config.json`` or HF's ``config.json``; errors name the file."""
        config = cls.__new__(cls)
        config._set(read_json_object(json_file), source=str(json_file))
        return config

    def to_dict(self) -> dict[str, Any]:
        """Every field and kept key, as a new dict."""
        return copy.deepcopy(self.__dict__)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically: a temp file renamed into place)."""
        atomic_write_text(Path(json_file_path), self.to_json_string())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BertConfig) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return self.to_json_string()
