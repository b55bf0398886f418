"""Section ``datasets`` of params.yaml: your own tasks, each defined by its files (read by bert.tasks.owndata).

    datasets:
      reviews:                        # the task's name, for tasks: [reviews]
        kind: classification          # classification, multi-label or regression
        file: datasets/reviews.csv    # one file, cut at random by split ...
        split: {dev: 0.2, seed: 0}    #   (test: 0.1 too, optional)
        # train: datasets/train.csv   # ... or one file per split (test optional)
        # dev: datasets/dev.csv
        text: [review]                # the text column, or two columns (a pair)
        label: sentiment              # the label column
        labels: [negative, positive]  # optional: the names in id order; else the train rows' names, sorted
        label_separator: ","          # multi-label: what separates a cell's names (optional, default ",")
        format: csv                   # optional: csv, tsv or jsonl; else the file's suffix says
        id: review_id                 # optional: the column naming each row; else its line ("train-12")

Every file lies under datasets/ (DATA_DIR) beside params.yaml: dvc.yaml declares that folder as a dependency of
the download stage (DVC cannot expand ``${datasets.${item}.train}``), so an edit of a file there re-runs the
download of every task; the stages after it re-run for the tasks whose normalised data changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import sha256_of
from bert.tasks.owndata import FORMATS, KINDS, Layout, infer_labels, read_split, split_examples, write_normalised
from bert.tasks.records import DataFormatError
from stages._lib.params import DEFAULT_PARAMS, ParamsError, read_params_file

SECTION = "datasets"
DATA_DIR = "datasets"  # the folder of your files, beside params.yaml (dvc.yaml's dependency)
KEYS = ("kind", "text", "label", "labels", "label_separator", "format", "id", "train", "dev", "test", "file", "split")
SPLIT_KEYS = ("dev", "test", "seed")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a DVC stage name's part and a folder name


@dataclass(frozen=True)
class DatasetParams:
    """One entry of the section, checked.

    Attributes:
        name: the task's name.
        layout: columns, kind and labels (bert.tasks.owndata.Layout).
        files: split -> the file's path as written (relative to params.yaml's folder), or {"file": path}.
        ratios: with one file: split -> its fraction of the rows (dev, and test when given); else {}.
        seed: seeds the cut of one file.
    """

    name: str
    layout: Layout
    files: dict[str, str]
    ratios: dict[str, float]
    seed: int = 0


def load_datasets(path: str | Path = DEFAULT_PARAMS) -> dict[str, DatasetParams]:
    """The ``datasets`` section of a params file, checked (an absent section: none)."""
    return check_datasets(read_params_file(path).get(SECTION), Path(path))


def check_datasets(values: Any, path: Path, builtin: tuple[str, ...] = ()) -> dict[str, DatasetParams]:
    """Check the section's entries.

    Args:
        values: the section as read (None or {}: no dataset).
        path: the params file, for messages.
        builtin: task names a dataset may not take.
    Raises:
        ParamsError: one line naming the file and the dotted key.
    """
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: {SECTION}: expected a mapping of task name -> its files and columns")
    out = {}
    for name, entry in values.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise ParamsError(f"{path}: {SECTION}: name {name!r}: expected letters, digits, '_', '.' or '-' "
                              "(it names folders and DVC stages)")
        if name.lower() in builtin:
            raise ParamsError(f"{path}: {SECTION}.{name}: {name} is a built-in task; name your dataset otherwise")
        out[name] = _entry(name, entry, path)
    return out


def _entry(name: str, entry: Any, path: Path) -> DatasetParams:
    where = f"{path}: {SECTION}.{name}"
    if not isinstance(entry, dict):
        raise ParamsError(f"{where}: expected a mapping (kind, text, label and the files)")
    unknown = sorted((str(k) for k in entry if k not in KEYS))
    if unknown:
        raise ParamsError(f"{where}: unknown key {unknown[0]} (known keys: {', '.join(KEYS)})")
    for key in ("kind", "text", "label"):
        if key not in entry:
            raise ParamsError(f"{where}: key {key} is missing")
    kind = entry["kind"]
    if kind not in KINDS:
        raise ParamsError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    text = entry["text"]
    text = [text] if isinstance(text, str) else text
    if not isinstance(text, list) or not 1 <= len(text) <= 2 or not all(_name(t) for t in text):
        raise ParamsError(f"{where}.text: expected a list of one column name, or two (a pair), got {entry['text']!r}")
    if len(set(text)) != len(text):
        raise ParamsError(f"{where}.text: the two columns of a pair must differ, got {text!r}")
    for key in ("label", "id"):
        if key in entry and not _name(entry[key]):
            raise ParamsError(f"{where}.{key}: expected a column name, got {entry[key]!r}")
    labels = entry.get("labels")
    if labels is not None:
        if kind == "regression":
            raise ParamsError(f"{where}.labels: a regression task has no label names (its label is a number)")
        if not isinstance(labels, list) or len(labels) < 2 or not all(_name(x) for x in labels):
            raise ParamsError(f"{where}.labels: expected a list of at least 2 label names, got {labels!r}")
        labels = [str(x).strip() for x in labels]
        if len(set(labels)) != len(labels):
            raise ParamsError(f"{where}.labels: repeated names in {labels}: each label once")
    separator = entry.get("label_separator", ",")
    if "label_separator" in entry and kind != "multi-label":
        raise ParamsError(f"{where}.label_separator: only a multi-label task's cells hold several labels")
    if not isinstance(separator, str) or not separator:
        raise ParamsError(f"{where}.label_separator: expected a non-empty text such as ',' or '|', got {separator!r}")
    fmt = entry.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ParamsError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    files, ratios, seed = _files(where, entry)
    layout = Layout(kind, tuple(text), entry["label"], tuple(labels) if labels else None, separator,
                    entry.get("id"), fmt)
    return DatasetParams(name, layout, files, ratios, seed)


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _files(where: str, entry: dict) -> tuple[dict[str, str], dict[str, float], int]:
    given = [key for key in ("train", "dev", "test") if key in entry]
    if "file" in entry:
        if given:
            raise ParamsError(f"{where}.{given[0]}: give either file (with split) or train and dev files, not both")
        if "split" not in entry:
            raise ParamsError(f"{where}.split: one file needs a split, e.g. split: {{dev: 0.1, seed: 0}}")
        files = {"file": entry["file"]}
    else:
        if "split" in entry:
            raise ParamsError(f"{where}.split: split cuts one file (file:); with train and dev files, leave it out")
        for key in ("train", "dev"):
            if key not in entry:
                raise ParamsError(f"{where}: key {key} is missing (or give one file: with split:)")
        files = {key: entry[key] for key in given}
    for key, value in files.items():
        if not _name(value):
            raise ParamsError(f"{where}.{key}: expected a file path under {DATA_DIR}/, got {value!r}")
        parts = Path(value).parts
        if Path(value).is_absolute() or not parts or parts[0] != DATA_DIR or ".." in parts:
            raise ParamsError(f"{where}.{key}: {value} is not under {DATA_DIR}/; put your files in the {DATA_DIR}/ "
                              "folder beside params.yaml, the folder dvc.yaml watches (else an edit of the file "
                              "would re-run nothing)")
    if "file" not in files:
        return files, {}, 0
    split = entry["split"]
    if not isinstance(split, dict) or "dev" not in split:
        raise ParamsError(f"{where}.split: expected a mapping with dev (and test, seed), e.g. {{dev: 0.1, seed: 0}}")
    unknown = sorted(str(k) for k in split if k not in SPLIT_KEYS)
    if unknown:
        raise ParamsError(f"{where}.split: unknown key {unknown[0]} (known keys: {', '.join(SPLIT_KEYS)})")
    ratios = {}
    for key in ("dev", "test"):
        if key in split:
            value = split[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ParamsError(f"{where}.split.{key}: expected a fraction of the rows between 0 and 1, "
                                  f"got {value!r}")
            ratios[key] = float(value)
    if sum(ratios.values()) >= 1:
        raise ParamsError(f"{where}.split: dev and test take {sum(ratios.values()):g} of the rows; the train split "
                          "needs some (together below 1)")
    seed = split.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamsError(f"{where}.split.seed: expected a non-negative integer, got {seed!r}")
    return files, ratios, seed


def check_files_exist(dataset: DatasetParams, root: Path, path: Path) -> None:
    """Refuse a dataset whose files are missing, naming the key and the path looked at."""
    for key, rel in dataset.files.items():
        if not (root / rel).is_file():
            raise ParamsError(f"{path}: {SECTION}.{dataset.name}.{key}: {root / rel} is not a file")


def materialise(dataset: DatasetParams, params_file: Path, out: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Read, check and normalise a dataset's files into the folder `out`.

    Args:
        dataset: the checked entry.
        params_file: the params file it was read from (its paths are relative to its folder).
        out: an empty folder (the download stage's).
    Returns:
        (split -> normalised file name, the SOURCE.json record).
    Raises:
        DataFormatError / ValueError: one line naming the file, line and column, or the setting.
    """
    root = Path(params_file).parent
    check_files_exist(dataset, root, params_file)
    layout, given = dataset.layout, dataset.layout.labels
    if "file" in dataset.files:
        source = root / dataset.files["file"]
        rows = read_split(source, layout, "train", given)
        labels = given or _inferred(rows, layout, source)
        what = f"{source} (datasets.{dataset.name}.split)"
        splits = split_examples(rows, dataset.ratios, dataset.seed, what, renumber=layout.id is None)
        origin = "params.yaml" if given else f"{dataset.files['file']}'s rows, sorted"
    else:
        train_file = root / dataset.files["train"]
        splits = {"train": read_split(train_file, layout, "train", given)}
        labels = given or _inferred(splits["train"], layout, train_file)
        for split in ("dev", "test"):
            if split in dataset.files:
                try:
                    splits[split] = read_split(root / dataset.files[split], layout, split, labels)
                except DataFormatError as err:
                    if given or "is not one of the labels" not in str(err):
                        raise
                    raise DataFormatError(f"{err}, those the train file holds ({dataset.files['train']}; or give "
                                          f"datasets.{dataset.name}.labels)") from None
        origin = "params.yaml" if given else f"{dataset.files['train']}'s rows, sorted"
    record = {"name": dataset.name, "text": list(layout.text), "label": layout.label,
              "labels_from": None if labels is None else origin,
              "sources": {key: {"path": rel, "sha256": sha256_of(root / rel)} for key, rel in dataset.files.items()}}
    files = write_normalised(out, splits, layout, labels, record)
    return files, {"source": "datasets", "dataset": dataset.name, "sources": record["sources"]}


def _inferred(rows: list, layout: Layout, source: Path) -> Optional[tuple[str, ...]]:
    if layout.kind == "regression":
        return None
    labels = infer_labels(rows)
    if len(labels) < 2:
        raise ValueError(f"{source}: column {layout.label!r} holds {len(labels)} label name(s) "
                         f"({', '.join(labels) or 'none'}); a classifier needs at least 2 (add rows, or give labels)")
    return labels
