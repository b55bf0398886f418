"""Your own dataset: a classification, multi-label or regression task in your CSV, TSV or JSONL files, read and
checked row by row, then kept as a normalised folder that the stages read as they read a GLUE task's.

    your file (reviews.csv)               the normalised split (data/raw/<task>/train.jsonl)
    review,sentiment                      {"id": "train-2", "text_a": "Loved it.", "label": "positive"}
    Loved it.,positive

    kind            the label column                            head, loss; metric
    classification  one label name                              softmax, cross-entropy; accuracy
    multi-label     names joined by label_separator ("a,b"),    sigmoid per label, binary cross-entropy;
                    or a JSON list in JSONL; empty: no label    micro and macro F1
    regression      a number                                    one output, MSE; Pearson and Spearman

One text column, or two (a pair: [CLS] a [SEP] b [SEP]). The label names, in id order, are the ``labels``
given, or else those the train split holds, sorted (as numbers when every name is one: 1 2 10). A bad row is a
DataFormatError naming the file, the line and the column.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import atomic_write_text
from bert.io.jsonfile import read_json_object
from bert.tasks.records import DataFormatError, InputExample, read_utf8
from bert.tasks.registry import TaskKind, TaskSpec
from bert.tasks.tables import TABLE_SUFFIXES, read_jsonl, read_table

KINDS = ("classification", "multi-label", "regression")
FORMATS = ("csv", "tsv", "jsonl")
SPLITS = ("train", "dev", "test")
FILES = {split: f"{split}.jsonl" for split in SPLITS}  # the normalised folder's splits (test: when given)
DESCRIPTION = "dataset.json"  # the normalised folder's record: kind, text columns, label names and their origin
METRICS = {TaskKind.SINGLE_CLASSIFICATION: "acc", TaskKind.PAIR_CLASSIFICATION: "acc",
           TaskKind.MULTI_LABEL_CLASSIFICATION: "multilabel_f1", TaskKind.REGRESSION: "pearson_and_spearman"}


@dataclass(frozen=True)
class Layout:
    """How a dataset's files read.

    Attributes:
        kind: "classification", "multi-label" or "regression".
        text: the text column, or the two columns of a pair.
        label: the label column.
        labels: the label names in id order (None: inferred from the train split; regression: None).
        label_separator: multi-label: what separates a cell's names.
        id: the column that names each row (None: the split and line number, "train-12").
        format: "csv", "tsv" or "jsonl" (None: from the file's suffix).
    """

    kind: str
    text: tuple[str, ...]
    label: str
    labels: Optional[tuple[str, ...]] = None
    label_separator: str = ","
    id: Optional[str] = None
    format: Optional[str] = None

    @property
    def task_kind(self) -> TaskKind:
        """The head and features of this layout (a pair of text columns: pair classification)."""
        if self.kind == "regression":
            return TaskKind.REGRESSION
        if self.kind == "multi-label":
            return TaskKind.MULTI_LABEL_CLASSIFICATION
        return TaskKind.PAIR_CLASSIFICATION if len(self.text) == 2 else TaskKind.SINGLE_CLASSIFICATION


def file_format(path: str | os.PathLike, given: Optional[str] = None) -> str:
    """The format a file is read in: `given`, else its suffix's (.csv, .tsv, .jsonl)."""
    if given is not None:
        return given
    fmt = TABLE_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataFormatError(f"{path}: the name does not say its format; expected a .csv, .tsv or .jsonl file "
                              "(or say it with format: csv, tsv or jsonl)")
    return fmt


def read_split(path: str | os.PathLike, layout: Layout, split: str, labels: Optional[tuple[str, ...]] = None
               ) -> list[InputExample]:
    """Read and check one split's file.

    Args:
        path: the file.
        layout: its columns and kind.
        split: "train", "dev" or "test" (a test row's label is read when its cell is there and not empty, else
            None).
        labels: the names a label must be one of (None: any; train when the names are inferred from it).
    Returns:
        The examples in file order; a multi-label example's label is a tuple of names, a regression one's the
        number as text.
    Raises:
        DataFormatError: naming the file, the line and the column: a missing column, an empty text, a label
            not in `labels`, a non-numeric or non-finite regression value, a ragged row, a bad JSON line, no rows.
    """
    source = str(path)
    fmt = file_format(path, layout.format)
    text = read_utf8(path)
    rows = read_jsonl(source, text) if fmt == "jsonl" else read_table(source, text, fmt)
    if not rows.rows:
        raise DataFormatError(f"{source}: no rows: the {split} split would be empty")
    if fmt != "jsonl":  # a table's header names its columns once
        header = list(rows.rows[0][1])
        wanted = [*layout.text, *([layout.label] if split != "test" else []), *([layout.id] if layout.id else [])]
        for column in wanted:
            if column not in header:
                raise DataFormatError(f"{source}:{rows.header_line}: no column {column!r} (the header names "
                                      f"{', '.join(map(repr, header))})")
    examples = []
    for line, fields in rows.rows:
        texts = [_text(source, line, fields, column) for column in layout.text]
        label = None
        if split != "test" or fields.get(layout.label) not in (None, ""):  # a test row may have no label
            label = _label(source, line, fields, layout, labels)
        guid = f"{split}-{line}" if layout.id is None else _text(source, line, fields, layout.id)
        examples.append(InputExample(guid, texts[0], texts[1] if len(texts) == 2 else None, label))
    return examples


def _text(source: str, line: int, fields: dict, column: str) -> str:
    value = fields.get(column)
    if value is None:
        raise DataFormatError(f"{source}:{line}: no column {column!r} in this row")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFormatError(f"{source}:{line}: column {column!r} holds {type(value).__name__}, expected text")
    value = str(value)
    if not value.strip():
        raise DataFormatError(f"{source}:{line}: column {column!r} is empty; a text is required")
    return value


def _label(source: str, line: int, fields: dict, layout: Layout, labels: Optional[tuple[str, ...]]) -> Any:
    where, value = f"{source}:{line}: column {layout.label!r}", fields.get(layout.label)
    if value is None:
        raise DataFormatError(f"{source}:{line}: no column {layout.label!r} in this row")
    if layout.kind == "regression":
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            number = float(value)
        except ValueError:
            raise DataFormatError(f"{where}: {value!r} is not a number (a regression target)") from None
        if not math.isfinite(number):  # nan, inf, 1e400: a NaN loss, a NaN model
            raise DataFormatError(f"{where}: {value!r} is not a finite number")
        return repr(number)
    if layout.kind == "multi-label":
        if isinstance(value, list):
            names = value
        elif isinstance(value, str):
            names = value.split(layout.label_separator)
        else:
            raise DataFormatError(f"{where} holds {type(value).__name__}, expected label names joined by "
                                  f"{layout.label_separator!r} (or a JSON list of names)")
        found = []
        for name in names:
            if not isinstance(name, str):
                raise DataFormatError(f"{where}: {name!r} is not a label name (text)")
            if name.strip() and name.strip() not in found:
                found.append(name.strip())
        for name in found:
            _known(where, name, labels)
        return tuple(found)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f"{where} holds {type(value).__name__}, expected a label name")
    name = str(value).strip()
    if not name:
        raise DataFormatError(f"{where} is empty; a label is required")
    _known(where, name, labels)
    return name


def _known(where: str, name: str, labels: Optional[tuple[str, ...]]) -> None:
    if labels is not None and name not in labels:
        raise DataFormatError(f"{where}: label {name!r} is not one of the labels {list(labels)}")


def infer_labels(examples: list[InputExample]) -> tuple[str, ...]:
    """The label names a split holds, sorted: as numbers when every name is one (1 2 10), else as text."""
    names = {name for e in examples for name in (e.label if isinstance(e.label, tuple) else (e.label,))}
    try:
        return tuple(sorted(names, key=float))
    except ValueError:
        return tuple(sorted(names))


def split_examples(examples: list[InputExample], ratios: dict[str, float], seed: int, what: str,
                   renumber: bool = True) -> dict[str, list[InputExample]]:
    """Cut one file's examples into train and the splits of `ratios` (dev, test), at random but reproducibly.

    Args:
        examples: the file's, in order.
        ratios: split -> the fraction of the examples it gets (round(fraction x rows) of them).
        seed: seeds the shuffle (Python's random.Random).
        what: the file and setting, for messages.
        renumber: the guids are "train-<line>" (no id column): rename them to their split ("dev-12").
    Returns:
        split -> its examples, each split in file order.
    Raises:
        ValueError: a split that would be empty.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for split, ratio in ratios.items():
        count = round(ratio * len(examples))
        if count < 1:
            raise ValueError(f"{what}: {split} {ratio:g} of {len(examples)} rows is no row: the {split} split "
                             "would be empty; raise the ratio or add rows")
        splits[split], start = sorted(order[start:start + count]), start + count
    splits = {"train": sorted(order[start:]), **splits}
    if not splits["train"]:
        raise ValueError(f"{what}: the ratios {ratios} leave no row of {len(examples)} to the train split")
    def named(e: InputExample, split: str) -> InputExample:
        return InputExample(f"{split}-{e.guid.partition('-')[2]}", e.text_a, e.text_b, e.label) if renumber else e

    return {split: [named(examples[i], split) for i in indices] for split, indices in splits.items()}


def write_normalised(out: Path, splits: dict[str, list[InputExample]], layout: Layout, labels: Optional[tuple],
                     record: dict[str, Any]) -> dict[str, str]:
    """Write the splits as the normalised folder (FILES and DESCRIPTION); returns split -> file name."""
    for split, examples in splits.items():
        lines = []
        for e in examples:
            row: dict[str, Any] = {"id": e.guid, "text_a": e.text_a}
            if e.text_b is not None:
                row["text_b"] = e.text_b
            if e.label is not None:
                row["label"] = (list(e.label) if isinstance(e.label, tuple) else
                                float(e.label) if layout.kind == "regression" else e.label)
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        atomic_write_text(out / FILES[split], "".join(lines))
    description = {"kind": layout.kind, "task_kind": layout.task_kind.value, "pair": len(layout.text) == 2,
                   "labels": list(labels) if labels is not None else None, **record,
                   "examples": {split: len(examples) for split, examples in splits.items()}}
    atomic_write_text(out / DESCRIPTION, json.dumps(description, indent=2, ensure_ascii=False) + "\n")
    return {split: FILES[split] for split in splits}


def read_description(folder: str | os.PathLike) -> Optional[dict]:
    """A normalised folder's DESCRIPTION record, or None for another task's folder (it has none)."""
    path = Path(folder) / DESCRIPTION
    return read_json_object(path) if path.is_file() else None


@dataclass(frozen=True)
class OwnDataProcessor:
    """Reads a normalised folder (``write_normalised``) into InputExamples, as a GlueProcessor reads GLUE's.

    Attributes:
        name: the task's name.
        kind: "classification", "multi-label" or "regression".
        labels: the label names in id order (None for regression, or until the data says them).
        pair: two texts per example.
    """

    name: str
    kind: str
    labels: Optional[tuple[str, ...]]
    pair: bool
    files: dict = field(default_factory=lambda: dict(FILES))

    def path(self, data_dir: str | os.PathLike, split: str) -> Path:
        """The normalised file of `split` inside `data_dir`."""
        if split not in self.files:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(self.files)}")
        path = Path(data_dir) / self.files[split]
        if split == "test" and not path.is_file():
            raise ValueError(f"{self.name} has no test split ({path} is not there): give datasets.{self.name}.test "
                             "or split.test in params.yaml")
        return path

    def get_examples(self, data_dir: str | os.PathLike, split: str) -> list[InputExample]:
        """The examples of `split` ("train", "dev" or "test")."""
        layout = Layout(self.kind, ("text_a", "text_b") if self.pair else ("text_a",), "label", self.labels,
                        id="id", format="jsonl")
        return read_split(self.path(data_dir, split), layout, split, self.labels)


def own_task_spec(name: str, layout: Layout, labels: Optional[tuple[str, ...]]) -> TaskSpec:
    """The TaskSpec of a dataset (labels: its names in id order; None while not known, for classification)."""
    kind = layout.task_kind
    labels = None if kind is TaskKind.REGRESSION else labels
    processor = OwnDataProcessor(name, layout.kind, labels, len(layout.text) == 2)
    num_labels = 1 if kind is TaskKind.REGRESSION else len(labels or ())
    return TaskSpec(name, kind, processor, METRICS[kind], num_labels)  # type: ignore[arg-type]
