"""The dev figures of a model, as the evaluate stage reports them: its params section, the model's outputs
over the dev features, and the task's metrics from them. Finetune's evaluation during training uses the same
functions (one definition of a dev figure; a stage never imports another stage). The section's dataclass,
EvaluateParams, is stages._lib.evaluation's (the predict stage reads it without torch's training code)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bert.data.cache import METADATA, CachedFeatures, pad_collate
from bert.engine import DistContext, predict, setup_distributed
from bert.io.fileio import sha256_of
from bert.tasks import TaskKind, TaskSpec
from bert.tasks.metrics import task_metrics
from bert.tasks.records import SquadFeatures, SquadResult
from bert.tasks.squad import load_squad_json
from bert.tasks.squad_metrics import evaluate_v1, evaluate_v2
from bert.tasks.squad_postprocess import compute_predictions
from bert.tasks.windows import combine_windows
from stages._lib.common import require_input
from stages._lib.evaluation import EvaluateParams


MULTI_LABEL_THRESHOLD = 0.5  # a label's probability above which a multi-label model predicts it (bert predict's)


@dataclass(frozen=True)
class Scored:
    """A split's label predictions, one per example (a text cut into windows counts once)."""

    logits: torch.Tensor  # [E, K] (regression [E, 1]): the windows' logits combined
    gold: np.ndarray  # [E] class ids or scores; multi-label [E, K] 0/1
    ids: list[str]  # [E]
    pred: np.ndarray  # [E] classes or scores; multi-label [E, K] booleans
    metrics: dict[str, float]  # in points


def in_points(metrics: dict[str, float]) -> dict[str, float]:
    """Fractions (0-1) as points (0-100), as GLUE and SQuAD report them."""
    return {k: 100.0 * v for k, v in metrics.items()}


def first_windows(features: CachedFeatures) -> Optional[np.ndarray]:
    """The row of each example's first window ([E]), or None when every example is one row (no windows)."""
    if not features.manifest.extra.get("window"):
        return None
    index = np.asarray(features.metadata["example_index"])
    return np.flatnonzero(np.r_[True, index[1:] != index[:-1]])  # windows of an example are consecutive


def per_example(logits: torch.Tensor, features: CachedFeatures) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(logits [E, C], gold labels [E], ids [E]) of a split's examples: windows combined as the manifest says
    (bert.tasks.windows.combine_windows, as bert predict combines them)."""
    gold = features.labels("labels").numpy()
    ids = (features.metadata or {}).get("ids") or [str(i) for i in range(len(features))]
    first = first_windows(features)
    if first is None:
        return logits, gold, ids
    window = features.manifest.extra["window"]
    combined = combine_windows(logits.float().numpy(), features.metadata["example_index"],
                               features.manifest.num_examples, window["combine"])
    return torch.from_numpy(combined), gold[first], [ids[i] for i in first]


def label_metrics(spec: TaskSpec, logits: torch.Tensor, dev: CachedFeatures) -> Scored:
    """Classification, regression, multi-label and multiple-choice logits of dev's rows [N, K] (regression
    [N, 1]) -> each example's prediction and the task's metrics."""
    logits, gold, ids = per_example(logits, dev)
    if spec.kind is TaskKind.MULTI_LABEL_CLASSIFICATION:
        pred = torch.sigmoid(logits.float()).numpy() > MULTI_LABEL_THRESHOLD
        return Scored(logits, gold, ids, pred, in_points(task_metrics(spec, pred, gold > 0.5)))
    pred = logits.view(-1).float().numpy() if spec.kind is TaskKind.REGRESSION else logits.argmax(-1).numpy()
    return Scored(logits, gold, ids, pred, in_points(task_metrics(spec, pred, gold)))


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


def predict_dev(model: torch.nn.Module, dev: CachedFeatures, params: EvaluateParams,
                ctx: Optional[DistContext] = None, progress: bool = True) -> tuple[torch.Tensor, ...]:
    """The model's outputs (CPU tensors, dev order) over the dev features: (logits,) or (start, end) logits.

    ctx: where to run (None: one process, the GPU when there is one, else the CPU); progress: a tqdm bar.
    """
    outputs = predict(model, dev, functools.partial(pad_collate, pad_id=0), batch_size=params.batch_size,
                      precision=params.precision, ctx=ctx or setup_distributed(), lengths=dev.lengths,
                      progress=progress)
    return tuple(t.cpu() for t in outputs)


def dev_metrics(spec: TaskSpec, outputs: tuple[torch.Tensor, ...], dev: CachedFeatures, data_dir: Path,
                params: EvaluateParams) -> dict[str, float]:
    """The task's dev metrics in points (metrics.json's "metrics"), from predict_dev's outputs.

    Finetune's evaluation during training calls this too: one definition of a dev figure.
    """
    if spec.kind is TaskKind.SQUAD:
        require_input(data_dir, "download", f"raw data of {spec.name}")
        return squad_metrics(spec, outputs, dev, data_dir, params)[0]
    return label_metrics(spec, outputs[0], dev).metrics
