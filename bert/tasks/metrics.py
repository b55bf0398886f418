"""Classification and regression metrics in numpy, defined as scikit-learn and SciPy define them.

GLUE reports: accuracy; F1 (positive class 1) with accuracy for MRPC and QQP; Matthews correlation
for CoLA (and AX); Pearson and Spearman correlation for STS-B. ``glue_metrics`` bundles them per task.
Multi-label tasks: micro and macro F1 over multi-hot rows (``multilabel_f1``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ArrayLike = Sequence | np.ndarray


def _pair(preds: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} must be equal-length 1-D arrays")
    if preds.size == 0:
        raise ValueError("cannot compute a metric over zero examples")
    return preds, labels


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to their label.

    Args:
        preds, labels: 1-D arrays of class ids.
    Returns:
        accuracy in [0, 1].
    """
    preds, labels = _pair(preds, labels)
    return float(np.mean(preds == labels))


def f1_score(preds: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """Binary F1 of the class `positive` (sklearn's ``f1_score``; 0.0 when it is undefined).

    Args:
        preds, labels: 1-D arrays of class ids.
        positive: the class whose precision and recall are combined.
    Returns:
        2 * TP / (2 * TP + FP + FN), or 0.0 when there is no positive prediction or label.
    """
    preds, labels = _pair(preds, labels)
    tp = int(np.sum((preds == positive) & (labels == positive)))
    fp = int(np.sum((preds == positive) & (labels != positive)))
    fn = int(np.sum((preds != positive) & (labels == positive)))
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else 0.0


def matthews_corrcoef(preds: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K, as sklearn computes it).

    Args:
        preds, labels: 1-D arrays of class ids.
    Returns:
        MCC in [-1, 1]; 0.0 when it is undefined (a constant prediction or label).
    """
    preds, labels = _pair(preds, labels)
    classes, encoded = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    k, n = len(classes), len(labels)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (encoded[:n], encoded[n:]), 1.0)
    t_sum = confusion.sum(axis=1)  # true occurrences of each class
    p_sum = confusion.sum(axis=0)  # predicted occurrences of each class
    correct = np.trace(confusion)
    cov_ytyp = correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation coefficient (scipy.stats.pearsonr's statistic; nan for constant input).

    Args:
        x, y: 1-D arrays of numbers.
    Returns:
        r in [-1, 1], or nan when either input is constant.
    """
    x, y = _pair(x, y)
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    # scale first (as scipy does) so sums of squares cannot overflow
    xn, yn = np.linalg.norm(x), np.linalg.norm(y)
    if xn == 0 or yn == 0:
        return float("nan")
    r = float(np.dot(x / xn, y / yn))
    return max(-1.0, min(1.0, r))


def rankdata(values: ArrayLike) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank (scipy.stats.rankdata, method 'average').

    Args:
        values: 1-D array.
    Returns:
        float64 ranks.
    """
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start of each run of equal values in sorted order
    new_run = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    run_id = np.cumsum(new_run) - 1
    run_starts = np.flatnonzero(new_run)
    run_ends = np.concatenate([run_starts[1:], [len(values)]])
    average = (run_starts + 1 + run_ends) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[run_id]
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation: Pearson's r of the average ranks (scipy.stats.spearmanr).

    Args:
        x, y: 1-D arrays of numbers.
    Returns:
        rho in [-1, 1], or nan when either input is constant.
    """
    x, y = _pair(x, y)
    return pearson(rankdata(x), rankdata(y))


def glue_metrics(metric: str, preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """A GLUE task's metrics by the name the task registry gives.

    Args:
        metric: "acc", "acc_and_f1", "mcc" or "pearson_and_spearman".
        preds: class ids (or scores for "pearson_and_spearman").
        labels: gold class ids (or scores).
    Returns:
        a dict of named figures, e.g. {"acc": ..., "f1": ..., "acc_and_f1": ...}.
    """
    if metric == "acc":
        return {"acc": accuracy(preds, labels)}
    if metric == "acc_and_f1":
        acc, f1 = accuracy(preds, labels), f1_score(preds, labels)
        return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}
    if metric == "mcc":
        return {"mcc": matthews_corrcoef(preds, labels)}
    if metric == "pearson_and_spearman":
        p, s = pearson(preds, labels), spearman(preds, labels)
        return {"pearson": p, "spearmanr": s, "corr": (p + s) / 2}
    raise ValueError(f"unknown GLUE metric {metric!r}; expected acc, acc_and_f1, mcc or pearson_and_spearman")


def multilabel_f1(preds: ArrayLike, labels: ArrayLike, average: str = "micro") -> float:
    """F1 of multi-hot predictions ([N, L] of 0/1: the labels above the threshold), as sklearn's
    ``f1_score(labels, preds, average=...)``.

    Args:
        preds, labels: [N, L] arrays of 0/1 (or booleans).
        average: "micro" (every example x label cell counted together) or "macro" (the mean of the labels'
            F1, a label with no positive prediction and no positive gold counting 0.0, as sklearn's default).
    Returns:
        F1 in [0, 1].
    """
    preds, labels = np.asarray(preds).astype(bool), np.asarray(labels).astype(bool)
    if preds.shape != labels.shape or preds.ndim != 2 or preds.size == 0:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} must be equal, non-empty [N, L] arrays")
    tp = np.sum(preds & labels, axis=0)
    fp = np.sum(preds & ~labels, axis=0)
    fn = np.sum(~preds & labels, axis=0)
    if average == "micro":
        denom = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / denom) if denom else 0.0
    if average == "macro":
        denom = 2 * tp + fp + fn
        per_label = np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
        return float(per_label.mean())
    raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")


def task_metrics(spec, preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """A task's metrics for GLUE, SWAG and your own datasets (class ids, scores or multi-hot rows against gold ones).

    Args:
        spec: the task's bert.tasks.registry.TaskSpec (its kind and metric name are read).
    Raises:
        ValueError: a SQuAD task, scored on answer texts instead (bert.tasks.squad_metrics).
    """
    kind = getattr(spec.kind, "value", spec.kind)
    if kind == "squad":
        raise ValueError(f"{spec.name} is scored with bert.tasks.squad_metrics.evaluate_{spec.metric[-2:]}")
    if kind == "multiple_choice":
        return {"acc": accuracy(preds, labels)}
    if kind == "multi_label_classification":  # multi-hot [N, L] rows; exact match: every label of a row right
        exact = float(np.mean(np.all(np.asarray(preds).astype(bool) == np.asarray(labels).astype(bool), axis=1)))
        return {"micro_f1": multilabel_f1(preds, labels, "micro"), "macro_f1": multilabel_f1(preds, labels, "macro"),
                "exact_match": exact}
    return glue_metrics(spec.metric, preds, labels)
