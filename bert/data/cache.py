"""The tokenized-tensor cache: tokenize once, train and evaluate from tensors.

One folder per split, written atomically:

    manifest.json         what produced the tensors (vocab sha256, casing, lengths), counts, and the sha256
                          of the two files below (checked when the cache is opened)
    features.safetensors  input_ids (int32) and token_type_ids (uint8) of every row, concatenated,
                          offsets (int64, rows + 1): row r is flat[offsets[r]:offsets[r + 1]],
                          and one tensor per label key (labels, or start_positions + end_positions)
    metadata.json         optional per-feature data for post-processing (SQuAD token maps, ids)

A row is one sequence at its true length (no padding). A multiple-choice feature is num_choices
consecutive rows. ``pad_collate`` pads a batch to its own longest sequence and builds the mask.

Opening a cache checks it whole (bert.data.cache_checks): its files' sha256, every tensor the manifest lists,
the offsets, each label against the task's labels, one metadata entry per feature.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bert.data import cache_checks
from bert.io.fileio import atomic_path, disk_full_names
from bert.io.jsonfile import read_json, read_json_object
from bert.model.plan import Packing

FORMAT_VERSION = 2  # 2: the manifest records the sha256 of features.safetensors and metadata.json
MANIFEST = "manifest.json"
TENSORS = "features.safetensors"
METADATA = "metadata.json"
SEQUENCE_KEYS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass(frozen=True)
class CacheManifest:
    """What produced a cached split and what it holds.

    ``num_truncated`` counts examples that lost tokens: a pair cut to max_seq_length, a choice of a
    multiple-choice example cut, a SQuAD question cut to max_query_length or a context that needed
    more than one window. ``num_choices`` is 0 unless the features are multiple choice.
    """

    task: str
    split: str
    vocab_sha256: str
    do_lower_case: bool
    max_seq_length: int
    doc_stride: Optional[int]
    max_query_length: Optional[int]
    num_examples: int
    num_features: int
    num_truncated: int
    label_keys: tuple[str, ...]
    num_choices: int = 0
    extra: dict = field(default_factory=dict)  # task specifics, e.g. {"labels": ["0", "1"]}
    # file name -> sha256 of features.safetensors and metadata.json, filled in by write_cache_folder
    sha256: dict = field(default_factory=dict, compare=False)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def write_cache(
    folder: str | os.PathLike,
    input_ids: Sequence[Sequence[Any]],
    token_type_ids: Sequence[Sequence[Any]],
    labels: dict[str, Sequence],
    manifest: CacheManifest,
    metadata: Optional[Any] = None,
) -> Path:
    """Write one split's features as a cache folder (atomically: a temp folder renamed into place).

    Args:
        folder: the split's folder, e.g. data/features/mrpc/train.
        input_ids, token_type_ids: one unpadded id list per feature; for multiple choice one list of
            num_choices id lists per feature.
        labels: label key -> one value per feature (ints, floats for regression, a list of floats for a
            multi-hot row); {} when unlabelled.
        manifest: the record written to manifest.json (its num_features must match).
        metadata: JSON-serialisable data for post-processing, or None.
    Returns:
        the folder.
    """
    n = len(input_ids)
    if len(token_type_ids) != n or manifest.num_features != n:
        raise ValueError(f"{folder}: {n} input_ids, {len(token_type_ids)} token_type_ids, "
                         f"manifest says {manifest.num_features} features")
    rows_ids, rows_types = input_ids, token_type_ids
    if manifest.num_choices:
        for i, choices in enumerate(input_ids):
            if len(choices) != manifest.num_choices or len(token_type_ids[i]) != manifest.num_choices:
                raise ValueError(f"{folder}: feature {i} has {len(choices)} choices, expected {manifest.num_choices}")
        rows_ids = [row for choices in input_ids for row in choices]
        rows_types = [row for choices in token_type_ids for row in choices]
    lengths = [len(row) for row in rows_ids]
    if any(len(t) != length for t, length in zip(rows_types, lengths)):
        raise ValueError(f"{folder}: input_ids and token_type_ids lengths differ")
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    tensors = {
        "input_ids": torch.tensor([t for row in rows_ids for t in row], dtype=torch.int32),
        "token_type_ids": torch.tensor([t for row in rows_types for t in row], dtype=torch.uint8),
        "offsets": offsets,
    }
    if set(labels) != set(manifest.label_keys):
        raise ValueError(f"{folder}: labels {sorted(labels)} differ from the manifest's {list(manifest.label_keys)}")
    for key, values in labels.items():
        if len(values) != n:
            raise ValueError(f"{folder}: {len(values)} values of {key} for {n} features")
        is_float = any(isinstance(v, float) or (isinstance(v, (list, tuple)) and any(isinstance(x, float) for x in v))
                       for v in values)  # regression scores, multi-hot rows
        tensors[key] = torch.tensor(values, dtype=torch.float32 if is_float else torch.int64)
    return write_cache_folder(folder, tensors, manifest, metadata)


def write_cache_folder(folder: str | os.PathLike, tensors: dict[str, Tensor], manifest: CacheManifest,
                       metadata: Optional[Any] = None) -> Path:
    """Write a cache folder atomically: the tensors, metadata.json, and manifest.json recording their sha256.

    Returns:
        the folder.
    """
    from safetensors.torch import save_file

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        with disk_full_names(tmp / TENSORS):
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        if metadata is not None:
            with disk_full_names(tmp / METADATA):
                (tmp / METADATA).write_text(json.dumps(metadata), encoding="utf-8")
        digests = cache_checks.file_digests(tmp, (TENSORS, METADATA))
        with disk_full_names(tmp / MANIFEST):
            (tmp / MANIFEST).write_text(dataclasses.replace(manifest, sha256=digests).to_json(), encoding="utf-8")
    return Path(folder)


def read_manifest(folder: str | os.PathLike) -> CacheManifest:
    """Read and check a cache folder's manifest.json.

    Raises:
        FileNotFoundError: the folder or its manifest is missing.
        ValueError: the manifest is unreadable or from another format version.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a feature cache (no {MANIFEST})")
    raw = read_json_object(path)
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: expected a feature cache manifest of format_version {FORMAT_VERSION}, found "
                         f"{raw.get('format_version')!r}; {cache_checks.REMAKE}")
    names = {f.name for f in dataclasses.fields(CacheManifest)}
    missing = sorted(names - raw.keys() - {"extra", "num_choices"})
    if missing:
        raise ValueError(f"{path}: manifest misses {', '.join(missing)}")
    cache_checks.check_manifest_fields(path, raw)
    raw["label_keys"] = tuple(raw["label_keys"])
    return CacheManifest(**{k: v for k, v in raw.items() if k in names})


class CachedFeatures(Dataset):
    """A cache folder as a Dataset of model kwargs.

    Item i: ``input_ids`` and ``token_type_ids`` (int64; 1-D at the true length, or for multiple
    choice [num_choices, longest choice] with an ``attention_mask`` marking each choice's length)
    plus the label keys as 0-d tensors. ``lengths`` gives each item's true (longest) length.
    """

    def __init__(self, folder: str | os.PathLike):
        from safetensors.torch import load_file

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        path = self.folder / TENSORS
        try:
            tensors = load_file(str(path))
        except Exception as err:  # a truncated or foreign file: one line naming it
            raise ValueError(f"{path}: not a readable feature file ({err})") from None
        cache_checks.check_digest(path, self.manifest.sha256)
        cache_checks.check_tensors(path, tensors, self.manifest)
        self._ids, self._types, self._offsets = tensors["input_ids"], tensors["token_type_ids"], tensors["offsets"]
        self._labels = {k: tensors[k] for k in self.manifest.label_keys}
        self._choices = max(self.manifest.num_choices, 1)
        row_lengths = (self._offsets[1:] - self._offsets[:-1]).view(-1, self._choices)
        self.lengths: list[int] = row_lengths.max(dim=1).values.tolist()
        self._metadata: Any = None

    def __len__(self) -> int:
        return self.manifest.num_features

    def _row(self, r: int) -> tuple[Tensor, Tensor]:
        start, end = int(self._offsets[r]), int(self._offsets[r + 1])
        return self._ids[start:end].long(), self._types[start:end].long()

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"feature {i} out of range ({len(self)} features)")
        if not self.manifest.num_choices:
            ids, types = self._row(i)
            item = {"input_ids": ids, "token_type_ids": types}
        else:
            rows = [self._row(i * self._choices + c) for c in range(self._choices)]
            longest = max(len(ids) for ids, _ in rows)
            item = {
                "input_ids": torch.zeros(self._choices, longest, dtype=torch.long),
                "token_type_ids": torch.zeros(self._choices, longest, dtype=torch.long),
                "attention_mask": torch.zeros(self._choices, longest, dtype=torch.long),
            }
            for c, (ids, types) in enumerate(rows):
                item["input_ids"][c, : len(ids)] = ids
                item["token_type_ids"][c, : len(ids)] = types
                item["attention_mask"][c, : len(ids)] = 1
        for key, values in self._labels.items():
            item[key] = values[i]
        return item

    def labels(self, key: str = "labels") -> Tensor:
        """All values of a label key, in feature order."""
        if key not in self._labels:
            raise ValueError(f"{self.folder}: no {key!r} labels (the split has {list(self._labels) or 'none'})")
        return self._labels[key]

    @property
    def metadata(self) -> Any:
        """The split's metadata.json (None when it has none), read once and checked (its sha256, one entry per
        feature)."""
        path = self.folder / METADATA
        if self._metadata is None and (path.is_file() or METADATA in self.manifest.sha256):
            metadata = read_json(path)  # missing or damaged: one line naming it
            cache_checks.check_digest(path, self.manifest.sha256)
            cache_checks.check_metadata(path, metadata, self.manifest.num_features)
            self._metadata = metadata
        return self._metadata


def pad_collate(items: Sequence[dict[str, Tensor]], pad_id: int = 0) -> dict[str, Any]:
    """pad_batch, then add_packing: what the training and prediction loops take."""
    return add_packing(pad_batch(items, pad_id))


def pad_batch(items: Sequence[dict[str, Tensor]], pad_id: int = 0) -> dict[str, Tensor]:
    """Stack items into a batch padded to its longest sequence, with an attention_mask.

    # input_ids       [[101, 7592, 102], [101, 102, 0]]    (pad_id fills the short rows)
    # attention_mask  [[1, 1, 1],        [1, 1, 0]]

    Args:
        items: CachedFeatures items (all 1-D, or all [num_choices, len]).
        pad_id: the id that fills input_ids (token_type_ids and the mask fill with 0).
    Returns:
        key -> batched tensor; sequences [batch, (num_choices,) longest].
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    longest = max(item["input_ids"].shape[-1] for item in items)
    batch: dict[str, Tensor] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key not in SEQUENCE_KEYS:
            batch[key] = torch.stack(values)
            continue
        fill = pad_id if key == "input_ids" else 0
        shape = (len(items), *values[0].shape[:-1], longest)
        out = torch.full(shape, fill, dtype=values[0].dtype)
        for b, v in enumerate(values):
            out[b, ..., : v.shape[-1]] = v
        batch[key] = out
    if "attention_mask" not in batch:
        mask = torch.zeros(batch["input_ids"].shape, dtype=torch.long)
        for b, item in enumerate(items):
            mask[b, ..., : item["input_ids"].shape[-1]] = 1
        batch["attention_mask"] = mask
    return batch


def add_packing(batch: dict[str, Any], masked_lm_labels: Optional[Tensor] = None) -> dict[str, Any]:
    """Add "packing", where the batch's real tokens (and labelled positions) are, when there is something
    to skip. Computed here, on the CPU where the batch is made, so that the model never reads the device."""
    packing = Packing.from_mask(batch["attention_mask"], masked_lm_labels)
    if packing is not None:
        batch["packing"] = packing
    return batch
