"""The checks a feature cache passes when it is opened (bert.data.cache), each failure one line naming the file.

A cache is read by hand too (``python -m stages.evaluate`` with no DVC to notice a change), so nothing in it
is taken on trust:

- the files are the ones tokenize wrote: their sha256 is the manifest's (flipped labels, swapped offsets,
  a metadata.json from another run);
- the manifest's fields have their types; the tensors file holds every tensor the manifest lists;
- offsets start at 0, never decrease and end at the number of tokens; token ids are not negative;
- every label is one the task has: a class index below the number of label names, a choice below
  num_choices, a finite regression score, an answer span inside its own row, a next-sentence label 0 or 1;
- metadata.json has one entry per feature.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from bert.io.fileio import sha256_of
from bert.io.jsonfile import check_shape

REMAKE = "make the features again (python -m stages.tokenize, or dvc repro)"

# manifest.json: field -> the JSON types it may hold.
FIELD_TYPES: dict[str, Any] = {
    "task": str, "split": str, "vocab_sha256": str, "do_lower_case": bool, "max_seq_length": int,
    "doc_stride": (int, type(None)), "max_query_length": (int, type(None)), "num_examples": int,
    "num_features": int, "num_truncated": int, "label_keys": list, "num_choices": int, "extra": dict,
    "sha256": dict, "format_version": int,
}
_COUNTS = ("max_seq_length", "num_examples", "num_features", "num_truncated", "num_choices")
_CLASSIFICATION = ("single_classification", "pair_classification")


def check_manifest_fields(path: Path, raw: Mapping[str, Any]) -> None:
    """Each field of a manifest.json has its type; counts are not negative; label_keys are names."""
    for key, kinds in FIELD_TYPES.items():
        if key in raw:
            check_shape(raw[key], kinds, f"{path}: {key!r}")
    for key in _COUNTS:
        if raw.get(key, 0) < 0:
            raise ValueError(f"{path}: {key!r} is {raw[key]}, expected a count (0 or more)")
    if not all(isinstance(k, str) for k in raw["label_keys"]):
        raise ValueError(f"{path}: 'label_keys' should be a list of tensor names, got {raw['label_keys']!r}")


def check_digest(path: Path, digests: Mapping[str, str]) -> None:
    """`path`'s sha256 is the one its manifest recorded."""
    expected = digests.get(path.name)
    if expected is None:
        raise ValueError(f"{path.parent / 'manifest.json'}: records no sha256 of {path.name}; {REMAKE}")
    if sha256_of(path) != expected:
        raise ValueError(f"{path}: changed since it was written (its sha256 is not the one manifest.json "
                         f"records); {REMAKE}")


def check_tensors(path: Path, tensors: Mapping[str, Tensor], manifest: Any) -> None:
    """The tensors of features.safetensors against their manifest (see the module docstring).

    Args:
        path: the tensors file (named in errors).
        tensors: its content.
        manifest: the split's CacheManifest.
    """
    for key in ("input_ids", "token_type_ids", "offsets", *manifest.label_keys):
        if key not in tensors:
            raise ValueError(f"{path}: no tensor {key!r} (the manifest lists the labels "
                             f"{list(manifest.label_keys)}); {REMAKE}")
    ids, types, offsets = tensors["input_ids"], tensors["token_type_ids"], tensors["offsets"]
    for key, t in (("input_ids", ids), ("token_type_ids", types), ("offsets", offsets)):
        if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"{path}: {key!r} should be a 1-D integer tensor, got {t.dtype} of shape {list(t.shape)}")
    if len(types) != len(ids):
        raise ValueError(f"{path}: {len(types)} token_type_ids for {len(ids)} input_ids")
    rows = manifest.num_features * max(manifest.num_choices, 1)
    if len(offsets) != rows + 1:
        raise ValueError(f"{path}: {len(offsets) - 1} rows stored, the manifest implies {rows}")
    lengths = offsets[1:] - offsets[:-1]
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(ids) or bool((lengths < 0).any()):
        raise ValueError(f"{path}: 'offsets' should rise from 0 to {len(ids)} (the number of tokens), "
                         f"found {_sample(offsets)}")
    if len(ids) and int(ids.min()) < 0:
        raise ValueError(f"{path}: negative token ids in 'input_ids'")
    for key in manifest.label_keys:
        _check_labels(path, key, tensors[key], manifest, lengths)
    if "start_positions" in manifest.label_keys and "end_positions" in manifest.label_keys:
        check_spans(path, tensors["start_positions"], tensors["end_positions"])


def _check_labels(path: Path, key: str, values: Tensor, manifest: Any, lengths: Tensor) -> None:
    n = manifest.num_features
    if values.dim() == 0 or len(values) != n:
        raise ValueError(f"{path}: {key!r} holds {values.numel()} values for {n} features")
    kind, names = manifest.extra.get("kind"), manifest.extra.get("labels")
    where = f"{path}: {key!r}"
    if values.dtype.is_floating_point:
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{where}: {_first(values, ~torch.isfinite(values))} is not a finite number")
        if kind not in (None, "regression", "multi_label_classification"):
            raise ValueError(f"{where}: numbers, but a {kind} task has class indices")
        return
    bound, what = None, ""
    if key in ("start_positions", "end_positions"):
        bound, what = lengths.view(n, -1)[:, 0], "its row's length"
    elif key == "next_sentence_label":
        bound, what = 2, "2 (0: B follows A, 1: B is random)"
    elif manifest.num_choices:
        bound, what = manifest.num_choices, f"num_choices ({manifest.num_choices})"
    elif kind in _CLASSIFICATION or isinstance(names, list):
        if not names:
            raise ValueError(f"{path.parent / 'manifest.json'}: a {kind} task with no label names in 'extra'")
        bound, what = len(names), f"the task's {len(names)} labels {names}"
    if bound is None:
        return
    bad = (values < 0) | (values >= bound)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{where}: feature {i} has {int(values[i])}, outside [0, {what}); {REMAKE}")


def check_spans(path: Path, starts: Tensor, ends: Tensor) -> None:
    """Every answer span starts before it ends."""
    bad = starts > ends
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{path}: feature {i}: start_positions {int(starts[i])} after end_positions {int(ends[i])}")


def check_metadata(path: Path, metadata: Any, num_features: int) -> None:
    """metadata.json: a list of one entry per feature, or an object whose lists (e.g. "ids") have one each."""
    check_shape(metadata, (list, dict), str(path))
    lists = {"": metadata} if isinstance(metadata, list) else \
        {f" {k!r}": v for k, v in metadata.items() if isinstance(v, list)}
    for key, values in lists.items():
        if len(values) != num_features:
            raise ValueError(f"{path}:{key} {len(values)} entries for {num_features} features; {REMAKE}")


def _first(values: Tensor, mask: Tensor) -> str:
    i = int(mask.nonzero()[0, 0])
    return f"feature {i}'s value {float(values[i])}"


def _sample(t: Tensor) -> str:
    shown = t[:6].tolist()
    return f"{shown}{' ...' if len(t) > 6 else ''}"


def file_digests(folder: str | os.PathLike, names: tuple[str, ...]) -> dict[str, str]:
    """name -> sha256 of each of `names` present in `folder`."""
    folder = Path(folder)
    return {name: sha256_of(folder / name) for name in names if (folder / name).is_file()}
