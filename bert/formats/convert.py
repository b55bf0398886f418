"""Whole conversions between Google's TensorFlow checkpoints and model folders (what
``bert convert-tf-checkpoint`` / ``export-tf-checkpoint`` and the hub run); the name map and the
checkpoint reading and writing are in bert.formats.tf_checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import torch

from bert.formats.heads import HEADS, parameter_shapes
from bert.formats.tf_checkpoint import (
    CHECKPOINT_NAME,
    GOOGLE_CONFIG_FIELDS,
    GOOGLE_CONFIG_NAME,
    VOCAB_NAME,
    checkpoint_prefix,
    detect_head,
    place_tf_variables,
    read_tf_checkpoint,
    state_dict_to_tf,
    write_tf_checkpoint,
)
from bert.io.fileio import atomic_path, scratch_folder
from bert.model.config import BertConfig
from bert.model.weights import (
    CONFIG_NAMES,
    WEIGHTS_NAMES,
    find_file,
    load_state_dict_file,
    save_model_folder,
)

logger = logging.getLogger(__name__)

__all__ = ["HEADS", "CHECKPOINT_NAME", "convert_tf_checkpoint", "export_tf_checkpoint", "opened_checkpoint",
           "locate_google_checkpoint"]

@contextlib.contextmanager
def opened_checkpoint(path: str | os.PathLike, work_dir: str | os.PathLike | None = None
                      ) -> Iterator[tuple[Path, Optional[Path], Optional[Path]]]:
    """(checkpoint prefix, bert_config.json or None, vocab.txt or None) for a prefix, folder or
    Google's released zip/tar (extracted safely into a temporary folder under `work_dir`, default the
    system's, for the duration)."""
    path = Path(path)
    if path.is_file() and path.suffix in (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"):
        from bert.io.archive import safe_extract

        # A scratch folder of bert.io.fileio: what a killed conversion left there is removed by the next one.
        near = Path(work_dir if work_dir is not None else tempfile.gettempdir()) / "bert-tf-extract"
        with scratch_folder(near) as tmp:
            safe_extract(path, tmp)
            yield locate_google_checkpoint(tmp, source=str(path))
        return
    prefix = checkpoint_prefix(path)
    yield prefix, _beside(prefix, GOOGLE_CONFIG_NAME), _beside(prefix, VOCAB_NAME)


def _beside(prefix: Path, name: str) -> Optional[Path]:
    return prefix.parent / name if (prefix.parent / name).is_file() else None


def locate_google_checkpoint(folder: Path, source: str = "") -> tuple[Path, Optional[Path], Optional[Path]]:
    """Find the checkpoint in an extracted release: at the top or one folder down (Google's zips
    hold ``uncased_L-12_H-768_A-12/bert_model.ckpt.*``; the 2020 small BERTs have no folder).

    Raises:
        ValueError: no checkpoint, or more than one.
    """
    indexes = sorted(folder.glob("*.index")) + sorted(folder.glob("*/*.index"))
    if len(indexes) != 1:
        found = ", ".join(str(p.relative_to(folder)) for p in indexes) or "none"
        raise ValueError(f"{source or folder}: expected one TF checkpoint (*.ckpt.index), found {found}")
    prefix = indexes[0].with_suffix("")
    return prefix, _beside(prefix, GOOGLE_CONFIG_NAME), _beside(prefix, VOCAB_NAME)


def convert_tf_checkpoint(tf_checkpoint: str | os.PathLike, bert_config: str | os.PathLike | None,
                          out_dir: str | os.PathLike, head: str = "auto", allow_unused_heads: bool = False,
                          **head_kwargs) -> Path:
    """Convert a Google TF checkpoint to ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``).

    Args:
        tf_checkpoint: the ``bert_model.ckpt`` prefix, its folder, or Google's released zip.
        bert_config: bert_config.json; None takes the one beside the checkpoint.
        out_dir: created if missing; the files are written atomically.
        head: a key of bert.formats.heads.HEADS, or "auto" to follow the checkpoint's variables.
        allow_unused_heads: with an explicit smaller head, drop the other heads' variables.
        head_kwargs: e.g. num_labels, num_choices (auto fills num_labels from output_weights).
    Returns:
        out_dir.
    Raises:
        ValueError: a missing config, an unreadable checkpoint, or a CheckpointMismatchError.
    """
    if head != "auto" and head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected auto or one of {', '.join(HEADS)}")
    out_dir = Path(out_dir)
    # A zip is extracted beside the output (BERT-Large expands to 1.3 GB; /tmp may be small).
    with opened_checkpoint(tf_checkpoint, out_dir.resolve().parent) as (prefix, found_config, vocab):
        config_path = Path(bert_config) if bert_config else found_config
        if config_path is None:
            raise ValueError(f"{tf_checkpoint}: no {GOOGLE_CONFIG_NAME} beside the checkpoint; pass BERT_CONFIG")
        config = BertConfig.from_json_file(config_path)
        variables = read_tf_checkpoint(prefix)
        if head == "auto":
            head, detected = detect_head(variables)
            head_kwargs = {**detected, **head_kwargs}
        # The model the checkpoint holds, by name and shape alone: conversion builds no model.
        shapes = parameter_shapes(config, head, head_kwargs.get("num_labels", 2))
        arrays, skipped = place_tf_variables(variables, shapes, config.num_hidden_layers, HEADS[head],
                                             str(tf_checkpoint), allow_unused_heads)
        logger.info("%s: %d variables -> %s", tf_checkpoint, len(variables) - len(skipped), HEADS[head])
        kept = {k: v for k, v in head_kwargs.items() if k in ("num_labels", "num_choices")}
        if head in ("classifier", "token-classifier"):
            kept.setdefault("num_labels", 2)
        if head == "multiple-choice":
            kept.setdefault("num_choices", 4)
        save_model_folder(out_dir, config, {k: torch.from_numpy(v) for k, v in arrays.items()}, HEADS[head], kept)
        if vocab is not None:
            with atomic_path(out_dir / VOCAB_NAME) as tmp:
                shutil.copyfile(vocab, tmp)
    return out_dir


def export_tf_checkpoint(model_dir: str | os.PathLike, out_prefix: str | os.PathLike) -> Path:
    """Write a model folder as a Google TF checkpoint that Google's scripts load.

    Writes ``OUT_PREFIX.index`` / ``.data-00000-of-00001``, ``bert_config.json`` (Google's fields) and
    ``vocab.txt`` (when the model folder has one) beside it.

    Args:
        model_dir: a folder with config.json and model.safetensors (or pytorch_model.bin).
        out_prefix: e.g. ``out/bert_model.ckpt``.
    Returns:
        The prefix.
    """
    model_dir, out_prefix = Path(model_dir), Path(out_prefix)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: not a model folder")
    config = BertConfig.from_json_file(find_file(model_dir, CONFIG_NAMES, "config file"))
    weights = find_file(model_dir, WEIGHTS_NAMES, "weights file")
    variables = state_dict_to_tf(load_state_dict_file(weights), config.num_hidden_layers, str(weights))
    write_tf_checkpoint(variables, out_prefix)
    google = {k: v for k, v in config.to_dict().items() if k in GOOGLE_CONFIG_FIELDS}
    if google["hidden_act"] not in ("gelu", "relu"):
        # Kept as it is so that export then convert is the identity; Google's code needs "gelu" here
        # (its gelu is the tanh form since February 2019).
        logger.warning("%s: hidden_act=%r is unknown to Google's TF code", model_dir, google["hidden_act"])
    if config.layer_norm_eps != 1e-12:
        logger.warning("%s: layer_norm_eps=%g, but Google's TF code always uses 1e-12", model_dir,
                       config.layer_norm_eps)
    with atomic_path(out_prefix.parent / GOOGLE_CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(google, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if (model_dir / VOCAB_NAME).is_file() and (model_dir / VOCAB_NAME).resolve() != (
            out_prefix.parent / VOCAB_NAME).resolve():
        with atomic_path(out_prefix.parent / VOCAB_NAME) as tmp:
            shutil.copyfile(model_dir / VOCAB_NAME, tmp)
    logger.info("%s -> %s (%d variables)", model_dir, out_prefix, len(variables))
    return out_prefix
