"""Stage pretrain: masked LM + next sentence pre-training of any checkpoint on the cached instances.

    torchrun --standalone --nproc_per_node 1 -m stages.pretrain --params pretrain/params.yaml \\
        --model pretrain/data/model --instances pretrain/data/instances --out pretrain/model \\
        --metrics pretrain/reports/metrics.json --history pretrain/reports/history.json --work pretrain/work

(pretrain/dvc.yaml runs it through ``python -m bert.engine.launch``: torchrun, asking ``preflight`` first.)
``BertForPreTraining`` from the model folder (a checkpoint without pre-training heads, such as the
packaged MiniLM, gets them newly initialised: the log and metrics.json list them) is trained with
the engine (DDP, fp16/bf16, accumulation, resumable checkpoints under --work). Rank 0 measures masked
LM and next-sentence loss and accuracy on the dev instances before and after, and writes the model
folder (config.json + model.safetensors + vocab.txt: the fine-tuning pipeline takes it as
``model.name``), the per-step history (a JSON list, as the finetune stage's) and metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from bert.data.pretraining_data import IGNORE_INDEX, MLM_LABELS, NSP_LABEL, PretrainingDataset, pretraining_collate
from bert.engine import DistContext, FitResult
from bert.io.fingerprint import fingerprint
from bert.io.settings import at_least
from bert.modeling import BertForPreTraining
from stages._lib.common import check_vocab, require_input
from stages._lib.params import DEFAULT_PRETRAIN_PARAMS
from stages._lib.training import Outputs, Run, TrainingParams, TrainingStage, final_loss, fit_summary, run_as_program

logger = logging.getLogger("stages.pretrain")
PAD_ID = 0  # BERT vocabularies put [PAD] first
TRAIN_EVAL_LIMIT = 2048  # instances evaluated when the corpus has no held-out documents


@dataclass(frozen=True, kw_only=True)
class PretrainParams(TrainingParams):
    """Section ``pretrain``: the engine's TrainConfig and nproc (stages._lib.training.TrainingParams),
    the seed included, plus the dev batch size. Evaluation during training (eval_every, select, patience) is
    fine-tuning's: the engine's defaults (off) hold."""

    NOT_IN_PARAMS: ClassVar[tuple[str, ...]] = (*TrainingParams.NOT_IN_PARAMS, "eval_every", "select", "patience")
    eval_batch_size: int = field(metadata=at_least(1))


@dataclass
class PretrainMetrics:
    """Masked LM figures over the predicted positions, next sentence figures over the instances."""

    mlm_loss: float
    mlm_accuracy: float
    nsp_loss: float
    nsp_accuracy: float
    num_predictions: int
    num_instances: int


@torch.no_grad()
def evaluate_pretraining(model: BertForPreTraining, dataset: Dataset, batch_size: int,
                         device: torch.device) -> PretrainMetrics:
    """Masked LM and next sentence loss and accuracy of `model` on `dataset` (the model's own loss definition).

    The LM head runs only at the predicted positions (as Google's run_pretraining gathers
    masked_lm_positions), so evaluation needs no [batch, length, vocab] tensor.

    Args:
        model: the pre-training model (put in eval mode, then back in the mode it was in).
        dataset: a PretrainingDataset (or a Subset of one).
        batch_size: instances per forward pass.
        device: where the model is.
    Returns:
        PretrainMetrics (losses are means: per predicted token, per instance).
    """
    was_training = model.training
    model.eval()
    mlm_loss = mlm_correct = nsp_loss = nsp_correct = 0.0
    predictions = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) for k, v in pretraining_collate(items, PAD_ID).items()}
        sequence_output, pooled_output = model.bert(batch["input_ids"], batch["token_type_ids"],
                                                    batch["attention_mask"], False)
        labels = batch[MLM_LABELS]
        chosen = labels != IGNORE_INDEX
        scores = model.cls.predictions(sequence_output[chosen]).float()
        mlm_loss += float(F.cross_entropy(scores, labels[chosen], reduction="sum"))
        mlm_correct += float((scores.argmax(-1) == labels[chosen]).sum())
        predictions += int(chosen.sum())
        nsp_scores = model.cls.seq_relationship(pooled_output).float()
        nsp_loss += float(F.cross_entropy(nsp_scores, batch[NSP_LABEL], reduction="sum"))
        nsp_correct += float((nsp_scores.argmax(-1) == batch[NSP_LABEL]).sum())
    model.train(was_training)
    n = len(dataset)
    return PretrainMetrics(mlm_loss / max(predictions, 1), mlm_correct / max(predictions, 1),
                           nsp_loss / max(n, 1), nsp_correct / max(n, 1), predictions, n)


def load_split(instances_dir: Path, split: str, model_dir: Path) -> PretrainingDataset:
    """Open an instances split, checking it was made with the model folder's vocab."""
    dataset = PretrainingDataset(require_input(instances_dir / split, "pretrain_data", "pre-training instances"))
    return check_vocab(dataset, instances_dir / split, model_dir, "pretrain_data")


def load_model(model_dir: Path, max_seq_length: int, seed: int) -> tuple[BertForPreTraining, list[str]]:
    """BertForPreTraining from the folder; returns it and the names of the newly initialised weights."""
    require_input(model_dir / "config.json", "convert", "model to pre-train")
    torch.manual_seed(seed)  # new heads are initialised from the run's seed
    model = BertForPreTraining.from_pretrained(model_dir)
    if max_seq_length > model.config.max_position_embeddings:
        raise ValueError(f"instances.max_seq_length {max_seq_length} exceeds the model's "
                         f"max_position_embeddings {model.config.max_position_embeddings} ({model_dir})")
    new = list(model.load_report.newly_initialized)
    if new:
        logger.warning("%s has no pre-training heads: %d tensors newly initialised (%s); their loss "
                       "starts high", model_dir, len(new), ", ".join(new))
    return model, new


class Pretrain(TrainingStage):
    name = "pretrain"
    params_cls = PretrainParams
    summary_name = "pretraining.json"
    default_params = DEFAULT_PRETRAIN_PARAMS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--instances", required=True, type=Path, help="the instances folder (stage pretrain_data)")
        parser.add_argument("--metrics", required=True, type=Path, help="the metrics JSON to write")

    def prepare(self, args: argparse.Namespace, params: PretrainParams, ctx: DistContext) -> Run:
        """Load; on rank 0, measure the start model on the dev instances (the "before" figures)."""
        train = load_split(args.instances, "train", args.model)
        dev = load_split(args.instances, "dev", args.model)
        self.eval_split, self.eval_set = "dev", dev
        if not len(dev):  # no held-out documents: the first train instances (shuffled) stand in
            k = min(len(train), TRAIN_EVAL_LIMIT)
            self.eval_split, self.eval_set = f"train[:{k}]", Subset(train, range(k))
        if not len(train):
            raise ValueError(f"{args.instances / 'train'}: no training instances (is the corpus empty?)")
        model, self.newly_initialized = load_model(args.model, train.manifest.max_seq_length, params.seed)
        if ctx.is_main:
            self.before = evaluate_pretraining(model.to(ctx.device), self.eval_set, params.eval_batch_size, ctx.device)
            logger.info("before: %s", self.before)
        return Run(model, train, functools.partial(pretraining_collate, pad_id=PAD_ID), params.train_config())

    def inputs(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"instances": fingerprint(args.instances / "train"), "model": fingerprint(args.model)}

    def finish(self, args: argparse.Namespace, params: PretrainParams, run: Run, result: FitResult,
               ctx: DistContext) -> Outputs:
        """Measure again; metrics.json, and the same figures in the model folder's pretraining.json."""
        after = evaluate_pretraining(run.model, self.eval_set, params.eval_batch_size, ctx.device)
        logger.info("after: %s", after)
        before = dataclasses.asdict(self.before)
        metrics = {"eval_split": self.eval_split, "before": before, "after": dataclasses.asdict(after),
                   **dataclasses.asdict(after), "newly_initialized": self.newly_initialized,
                   "train_instances": len(run.dataset), **fit_summary(result, ctx),
                   "final_train_loss": final_loss(result)}
        message = (f"MLM loss {before['mlm_loss']:.3f} -> {after.mlm_loss:.3f}, accuracy {before['mlm_accuracy']:.3f} "
                   f"-> {after.mlm_accuracy:.3f}; NSP accuracy {before['nsp_accuracy']:.3f} -> "
                   f"{after.nsp_accuracy:.3f} -> {args.out}")
        return Outputs(self.summary_name, {**metrics, "start_model": str(args.model)}, {args.metrics: metrics},
                       message)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    return Pretrain(__doc__).main(argv)


def preflight(argv: list[str], nproc: int) -> int:
    """The check bert.engine.launch makes before it starts `nproc` workers; returns the exit status."""
    return Pretrain(__doc__).preflight(argv, nproc)


if __name__ == "__main__":
    run_as_program(main)
