"""The dev figures of a model, as the evaluate stage reports them: its params section, the model's outputs
over the dev features, and the task's metrics from them. Finetune's evaluation during training uses the same
functions (one definition of a dev figure; a stage never imports another stage)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bert.data.cache import METADATA, CachedFeatures, pad_collate
from bert.engine import DistContext, predict, setup_distributed
from bert.engine.precision import PRECISIONS
from bert.io.fileio import sha256_of
from bert.io.settings import at_least, one_of
from bert.tasks import TaskKind, TaskSpec
from bert.tasks.metrics import task_metrics
from bert.tasks.records import SquadFeatures, SquadResult
from bert.tasks.squad import load_squad_json
from bert.tasks.squad_metrics import evaluate_v1, evaluate_v2
from bert.tasks.squad_postprocess import compute_predictions
from stages._lib.common import require_input


@dataclass(frozen=True)
class EvaluateParams:
    """Section ``evaluate``."""

    batch_size: int = field(metadata=at_least(1))
    precision: str = field(metadata=one_of(*PRECISIONS))
    n_best_size: int = field(metadata=at_least(1))  # SQuAD
    max_answer_length: int = field(metadata=at_least(1))  # SQuAD, in tokens
    null_score_diff_threshold: float  # SQuAD v2.0
    baseline_seed: int  # seeds the random head of the untrained baseline


def in_points(metrics: dict[str, float]) -> dict[str, float]:
    """Fractions (0-1) as points (0-100), as GLUE and SQuAD report them."""
    return {k: 100.0 * v for k, v in metrics.items()}


def label_metrics(spec: TaskSpec, logits: torch.Tensor, dev: CachedFeatures) -> tuple[np.ndarray, dict[str, float]]:
    """GLUE and SWAG logits [N, K] (regression: [N, 1]) -> (predicted classes or scores [N], metrics in points)."""
    pred = logits.view(-1).float().numpy() if spec.kind is TaskKind.REGRESSION else logits.argmax(-1).numpy()
    return pred, in_points(task_metrics(spec, pred, dev.labels("labels").numpy()))


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
    return label_metrics(spec, outputs[0], dev)[1]
