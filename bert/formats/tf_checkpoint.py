"""Google's TensorFlow BERT checkpoints to our models and back, through one explicit name map.

    bert_model.ckpt.{index,data-*} ──tf_reader──► {google name: array} ──NAME MAP──► model ──► config.json
                                                                                           model.safetensors

Dense kernels are stored [in, out] by TF and [out, in] by torch.nn.Linear, so they are transposed;
``output_weights`` variables (classifier, NSP, SQuAD) are already [out, in] and are not. Optimizer
slots and counters (``adam_m``, ``adam_v``, ``AdamWeightDecayOptimizer*``, ``global_step``) are skipped;
anything else the map does not place is an error that lists every unfilled parameter and every unused
variable with their shapes. Neither reading nor writing needs TensorFlow: bert.formats.tf_reader and
bert.formats.tf_writer handle the files themselves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from bert.formats.tf_reader import CheckpointReader
from bert.formats.tf_writer import write_checkpoint
from bert.io.fileio import atomic_path, scratch_folder
from bert.model.weights import IGNORED_KEYS, TIED_KEYS, normalize_key

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "bert_model.ckpt"
GOOGLE_CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"
# The fields of Google's bert_config.json (their TF code knows no others).
GOOGLE_CONFIG_FIELDS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range",
    "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
    "type_vocab_size", "vocab_size",
)  # fmt: skip
_OPTIMIZER_PARTS = ("adam_m", "adam_v", "global_step")

class CheckpointMismatchError(ValueError):
    """The checkpoint's variables and the model's parameters do not line up."""


# ----------------------------------------------------------------------------------------------
# The name map. Each module of ours <-> a TF scope, in one of four ways:
#   dense:      weight <- kernel (transposed), bias <- bias
#   layer_norm: weight <- gamma,               bias <- beta
#   output:     weight <- output_weights,      bias <- output_bias   (already [out, in])
#   embedding:  weight <- the scope itself


def _module_map(num_layers: int) -> list[tuple[str, str, str]]:
    modules = [
        ("bert.embeddings.word_embeddings", "bert/embeddings/word_embeddings", "embedding"),
        ("bert.embeddings.position_embeddings", "bert/embeddings/position_embeddings", "embedding"),
        ("bert.embeddings.token_type_embeddings", "bert/embeddings/token_type_embeddings", "embedding"),
        ("bert.embeddings.LayerNorm", "bert/embeddings/LayerNorm", "layer_norm"),
    ]
    for i in range(num_layers):
        ours, theirs = f"bert.encoder.layer.{i}", f"bert/encoder/layer_{i}"
        modules += [
            (f"{ours}.attention.self.query", f"{theirs}/attention/self/query", "dense"),
            (f"{ours}.attention.self.key", f"{theirs}/attention/self/key", "dense"),
            (f"{ours}.attention.self.value", f"{theirs}/attention/self/value", "dense"),
            (f"{ours}.attention.output.dense", f"{theirs}/attention/output/dense", "dense"),
            (f"{ours}.attention.output.LayerNorm", f"{theirs}/attention/output/LayerNorm", "layer_norm"),
            (f"{ours}.intermediate.dense", f"{theirs}/intermediate/dense", "dense"),
            (f"{ours}.output.dense", f"{theirs}/output/dense", "dense"),
            (f"{ours}.output.LayerNorm", f"{theirs}/output/LayerNorm", "layer_norm"),
        ]
    modules += [
        ("bert.pooler.dense", "bert/pooler/dense", "dense"),
        # Pre-training heads (run_pretraining.py).
        ("cls.predictions.transform.dense", "cls/predictions/transform/dense", "dense"),
        ("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm", "layer_norm"),
        ("cls.seq_relationship", "cls/seq_relationship", "output"),
        # Fine-tuned heads: run_classifier.py's top-level scope, run_squad.py's cls/squad.
        ("classifier", "", "output"),
        ("qa_outputs", "cls/squad", "output"),
    ]
    return modules


_PARTS = {
    "dense": (("weight", "kernel", True), ("bias", "bias", False)),
    "layer_norm": (("weight", "gamma", False), ("bias", "beta", False)),
    "output": (("weight", "output_weights", False), ("bias", "output_bias", False)),
}


def name_map(num_layers: int) -> dict[str, tuple[str, bool]]:
    """Our parameter names (with the ``bert.`` prefix) -> (Google variable name, transpose?).

    Args:
        num_layers: the config's num_hidden_layers.
    Returns:
        The map, covering the encoder, the pooler and every head's parameters.
    """
    mapping = {}
    for ours, theirs, kind in _module_map(num_layers):
        if kind == "embedding":
            mapping[f"{ours}.weight"] = (theirs, False)
            continue
        for our_part, their_part, transpose in _PARTS[kind]:
            mapping[f"{ours}.{our_part}"] = (f"{theirs}/{their_part}" if theirs else their_part, transpose)
    # The MLM output bias sits on its own (the decoder weight is the tied word embedding matrix).
    mapping["cls.predictions.bias"] = ("cls/predictions/output_bias", False)
    return mapping


def is_optimizer_variable(name: str) -> bool:
    """True for optimizer slots and step counters, which conversion skips."""
    return any(p in _OPTIMIZER_PARTS or p.startswith("AdamWeightDecayOptimizer") for p in name.split("/"))


# ----------------------------------------------------------------------------------------------
# Reading and writing checkpoints.


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The ``bert_model.ckpt`` prefix from a prefix, its .index/.data file, or the folder holding it.

    Raises:
        ValueError: no checkpoint there.
    """
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            found = ", ".join(p.name for p in indexes) or "none"
            raise ValueError(f"{path}: expected one TF checkpoint (*.index) in this folder, found {found}")
        return indexes[0].with_suffix("")
    if path.suffix == ".index" or path.suffix.startswith(".data-"):
        path = path.with_suffix("")
    if not path.with_name(path.name + ".index").is_file():
        raise ValueError(f"{path}: no TF checkpoint here (expected {path.name}.index and {path.name}.data-*)")
    return path


def read_tf_checkpoint(prefix: str | os.PathLike, include_optimizer: bool = False) -> dict[str, np.ndarray]:
    """The variables of a TF checkpoint as numpy arrays, by their TF names, without TensorFlow.

    Every tensor read is checked against its stored CRC32C. String tensors (an object-based checkpoint's
    ``_CHECKPOINTABLE_OBJECT_GRAPH``) are left out; bfloat16 variables come back as float32 (exactly).

    Args:
        prefix: the checkpoint (see checkpoint_prefix for accepted forms).
        include_optimizer: also read Adam slots and counters (twice the model's size, never converted).
    Returns:
        {name: array}, sorted by name.
    Raises:
        ValueError: one line naming the file: no checkpoint there, or a missing, truncated or corrupt file
            (see bert.formats.tf_reader.CheckpointReader).
    """
    reader = CheckpointReader(checkpoint_prefix(prefix))
    return {name: reader.read(name) for name, entry in sorted(reader.entries.items())
            if entry.dtype != "string" and (include_optimizer or not is_optimizer_variable(name))}


def write_tf_checkpoint(variables: Mapping[str, np.ndarray], prefix: str | os.PathLike) -> Path:
    """Write a name-based (TF1 ``tf.train.Saver``-style) checkpoint: ``prefix.index`` + ``prefix.data-*``,
    the files TF's SaveV2 would write, without TensorFlow (bert.formats.tf_writer).

    Google's scripts restore it with ``tf.train.init_from_checkpoint``. Written under a temporary
    prefix and renamed into place (data first, so a reader never sees an index without its data).

    Returns:
        The prefix.
    Raises:
        ValueError: a variable TF checkpoints cannot hold (names it and the prefix); nothing is written.
    """
    prefix = Path(prefix)
    index, data = prefix.with_name(prefix.name + ".index"), prefix.with_name(prefix.name + ".data-00000-of-00001")
    try:
        # bert.io.fileio's writer for both files; the inner one (data) is renamed into place first.
        with atomic_path(index) as tmp_index, atomic_path(data) as tmp_data, scratch_folder(prefix) as work:
            write_checkpoint(variables, work / "ckpt")
            os.replace(work / "ckpt.index", tmp_index)
            os.replace(work / "ckpt.data-00000-of-00001", tmp_data)
    except ValueError as err:  # raised before any file is written
        raise ValueError(f"{prefix}: {err}") from None
    return prefix


# ----------------------------------------------------------------------------------------------
# Checkpoint variables <-> model parameters.


def detect_head(variables: Mapping[str, np.ndarray]) -> tuple[str, dict]:
    """Which model class a checkpoint holds, from the heads' variable names.

    Returns:
        (head name in HEADS, constructor kwargs such as num_labels).
    """
    if "cls/squad/output_weights" in variables:
        return "squad", {}
    if "output_weights" in variables:
        return "classifier", {"num_labels": int(variables["output_weights"].shape[0])}
    mlm = "cls/predictions/output_bias" in variables
    nsp = "cls/seq_relationship/output_weights" in variables
    if mlm and nsp:
        return "pretraining", {}
    return ("masked-lm" if mlm else "next-sentence" if nsp else "model"), {}


def place_tf_variables(variables: Mapping[str, np.ndarray], parameters: Mapping[str, tuple[int, ...]],
                       num_layers: int, target: str, source: str = "checkpoint", allow_unused_heads: bool = False,
                       allow_missing_heads: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """Google-named `variables` onto a model's parameters, by the name map (no model needed).

    Args:
        variables: {TF name: array}, e.g. from read_tf_checkpoint.
        parameters: the model's parameter names and shapes (``named_parameters()``, or
            bert.formats.heads.parameter_shapes for a model not built).
        num_layers: the config's num_hidden_layers.
        target: the model class, named in errors.
        source: named in error messages.
        allow_unused_heads: drop (and log) known head variables that this model has no place for, e.g.
            the pre-training heads when loading into BertModel; unknown variables still fail.
        allow_missing_heads: leave the model's head parameters (not the encoder's) that the checkpoint
            lacks unfilled (a warning names them), e.g. a classifier on a pre-training checkpoint.
    Returns:
        (arrays by parameter name, already transposed to torch's layout; the names of the checkpoint
        variables skipped: optimizer slots, dropped heads).
    Raises:
        CheckpointMismatchError: one line listing each parameter left unfilled, each unused variable and
            each shape mismatch, with shapes.
        ValueError: a variable the model takes holds NaN or infinite values (naming it and `source`).
    """
    mapping = name_map(num_layers)
    prefix = "" if any(k.startswith("bert.") for k in parameters) else "bert."
    values, used, unfilled, mismatched, initialised = {}, set(), [], [], []
    for name, shape in parameters.items():
        tf_name, transpose = mapping[prefix + name]
        if tf_name not in variables:
            if allow_missing_heads and not (prefix + name).startswith("bert."):
                initialised.append(name)
            else:
                unfilled.append(f"{name} {list(shape)} (from {tf_name})")
            continue
        array = variables[tf_name].T if transpose else variables[tf_name]
        used.add(tf_name)
        if tuple(array.shape) != tuple(shape):
            mismatched.append(f"{name} {list(shape)} vs {tf_name} {list(variables[tf_name].shape)}")
            continue
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{source}: variable {tf_name} holds NaN or infinite values "
                             f"({int((~np.isfinite(array)).sum())} of {array.size}); the checkpoint is damaged")
        values[name] = np.ascontiguousarray(array)
    known = {tf_name for tf_name, _ in mapping.values()}
    skipped = [n for n in variables if n not in used and is_optimizer_variable(n)]
    dropped = [n for n in variables if n not in used and allow_unused_heads and n in known
               and not n.startswith("bert/")]
    unused = [f"{n} {list(variables[n].shape)}" for n in variables
              if n not in used and n not in skipped and n not in dropped]
    problems = []
    if unfilled:
        problems.append(f"{len(unfilled)} model parameter(s) not in the checkpoint: {', '.join(unfilled)}")
    if unused:
        problems.append(f"{len(unused)} checkpoint variable(s) not used: {', '.join(unused)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {', '.join(mismatched)}")
    if problems:
        raise CheckpointMismatchError(f"{source} -> {target}: " + "; ".join(problems))
    if dropped:
        logger.info("%s: head variables not used by %s: %s", source, target, ", ".join(dropped))
    if initialised:
        logger.warning("%s: newly initialised (not in the checkpoint; train them): %s", source, ", ".join(initialised))
    return values, skipped + dropped


def load_tf_variables(model: torch.nn.Module, variables: Mapping[str, np.ndarray], source: str = "checkpoint",
                      allow_unused_heads: bool = False, allow_missing_heads: bool = False) -> list[str]:
    """Fill the parameters of `model` (any model of bert.modeling) from Google-named `variables`.

    Arguments, checks and errors as place_tf_variables. Returns the checkpoint variables skipped.
    """
    params = dict(model.named_parameters())  # tied weights appear once, under the embedding's name
    values, skipped = place_tf_variables(variables, {n: tuple(p.shape) for n, p in params.items()},
                                         model.config.num_hidden_layers, type(model).__name__, source,
                                         allow_unused_heads, allow_missing_heads)
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(torch.from_numpy(value).to(params[name].dtype))
    return skipped


def state_dict_to_tf(state_dict: Mapping[str, torch.Tensor], num_layers: int, source: str = "state_dict"
                     ) -> dict[str, np.ndarray]:
    """Our (or HF's) parameter names to Google's variables, float32, kernels transposed back.

    Raises:
        CheckpointMismatchError: a parameter the map does not know (listed).
    """
    mapping = name_map(num_layers)
    has_prefix = any(k.startswith("bert.") for k in state_dict)
    out, unknown = {}, []
    for key, tensor in state_dict.items():
        key = normalize_key(key)
        if key in TIED_KEYS or IGNORED_KEYS.search(key):
            continue
        full = key if has_prefix or not key.startswith(("embeddings.", "encoder.", "pooler.")) else "bert." + key
        if full not in mapping:
            unknown.append(f"{key} {list(tensor.shape)}")
            continue
        tf_name, transpose = mapping[full]
        array = tensor.detach().float().cpu().numpy()
        out[tf_name] = np.ascontiguousarray(array.T if transpose else array)
    if unknown:
        raise CheckpointMismatchError(
            f"{source}: {len(unknown)} parameter(s) with no Google name: {', '.join(unknown)}")
    return out




def tf_checkpoint_in_folder(folder: str | os.PathLike) -> Path:
    """The checkpoint prefix in a model folder: the original's ``model.ckpt``, Google's ``bert_model.ckpt``,
    or the folder's only ``*.index``.

    Raises:
        ValueError: none, or several and neither of those names.
    """
    folder = Path(folder)
    for name in ("model.ckpt", CHECKPOINT_NAME):
        if (folder / f"{name}.index").is_file():
            return folder / name
    return checkpoint_prefix(folder)


def load_tf_weights_in_bert(model: torch.nn.Module, tf_checkpoint_path: str | os.PathLike) -> torch.nn.Module:
    """Fill `model` (any model of bert.modeling) from a Google TF checkpoint, as pytorch-pretrained-bert's
    function of this name: optimizer slots are skipped, and so are the variables of heads `model` has no
    place for (the pre-training heads when loading into BertModel, say); head parameters the checkpoint lacks
    keep their initial values (a warning names them), but every encoder weight must be there.

    Args:
        model: the model to fill in place.
        tf_checkpoint_path: the checkpoint prefix (``.../bert_model.ckpt``), one of its files, or its folder.
    Returns:
        `model`.
    Raises:
        CheckpointMismatchError: an encoder parameter is not in the checkpoint, or a shape differs.
        ValueError: an unreadable checkpoint.
    """
    variables = read_tf_checkpoint(tf_checkpoint_path)
    load_tf_variables(model, variables, str(tf_checkpoint_path), allow_unused_heads=True, allow_missing_heads=True)
    return model
