"""``from_pretrained`` and ``save_pretrained`` of the model classes: a model from a folder, a shortcut name, an
archive or a URL, and back to a folder; and the one weight initialisation at the end of construction.

The weights' file formats and key conventions are bert.model.weights's; names become folders in bert.io.hub.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlparse

from torch import Tensor

from bert.file_utils import cached_path
from bert.formats.tf_checkpoint import load_tf_weights_in_bert, tf_checkpoint_in_folder
from bert.io import hub
from bert.io.archive import safe_extract
from bert.io.fileio import scratch_folder
from bert.model.config import DEFAULTS as CONFIG_DEFAULTS
from bert.model.config import BertConfig, read_json_object
from bert.model.weights import (
    CONFIG_NAMES,
    WEIGHTS_NAMES,
    check_config_matches,
    find_file,
    load_state_dict_file,
    load_weights,
    save_model_folder,
)


def resolve_model_dir(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder as it is; any other name goes through the shortcut names and the download cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    return Path(hub.resolve_model_dir(str(name_or_path), cache_dir=cache_dir))


@contextlib.contextmanager
def opened_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The model folder of a folder, a shortcut name, or (as the original) a model archive (``.tar.gz``,
    ``.zip``) given by path or URL, extracted safely into a temporary folder for the duration."""
    name = str(name_or_path)
    if urlparse(name).scheme in ("http", "https", "s3"):
        name = cached_path(name, cache_dir=cache_dir)
    path = Path(name)
    if not (path.is_file() and _is_archive(path)):
        yield resolve_model_dir(name, cache_dir)
        return
    with scratch_folder(Path(tempfile.gettempdir()) / "bert-model-extract") as tmp:  # removed after a kill too
        safe_extract(path, tmp)
        folders = [tmp] + sorted(p for p in tmp.iterdir() if p.is_dir())
        found = [f for f in folders if any((f / n).is_file() for n in CONFIG_NAMES)]
        if not found:
            raise ValueError(f"{name_or_path}: no {' or '.join(CONFIG_NAMES)} in the archive")
        yield found[0]


def _is_archive(path: Path) -> bool:
    return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


# HF's config keys of the heads that from_pretrained takes as config overrides, as HF does
# (``problem_type="multi_label_classification"`` makes BertForSequenceClassification multi-label).
HEAD_CONFIG_KEYS = ("problem_type", "id2label", "label2id")

_construction = threading.local()  # how deep in nested model constructors this thread is


def _initialised_once(init: Callable) -> Callable:
    """Wrap a model class's __init__: when the outermost model constructor returns, its weights are
    initialised (init_bert_weights), once; the inner BertModel of a head leaves it to the head."""

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        depth = getattr(_construction, "depth", 0)
        _construction.depth = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            _construction.depth = depth
        if depth == 0:
            self.apply(self.init_bert_weights)

    return __init__


class PreTrainedBertMixin:
    """``from_pretrained`` and ``save_pretrained`` for every model class, and the one weight initialisation
    at the end of construction."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _initialised_once(cls.__dict__["__init__"])

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
                override (e.g. ``hidden_dropout_prob=0.0``; also HF's ``problem_type``, ``id2label``, ``label2id``).
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
            overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_DEFAULTS or k in HEAD_CONFIG_KEYS}
            with _naming(config_file):
                config = BertConfig.from_dict({**raw, **overrides})
                kwargs = {**_saved_head_kwargs(cls, raw, inputs, kwargs), **kwargs}
            if from_tf:
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
        return save_model_folder(save_directory, self.config, self.state_dict(), type(self).__name__,
                                 self._head_kwargs())


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
