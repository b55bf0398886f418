"""Stage evaluate: dev-set predictions and metrics of a fine-tuned model, or of the untrained baseline.

    python -m stages.evaluate --task demo-pair --features data/features/demo-pair \
        --data data/raw/demo-pair --model models/finetuned/demo-pair/seed1 --out reports/eval/demo-pair/seed1
    python -m stages.evaluate ... --model models/pretrained --untrained --out reports/baseline/demo-pair

Writes ``<out>/metrics.json`` and ``<out>/predictions.json`` (SQuAD: the official predictions.json
format, plus nbest_predictions.json). All metrics are in points (0-100), as GLUE and SQuAD report them.
``--untrained`` is the baseline: the pretrained encoder with a freshly initialised head (seeded by
``evaluate.baseline_seed``), not fine-tuned. Classification and multiple choice also get the
majority-class baseline: always predicting the train set's most frequent label (or choice position); a
multi-label task each label's most frequent value in train.
Features cut into windows (tokenize.windows) are scored per example: its windows' logits combined (mean or
max, as the manifest says) by bert.tasks.windows.combine_windows, as ``bert predict`` combines them.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bert.data.cache import METADATA, CachedFeatures, pad_collate
from bert.engine import predict, setup_distributed
from bert.tasks import TaskKind, TaskSpec
from bert.tasks.metrics import task_metrics
from bert.tasks.records import SquadFeatures, SquadResult
from bert.tasks.squad import load_squad_json
from bert.tasks.squad_metrics import evaluate_v1, evaluate_v2
from bert.tasks.squad_postprocess import compute_predictions
from bert.tasks.windows import combine_windows
from bert.io.fileio import sha256_of
from stages._lib.common import (atomic_outputs, load_features, read_json, require_input, run_stage, stage_parser,
                                write_json)
from stages._lib.evaluation import EvaluateParams
from stages._lib.params import DEFAULT_PARAMS, load_section
from stages._lib.tasks import get_task, head_for, manifest_labels, primary_metric

logger = logging.getLogger("stages.evaluate")
MULTI_LABEL_THRESHOLD = 0.5  # a label's probability above which a multi-label model predicts it


def _points(metrics: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * v for k, v in metrics.items()}


def confusion(gold: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    """counts[i][j]: examples of gold class i predicted as j."""
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (gold, pred), 1)
    return counts.tolist()


def first_windows(features: CachedFeatures) -> Optional[np.ndarray]:
    """The row of each example's first window ([E]), or None when every example is one row (no windows)."""
    if not features.manifest.extra.get("window"):
        return None
    index = np.asarray(features.metadata["example_index"])
    return np.flatnonzero(np.r_[True, index[1:] != index[:-1]])  # windows of an example are consecutive


def per_example(logits: torch.Tensor, features: CachedFeatures) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(logits [E, C], gold labels [E], ids [E]) of a split's examples: windows combined as the manifest says."""
    gold = features.labels("labels").numpy()
    ids = (features.metadata or {}).get("ids") or [str(i) for i in range(len(features))]
    first = first_windows(features)
    if first is None:
        return logits, gold, ids
    window = features.manifest.extra["window"]
    combined = combine_windows(logits.float().numpy(), features.metadata["example_index"],
                               features.manifest.num_examples, window["combine"])
    return torch.from_numpy(combined), gold[first], [ids[i] for i in first]


def classification_metrics(spec: TaskSpec, logits: torch.Tensor, dev: CachedFeatures, train_labels: torch.Tensor):
    """Metrics, confusion, majority baseline and per-example predictions of GLUE, SWAG and own-data tasks
    (train_labels: one per example)."""
    logits, gold, ids = per_example(logits, dev)
    if spec.kind is TaskKind.MULTI_LABEL_CLASSIFICATION:
        return multilabel_metrics(spec, logits, gold, ids, train_labels)
    if spec.kind is TaskKind.REGRESSION:
        pred = logits.view(-1).float().numpy()
        metrics = _points(task_metrics(spec, pred, gold))
        rows = [{"id": i, "label": float(g), "prediction": float(p)} for i, g, p in zip(ids, gold, pred, strict=True)]
        return metrics, {"predictions": rows}
    pred = logits.argmax(-1).numpy()
    k = logits.shape[-1]
    names = list(spec.labels) if spec.labels else [str(c) for c in range(k)]
    metrics = _points(task_metrics(spec, pred, gold))
    majority_class = int(torch.bincount(train_labels.long(), minlength=k).argmax())
    majority = _points(task_metrics(spec, np.full_like(gold, majority_class), gold))
    probs = torch.softmax(logits.float(), -1).numpy()
    rows = [{"id": i, "label": names[g], "prediction": names[p], "probabilities": [round(float(x), 6) for x in pr]}
            for i, g, p, pr in zip(ids, gold, pred, probs, strict=True)]
    extra = {
        "labels": names,
        "confusion": confusion(gold, pred, k),
        "predicted_counts": np.bincount(pred, minlength=k).tolist(),
        "majority": {"class": names[majority_class], "metrics": majority},
        "predictions": rows,
    }
    return metrics, extra


def multilabel_metrics(spec: TaskSpec, logits: torch.Tensor, gold: np.ndarray, ids: list, train_labels: torch.Tensor):
    """Micro and macro F1 and exact match of a multi-label task: a label is predicted when its sigmoid is above
    MULTI_LABEL_THRESHOLD (bert predict's default); the majority baseline predicts each label's most frequent
    value in train."""
    probs = torch.sigmoid(logits.float()).numpy()  # [N, L]
    pred, gold = probs > MULTI_LABEL_THRESHOLD, gold > 0.5
    names = list(spec.labels)
    metrics = _points(task_metrics(spec, pred, gold))
    majority_row = (train_labels.float().mean(0) > 0.5).numpy()
    majority = _points(task_metrics(spec, np.broadcast_to(majority_row, gold.shape), gold))
    chosen = lambda row: [n for n, on in zip(names, row) if on]  # noqa: E731
    rows = [{"id": i, "label": chosen(g), "prediction": chosen(p), "probabilities": [round(float(x), 6) for x in pr]}
            for i, g, p, pr in zip(ids, gold, pred, probs, strict=True)]
    extra = {"labels": names, "predicted_counts": pred.sum(0).tolist(), "gold_counts": gold.sum(0).tolist(),
             "majority": {"class": "+".join(chosen(majority_row)) or "(no label)", "metrics": majority},
             "predictions": rows}
    return metrics, extra


def squad_metrics(spec: TaskSpec, outputs: tuple, dev: CachedFeatures, data_dir: Path, params: EvaluateParams):
    """EM/F1 by the official script, from the windows' start and end logits."""
    dev_file = spec.processor.path(data_dir, "dev")
    if dev.manifest.extra.get("source_sha256") != sha256_of(dev_file):
        raise ValueError(f"{dev_file}: not the file the features in {dev.folder} were made from (another "
                         "sha256 than their manifest records); re-run the tokenize stage")
    examples = spec.processor.get_examples(data_dir, "dev")
    features = squad_features(dev)
    start_logits, end_logits = outputs
    results = [SquadResult(f.unique_id, start_logits[i, : len(f.tokens)].tolist(),
                           end_logits[i, : len(f.tokens)].tolist()) for i, f in enumerate(features)]
    v2 = spec.processor.version_2_with_negative
    answers = compute_predictions(examples, features, results, params.n_best_size, params.max_answer_length,
                                  dev.manifest.do_lower_case, v2, params.null_score_diff_threshold)
    dataset = load_squad_json(spec.processor.path(data_dir, "dev"))
    if v2:
        metrics = evaluate_v2(dataset, answers.predictions, answers.null_odds)
        metrics = {"exact_match": metrics["exact"], "f1": metrics["f1"],
                   **{k: v for k, v in metrics.items() if k not in ("exact", "f1", "total")}}
    else:
        metrics = evaluate_v1(dataset, answers.predictions)
    return metrics, {"predictions": answers.predictions, "nbest": answers.nbest}


def squad_features(dev: CachedFeatures) -> list[SquadFeatures]:
    """The SQuAD dev features' token maps, from the split's metadata.json (one entry per feature)."""
    keys = {"unique_id", "example_index", "doc_span_index", "tokens", "token_to_orig_map", "token_is_max_context"}
    metadata = dev.metadata
    if not isinstance(metadata, list):
        raise ValueError(f"{dev.folder / METADATA}: expected a list of SQuAD token maps, one per feature")
    for i, meta in enumerate(metadata):
        if not isinstance(meta, dict) or meta.keys() != keys:
            raise ValueError(f"{dev.folder / METADATA}: feature {i}: expected the keys {sorted(keys)}")
    return [SquadFeatures(input_ids=[], segment_ids=[], **meta) for meta in metadata]


def load_finetuned(head: type, model_dir: Path, task: str):
    """The task's fine-tuned model; refused when its folder lacks the head's weights or was fine-tuned on
    another task (a random head's metrics would look like a result)."""
    summary = model_dir / "training.json"
    if summary.is_file():
        trained_on = read_json(summary, "finetune", dict).get("task")
        if trained_on is not None and trained_on != task:
            raise ValueError(f"{summary}: a model fine-tuned on {trained_on!r}, not {task!r}; evaluate the "
                             f"model of {task}, or pass --untrained for the baseline")
    model = head.from_pretrained(model_dir)
    missing = model.load_report.missing
    if missing:
        raise ValueError(f"{model_dir}: no weights for the {task} head ({', '.join(missing)}): not a model "
                         f"fine-tuned for {task}; fine-tune it first, or pass --untrained for the baseline")
    return model


def evaluate(task: str, features_dir: Path, data_dir: Path, model_dir: Path, untrained: bool,
             params: EvaluateParams, params_file: Path = DEFAULT_PARAMS) -> tuple[dict, dict]:
    """Predict the dev set; returns (the metrics.json record, extra outputs incl. predictions)."""
    producer = "convert" if untrained else "finetune"
    require_input(model_dir / "config.json", producer, "model")
    dev = load_features(Path(features_dir) / "dev", model_dir, task)
    spec = get_task(task, params_file, labels=manifest_labels(dev.manifest))
    head, kwargs = head_for(spec)
    if untrained:
        torch.manual_seed(params.baseline_seed)
        model = head.from_pretrained(model_dir, **kwargs)
    else:
        model = load_finetuned(head, model_dir, task)
    start = time.perf_counter()
    ctx = setup_distributed()  # one process: the GPU when there is one, else the CPU
    outputs = predict(model, dev, functools.partial(pad_collate, pad_id=0), batch_size=params.batch_size,
                      precision=params.precision, ctx=ctx, lengths=dev.lengths)
    outputs = tuple(t.cpu() for t in outputs)
    seconds = time.perf_counter() - start
    if spec.kind is TaskKind.SQUAD:
        require_input(data_dir, "download", f"raw data of {task}")
        metrics, extra = squad_metrics(spec, outputs, dev, data_dir, params)
    else:
        train = load_features(Path(features_dir) / "train", model_dir, task)
        first = first_windows(train)
        train_labels = train.labels("labels") if first is None else train.labels("labels")[torch.from_numpy(first)]
        metrics, extra = classification_metrics(spec, outputs[0], dev, train_labels)
    training = None
    if not untrained and (model_dir / "training.json").is_file():
        training = read_json(model_dir / "training.json", "finetune", dict)
    record: dict[str, Any] = {
        "task": task, "kind": spec.kind.value, "metric": spec.metric, "primary": primary_metric(spec),
        "untrained": untrained, "metrics": metrics, "dev_examples": dev.manifest.num_examples,
        "dev_features": len(dev), "window": dev.manifest.extra.get("window"), "eval_seconds": seconds,
        "eval_sequences_per_second": len(dev) / seconds,
        "training": training,
        **{k: v for k, v in extra.items() if k not in ("predictions", "nbest")},
    }
    return record, extra


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("evaluate", __doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--features", required=True, type=Path, help="the task's feature folder (stage tokenize)")
    parser.add_argument("--data", required=True, type=Path, help="the task's raw data folder (stage download)")
    parser.add_argument("--model", required=True, type=Path, help="a fine-tuned model folder (stage finetune)")
    parser.add_argument("--untrained", action="store_true", help="baseline: a fresh head on --model, no training")
    parser.add_argument("--out", required=True, type=Path, help="the folder for metrics.json and predictions")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("evaluate", EvaluateParams, args.params)
        record, extra = evaluate(args.task, args.features, args.data, args.model, args.untrained, params, args.params)
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            write_json(tmp / "metrics.json", record)
            write_json(tmp / "predictions.json", extra["predictions"])
            if "nbest" in extra:
                write_json(tmp / "nbest_predictions.json", extra["nbest"])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items() if isinstance(v, float))
        logger.info("%s%s: %s -> %s", args.task, " (untrained baseline)" if args.untrained else "", shown, args.out)

    return run_stage("evaluate", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
