"""Task names the pipeline accepts: bert.tasks' table plus the three built-in demo tasks.

A demo task is read, featurised and scored exactly as the real task whose file format it uses:
demo-pair as MRPC (GLUE pair TSV, accuracy and F1), demo-qa as SQuAD v1.1, demo-mc as SWAG.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bert.tasks import TASKS, TaskKind, TaskSpec, get_task as _registry_task

DEMO_FORMATS = {"demo-pair": "mrpc", "demo-qa": "squad1", "demo-mc": "swag"}

# The figure a task's report row is ranked by (the paper's headline metric for it).
PRIMARY_METRIC = {
    "acc": "acc",
    "acc_and_f1": "f1",
    "mcc": "mcc",
    "pearson_and_spearman": "spearmanr",
    "squad_v1": "f1",
    "squad_v2": "f1",
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec for a params.yaml task name (a demo task gets its format's spec, renamed).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name in DEMO_FORMATS:
        return dataclasses.replace(_registry_task(DEMO_FORMATS[name]), name=name)
    try:
        return _registry_task(name)
    except ValueError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}") from None


def known_tasks() -> list[str]:
    """Every accepted task name: the demo tasks, then bert.tasks' table."""
    return [*DEMO_FORMATS, *TASKS]


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
    return BertForSequenceClassification, {"num_labels": spec.num_labels}
