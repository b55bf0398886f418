"""The task table: every task name the pipeline accepts, and what kind of task it is.

    name      kind                    metric                  labels
    cola      single classification   mcc                     2
    sst2      single classification   acc                     2
    mrpc      pair classification     acc_and_f1              2
    stsb      regression              pearson_and_spearman    1
    qqp       pair classification     acc_and_f1              2
    mnli      pair classification     acc                     3   (dev = matched)
    mnli-mm   pair classification     acc                     3   (dev = mismatched)
    qnli      pair classification     acc                     2
    rte       pair classification     acc                     2
    wnli      pair classification     acc                     2
    ax        pair classification     mcc                     3   (test only; an MNLI model predicts it)
    squad1    squad                   squad_v1                2   (start and end logits)
    squad2    squad                   squad_v2                2
    swag      multiple choice         acc                     4   (choices)

A dataset of your own (bert.tasks.owndata: classification, multi-label or regression from your files) gets a
TaskSpec of the same shape from ``own_task_spec``; the pipeline names it in params.yaml (stages._lib.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Union

from bert.tasks import glue
from bert.tasks.squad import SQUAD1, SQUAD2, SquadProcessor
from bert.tasks.swag import NUM_CHOICES, SWAG, SwagProcessor


class TaskKind(str, Enum):
    """The shape of a task's model: which head, which features."""

    SINGLE_CLASSIFICATION = "single_classification"
    PAIR_CLASSIFICATION = "pair_classification"
    REGRESSION = "regression"
    MULTI_LABEL_CLASSIFICATION = "multi_label_classification"  # labels above a threshold (no task in the table)
    SQUAD = "squad"
    MULTIPLE_CHOICE = "multiple_choice"


Processor = Union[glue.GlueProcessor, SquadProcessor, SwagProcessor]


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table.

    Attributes:
        name: the task's name in params.yaml.
        kind: decides the model head and the feature converter.
        processor: reads the task's files (``get_examples(data_dir, split)``).
        metric: "acc", "acc_and_f1", "mcc", "pearson_and_spearman", "squad_v1", "squad_v2" or "multilabel_f1"
            (computed by bert.tasks.metrics.task_metrics, which only evaluation imports).
        num_labels: classes (multi-label: labels); 1 for regression; 2 (start, end) for SQuAD; choices for SWAG.
    """

    name: str
    kind: TaskKind
    processor: Processor
    metric: str
    num_labels: int

    @property
    def labels(self) -> Optional[tuple[str, ...]]:
        """The label strings in id order (GLUE classification), else None."""
        return getattr(self.processor, "labels", None)


def _glue(processor: glue.GlueProcessor, kind: TaskKind, metric: str) -> TaskSpec:
    num_labels = 1 if processor.labels is None else len(processor.labels)
    return TaskSpec(processor.name, kind, processor, metric, num_labels)


_SINGLE, _PAIR = TaskKind.SINGLE_CLASSIFICATION, TaskKind.PAIR_CLASSIFICATION

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue(glue.COLA, _SINGLE, "mcc"),
        _glue(glue.SST2, _SINGLE, "acc"),
        _glue(glue.MRPC, _PAIR, "acc_and_f1"),
        _glue(glue.STSB, TaskKind.REGRESSION, "pearson_and_spearman"),
        _glue(glue.QQP, _PAIR, "acc_and_f1"),
        _glue(glue.MNLI, _PAIR, "acc"),
        _glue(glue.MNLI_MM, _PAIR, "acc"),
        _glue(glue.QNLI, _PAIR, "acc"),
        _glue(glue.RTE, _PAIR, "acc"),
        _glue(glue.WNLI, _PAIR, "acc"),
        _glue(glue.AX, _PAIR, "mcc"),
        TaskSpec("squad1", TaskKind.SQUAD, SQUAD1, "squad_v1", 2),
        TaskSpec("squad2", TaskKind.SQUAD, SQUAD2, "squad_v2", 2),
        TaskSpec("swag", TaskKind.MULTIPLE_CHOICE, SWAG, "acc", NUM_CHOICES),
    )
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec named `name` (case-insensitive); a ValueError lists the known names."""
    spec = TASKS.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return spec
