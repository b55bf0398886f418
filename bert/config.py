"""BertConfig: the hyper-parameters of a BERT model, as in Google's ``bert_config.json``."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bert.fileio import atomic_write_text

# Names accepted for `hidden_act`. "gelu" is the exact erf form (HF, pytorch-pretrained-bert);
# "gelu_new" / "gelu_pytorch_tanh" the tanh approximation Google's TF code used from February 2019.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")

_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file holding one object (a config), every failure a one-line ValueError naming the file.

    Raises:
        ValueError: missing, not UTF-8, not JSON, nested beyond reason, or not an object.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except RecursionError:  # e.g. 100 000 nested brackets
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values


@dataclass
class BertConfig:
    """Configuration of a BERT model (the fields of Google's bert_config.json plus layer_norm_eps).

    Unknown keys in a JSON file (HF's ``model_type``, ``architectures``, ...) are ignored by
    ``from_dict``/``from_json_file``; passing an unknown keyword to the constructor is a TypeError.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be a probability in [0, 1), got {value!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig.hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"BertConfig.{name} must be a positive finite number, got {value!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BertConfig":
        """Build a config from a dict; keys that are not BertConfig fields are ignored."""
        if not isinstance(values, dict):
            raise ValueError(f"a BERT config must be a JSON object, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Read Google's ``bert_config.json`` or HF's ``config.json``."""
        path = Path(path)
        values = read_json_object(path)
        try:
            return cls.from_dict(values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically: a temp file renamed into place)."""
        atomic_write_text(Path(path), self.to_json_string())

