"""What a fine-tuned model folder was trained for, written into the folder so that it can be put to work
(``bert predict``) with nothing else: its task, label names, input geometry and casing.

HF transformers' keys, which its Auto classes read (the same labels, the same loss), and our ``task`` entry:

    config.json
      "id2label": {"0": "not_equivalent", "1": "equivalent"}       string keys, as HF writes them
      "label2id": {"not_equivalent": 0, "equivalent": 1}
      "problem_type": "single_label_classification"               | "multi_label_classification" | "regression"
      "task": {"name": "mrpc", "kind": "pair_classification", "max_seq_length": 128,
               "window": {"stride": 64, "combine": "mean"}}       window: null when inputs are truncated
      "task": {"name": "squad2", "kind": "squad", "max_seq_length": 384, "doc_stride": 128,
               "max_query_length": 64, "version_2_with_negative": true, "max_answer_length": 30,
               "null_score_diff_threshold": 0.0}
      "task": {"name": "swag", "kind": "multiple_choice", "max_seq_length": 128, "num_choices": 4}
    tokenizer_config.json
      "do_lower_case": true                                       (BertTokenizer.save_pretrained writes it)

Kinds are bert.tasks.registry.TaskKind's values. QA and multiple choice have no labels and no problem_type.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import atomic_write_text
from bert.io.jsonfile import read_json_object
from bert.tasks.registry import TASKS, TaskKind, TaskSpec
from bert.tasks.windows import WindowSettings

CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CLASSIFICATION = (TaskKind.SINGLE_CLASSIFICATION, TaskKind.PAIR_CLASSIFICATION)
PROBLEM_TYPES = {TaskKind.SINGLE_CLASSIFICATION: "single_label_classification",
                 TaskKind.PAIR_CLASSIFICATION: "single_label_classification",
                 TaskKind.MULTI_LABEL_CLASSIFICATION: "multi_label_classification",
                 TaskKind.REGRESSION: "regression"}
# What --task accepts on a folder without the entry: these words, or a task name of the registry (mrpc, squad2...).
KIND_WORDS = {"single": TaskKind.SINGLE_CLASSIFICATION, "pair": TaskKind.PAIR_CLASSIFICATION,
              "regression": TaskKind.REGRESSION, "multi-label": TaskKind.MULTI_LABEL_CLASSIFICATION,
              "qa": TaskKind.SQUAD, "qa-v2": TaskKind.SQUAD, "multiple-choice": TaskKind.MULTIPLE_CHOICE}
DEFAULT_LENGTHS = {TaskKind.SQUAD: 384}  # else 128; SQuAD: doc_stride 128, max_query_length 64 (run_squad's)


class MissingTaskMetadata(ValueError):
    """A model folder that does not say what it was fine-tuned for."""


@dataclass(frozen=True)
class TaskMetadata:
    """The ``task`` entry of a model folder (and the labels of HF's id2label), as a record.

    Attributes:
        kind: the head and the features (bert.tasks.registry.TaskKind).
        name: the task's name ("mrpc"; "" when not known).
        labels: the label names in id order (classification, multi-label); () otherwise.
        max_seq_length: tokens per input (per window, per choice), [CLS] and [SEP]s included.
        window: long classification inputs cut into windows (None: truncated).
        doc_stride, max_query_length, version_2_with_negative, max_answer_length, null_score_diff_threshold: SQuAD's.
        num_choices: multiple choice's.
    """

    kind: TaskKind
    name: str = ""
    labels: tuple[str, ...] = ()
    max_seq_length: int = 128
    window: Optional[WindowSettings] = None
    doc_stride: Optional[int] = None
    max_query_length: Optional[int] = None
    version_2_with_negative: bool = False
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    num_choices: Optional[int] = None

    def __post_init__(self) -> None:
        kind = TaskKind(self.kind)  # a value string is accepted too
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        if kind is TaskKind.SQUAD:
            object.__setattr__(self, "doc_stride", 128 if self.doc_stride is None else self.doc_stride)
            object.__setattr__(self, "max_query_length", 64 if self.max_query_length is None else self.max_query_length)
        if kind in (*CLASSIFICATION, TaskKind.MULTI_LABEL_CLASSIFICATION) and len(self.labels) < 2:
            raise ValueError(f"a {kind.value} task needs at least 2 label names, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"label names must be distinct, got {list(self.labels)}")
        if self.window is not None and kind not in (*CLASSIFICATION, TaskKind.MULTI_LABEL_CLASSIFICATION,
                                                    TaskKind.REGRESSION):
            raise ValueError(f"windows are for classification and regression; {kind.value} has its own")
        for key in ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "num_choices"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        threshold = self.null_score_diff_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"null_score_diff_threshold must be a number, got {threshold!r}")
        if not isinstance(self.version_2_with_negative, bool):
            raise ValueError(f"version_2_with_negative must be true or false, got {self.version_2_with_negative!r}")

    @property
    def problem_type(self) -> Optional[str]:
        """HF's problem_type of the sequence-classification head; None for QA and multiple choice."""
        return PROBLEM_TYPES.get(self.kind)

    def config_entries(self) -> dict[str, Any]:
        """The keys this record puts into config.json (HF's id2label, label2id, problem_type, and ``task``)."""
        task: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "max_seq_length": self.max_seq_length}
        if self.kind is TaskKind.SQUAD:
            task.update(doc_stride=self.doc_stride, max_query_length=self.max_query_length,
                        version_2_with_negative=self.version_2_with_negative,
                        max_answer_length=self.max_answer_length,
                        null_score_diff_threshold=self.null_score_diff_threshold)
        elif self.kind is TaskKind.MULTIPLE_CHOICE:
            task["num_choices"] = self.num_choices
        else:
            task["window"] = dataclasses.asdict(self.window) if self.window else None
        entries: dict[str, Any] = {"task": task}
        if self.labels:
            entries["id2label"] = {str(i): label for i, label in enumerate(self.labels)}
            entries["label2id"] = {label: i for i, label in enumerate(self.labels)}
        if self.problem_type:
            entries["problem_type"] = self.problem_type
        return entries


def metadata_for_task(spec: TaskSpec, max_seq_length: int, **settings: Any) -> TaskMetadata:
    """The record of a task of the registry (its kind, name and labels), with the settings it was trained with.

    Args:
        spec: from bert.tasks.registry.get_task (or the stages' renamed demo specs).
        max_seq_length: the tokenize stage's.
        settings: other TaskMetadata fields (window, doc_stride, max_query_length, null_score_diff_threshold, ...).
    Returns:
        The record; SQuAD's version and multiple choice's number of choices come from the spec.
    """
    if spec.kind is TaskKind.SQUAD:
        settings.setdefault("version_2_with_negative", spec.processor.version_2_with_negative)
    if spec.kind is TaskKind.MULTIPLE_CHOICE:
        settings.setdefault("num_choices", spec.num_labels)
    return TaskMetadata(spec.kind, spec.name, tuple(spec.labels or ()), max_seq_length, **settings)


def write_task_metadata(folder: str | os.PathLike, metadata: TaskMetadata, do_lower_case: Optional[bool] = None
                        ) -> Path:
    """Add the task entries to a saved model folder's config.json (and the casing to tokenizer_config.json).

    Call it after ``model.save_pretrained(folder)``; other keys of both files are kept. Each file is
    replaced atomically.

    Args:
        folder: holds config.json.
        metadata: what the model was fine-tuned for.
        do_lower_case: the tokenizer's casing, written to tokenizer_config.json (None: left as it is).
    Returns:
        config.json's path.
    """
    path = Path(folder) / CONFIG
    config = _read_object(path)
    if metadata.labels and config.get("num_labels", len(metadata.labels)) != len(metadata.labels):
        raise ValueError(f"{path}: num_labels is {config['num_labels']}, but {len(metadata.labels)} label "
                         f"names were given ({', '.join(metadata.labels)})")
    config.update(metadata.config_entries())
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if do_lower_case is not None:
        tokenizer_path = Path(folder) / TOKENIZER_CONFIG
        settings = _read_object(tokenizer_path) if tokenizer_path.is_file() else {}
        settings["do_lower_case"] = bool(do_lower_case)
        atomic_write_text(tokenizer_path, json.dumps(settings, indent=2) + "\n")
    return path


def read_task_metadata(folder: str | os.PathLike, task: Optional[str] = None) -> TaskMetadata:
    """The task record of a model folder.

    Args:
        folder: holds config.json.
        task: for a folder without a ``task`` entry (an HF or pytorch-pretrained-bert folder, a pretrained
            model): a kind word of KIND_WORDS or a registry task name. Labels then come from the folder's
            id2label, else the registry's task, else "0".."n-1" from num_labels.
    Returns:
        The record.
    Raises:
        MissingTaskMetadata: no entry and no `task` (saying what is missing and how to add it).
        ValueError: an entry that does not read (naming the file and the key), or `task` naming another kind.
    """
    path = Path(folder) / CONFIG
    if not path.is_file() and (Path(folder) / "bert_config.json").is_file():
        path = Path(folder) / "bert_config.json"
    config = _read_object(path)
    entry = config.get("task")
    if entry is None:
        if task is None:
            raise MissingTaskMetadata(
                f"{path}: no task entry (what the model was fine-tuned for: its kind, labels, max_seq_length); "
                f"state it with --task KIND ({', '.join(KIND_WORDS)}, or a task name such as mrpc or squad2), "
                f"or add it with bert.tasks.folder.write_task_metadata")
        return _from_flag(path, config, task)
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: task must be a JSON object, got {type(entry).__name__}")
    try:
        metadata = _from_entry(entry, config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: task entry: {err}") from None
    if task is not None and _flag_kind(task)[0] is not metadata.kind:
        raise ValueError(f"--task {task} contradicts {path}, whose task entry says {metadata.kind.value}; "
                         "drop --task")
    return metadata


def _from_entry(entry: dict, config: dict) -> TaskMetadata:
    fields = {f.name for f in dataclasses.fields(TaskMetadata)} - {"labels"}
    unknown = sorted(set(entry) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    if "kind" not in entry:
        raise ValueError("no kind")
    values = dict(entry)
    try:
        values["kind"] = TaskKind(values["kind"])
    except ValueError:
        raise ValueError(f"kind {values['kind']!r} is not one of {', '.join(k.value for k in TaskKind)}") from None
    if values.get("window") is not None:
        if not isinstance(values["window"], dict):
            raise ValueError(f"window must be an object with stride and combine, got {values['window']!r}")
        values["window"] = WindowSettings(**values["window"])
    return TaskMetadata(labels=_labels(config), **values)


def _labels(config: dict) -> tuple[str, ...]:
    """id2label's names in id order ({"0": "neg", "1": "pos"}); () without one."""
    id2label = config.get("id2label")
    if not id2label:
        return ()
    if not isinstance(id2label, dict):
        raise ValueError(f"id2label must be an object of id -> name, got {type(id2label).__name__}")
    try:
        ids = sorted(int(i) for i in id2label)
    except ValueError:
        raise ValueError(f"id2label's keys must be ids (\"0\", \"1\", ...), got {list(id2label)}") from None
    if ids != list(range(len(ids))):
        raise ValueError(f"id2label's ids must be 0..{len(ids) - 1}, got {ids}")
    by_id = {int(i): name for i, name in id2label.items()}
    return tuple(str(by_id[i]) for i in ids)


def _flag_kind(task: str) -> tuple[TaskKind, Optional[TaskSpec]]:
    if task in KIND_WORDS:
        return KIND_WORDS[task], None
    spec = TASKS.get(task.lower())
    if spec is None:
        raise ValueError(f"--task {task!r}: expected a kind ({', '.join(KIND_WORDS)}) or a task name "
                         f"({', '.join(TASKS)})")
    return spec.kind, spec


def _from_flag(path: Path, config: dict, task: str) -> TaskMetadata:
    kind, spec = _flag_kind(task)
    labels = _labels(config)
    if kind in (*CLASSIFICATION, TaskKind.MULTI_LABEL_CLASSIFICATION) and len(labels) < 2:
        if spec is not None and spec.labels:
            labels = tuple(spec.labels)
        elif isinstance(config.get("num_labels"), int) and config["num_labels"] >= 2:
            labels = tuple(str(i) for i in range(config["num_labels"]))
        else:
            raise ValueError(f"{path}: --task {task} needs the label names: the folder has no id2label or "
                             "num_labels; add them with bert.tasks.folder.write_task_metadata")
    if kind not in (*CLASSIFICATION, TaskKind.MULTI_LABEL_CLASSIFICATION):
        labels = ()
    settings: dict[str, Any] = {}
    if kind is TaskKind.SQUAD:
        settings["version_2_with_negative"] = task == "qa-v2" or (spec is not None
                                                                 and spec.processor.version_2_with_negative)
    if kind is TaskKind.MULTIPLE_CHOICE:
        settings["num_choices"] = config.get("num_choices") if isinstance(config.get("num_choices"), int) else None
    return TaskMetadata(kind, spec.name if spec else "", labels, DEFAULT_LENGTHS.get(kind, 128), **settings)


def _read_object(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"{path}: not found (expected a model folder written by save_pretrained)")
    return read_json_object(path)
