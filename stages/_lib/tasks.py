"""Task names the pipeline accepts: bert.tasks' table, the three built-in demo tasks, and your own datasets
(params.yaml's ``datasets`` section, stages._lib.datasets).

A demo task is read, featurised and scored exactly as the real task whose file format it uses:
demo-pair as MRPC (GLUE pair TSV, accuracy and F1), demo-qa as SQuAD v1.1, demo-mc as SWAG. A dataset of
yours is read from the normalised folder the download stage writes (bert.tasks.owndata); its label names are
those params.yaml gives, or else those its data holds: the stages after download pass what the data they read
recorded (the folder's dataset.json, the features' manifest), so every stage names the labels alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

from bert.tasks import TASKS, TaskKind, TaskSpec, get_task as _registry_task
from stages._lib.params import DEFAULT_PARAMS

DEMO_FORMATS = {"demo-pair": "mrpc", "demo-qa": "squad1", "demo-mc": "swag"}

# The figure a task's report row is ranked by (the paper's headline metric for it).
PRIMARY_METRIC = {
    "acc": "acc",
    "acc_and_f1": "f1",
    "mcc": "mcc",
    "pearson_and_spearman": "spearmanr",
    "squad_v1": "f1",
    "squad_v2": "f1",
    "multilabel_f1": "micro_f1",
}


def builtin_tasks() -> tuple[str, ...]:
    """The task names that need no dataset entry: the demo tasks, then bert.tasks' table."""
    return (*DEMO_FORMATS, *TASKS)


def is_builtin(name: str) -> bool:
    """A demo task or a task of bert.tasks' table (bert.tasks takes its names in any case)."""
    return name in DEMO_FORMATS or name.lower() in TASKS


def get_task(name: str, params: str | Path = DEFAULT_PARAMS, labels: Optional[Sequence[str]] = None) -> TaskSpec:
    """The TaskSpec for a params.yaml task name.

    Args:
        name: a demo task (its format's spec, renamed), a task of bert.tasks' table, or a dataset of params.yaml.
        params: the params file whose ``datasets`` section defines your own tasks.
        labels: a dataset's label names as its data recorded them (used when params.yaml gives none).
    Raises:
        ValueError: an unknown name, listing the known ones; labels that contradict params.yaml's.
    """
    if name in DEMO_FORMATS:
        return dataclasses.replace(_registry_task(DEMO_FORMATS[name]), name=name)
    if is_builtin(name):
        return _registry_task(name)
    from bert.tasks.owndata import own_task_spec
    from stages._lib.datasets import load_datasets

    datasets = load_datasets(params) if Path(params).is_file() else {}
    if name not in datasets:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks(params))} (your own data: "
                         f"define it in {params}'s datasets section)")
    layout = datasets[name].layout
    recorded = tuple(labels) if labels is not None else None
    if layout.labels is not None and recorded is not None and recorded != layout.labels:
        raise ValueError(f"{params}: datasets.{name}.labels is {list(layout.labels)}, but the data was made with "
                         f"{list(recorded)}: re-run the stages from download (dvc repro does)")
    return own_task_spec(name, layout, layout.labels or recorded)


def recorded_labels(data: str | Path) -> Optional[list[str]]:
    """The label names a dataset's normalised folder recorded (bert.tasks.owndata's dataset.json); None for
    the folder of another task, or of a regression."""
    from bert.tasks.owndata import read_description

    description = read_description(data)
    return None if description is None else description.get("labels")


def manifest_labels(manifest: Any) -> Optional[list[str]]:
    """The label names a feature cache's manifest recorded (the tokenize stage's), or None."""
    return (manifest.extra or {}).get("labels")


def known_tasks(params: str | Path = DEFAULT_PARAMS) -> list[str]:
    """Every accepted task name: the demo tasks, bert.tasks' table, then the datasets of `params`."""
    from stages._lib.datasets import load_datasets

    try:
        own = list(load_datasets(params)) if Path(params).is_file() else []
    except ValueError:
        own = []
    return [*builtin_tasks(), *own]


def primary_metric(spec: TaskSpec) -> str:
    """The metric key a task is ranked and compared by, e.g. "f1" for MRPC and SQuAD."""
    if spec.kind is TaskKind.MULTIPLE_CHOICE:
        return "acc"
    return PRIMARY_METRIC[spec.metric]


def head_for(spec: TaskSpec) -> tuple[type, dict[str, Any]]:
    """The model class and its constructor arguments for a task (classification, QA, multiple choice)."""
    # imported here: the model needs torch, and download and report name tasks without it
    from bert.modeling import BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification

    if spec.kind is TaskKind.SQUAD:
        return BertForQuestionAnswering, {}
    if spec.kind is TaskKind.MULTIPLE_CHOICE:
        return BertForMultipleChoice, {"num_choices": spec.num_labels}
    if spec.num_labels < 1:
        raise ValueError(f"{spec.name}: the label names are not known yet (read from the task's data)")
    if spec.kind is TaskKind.MULTI_LABEL_CLASSIFICATION:  # sigmoid per label, binary cross-entropy (HF's)
        return BertForSequenceClassification, {"num_labels": spec.num_labels,
                                               "problem_type": "multi_label_classification"}
    return BertForSequenceClassification, {"num_labels": spec.num_labels}
