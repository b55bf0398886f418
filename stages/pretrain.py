"""Stage pretrain: masked LM + next sentence pre-training of any checkpoint on the cached instances.

    torchrun --standalone --nproc_per_node 1 -m stages.pretrain --params pretrain/params.yaml \\
        --model pretrain/data/model --instances pretrain/data/instances --out pretrain/model \\
        --metrics pretrain/reports/metrics.json --history pretrain/reports/history.json --work pretrain/work

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
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from bert.io.download import sha256_of
from bert.engine import FitResult, TrainConfig, cleanup_distributed, fit, setup_distributed, strip_launcher_args
from bert.modeling import BertForPreTraining
from bert.data.pretraining_data import IGNORE_INDEX, MLM_LABELS, NSP_LABEL, PretrainingDataset, pretraining_collate
from stages.common import (
    add_debug_flag,
    atomic_outputs,
    environment,
    require_input,
    run_stage,
    run_training_program,
    write_json,
)
from stages.finetune import history_streamer, prepare_work_dir
from stages.pretrain_data import DEFAULT_PRETRAIN_PARAMS, load_pretrain_section

logger = logging.getLogger("stages.pretrain")
PAD_ID = 0  # BERT vocabularies put [PAD] first
TRAIN_EVAL_LIMIT = 2048  # instances evaluated when the corpus has no held-out documents


@dataclass(frozen=True)
class PretrainParams:
    """Section ``pretrain``: the engine's TrainConfig fields, the process count, the dev batch size."""

    nproc: int = field(metadata={"min": 1})
    epochs: float = field(metadata={"gt": 0.0})
    learning_rate: float = field(metadata={"gt": 0.0})
    global_batch_size: int = field(metadata={"min": 1})
    grad_accum_steps: int = field(metadata={"min": 1})
    warmup_proportion: float = field(metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(metadata={"min": 0.0})
    max_grad_norm: float = field(metadata={"min": 0.0})
    precision: Literal["fp32", "fp16", "bf16"]
    loss_scale: float = field(metadata={"min": 0.0})
    optimizer: Literal["lamb", "bertadam", "adamw"]
    schedule: Literal["warmup_linear", "warmup_cosine", "warmup_constant", "none"]
    seed: int
    log_every: int = field(metadata={"min": 1})
    checkpoint_every: int = field(metadata={"min": 0})
    resume: bool
    group_by_length: bool
    num_workers: int = field(metadata={"min": 0})
    eval_batch_size: int = field(metadata={"min": 1})

    def train_config(self) -> TrainConfig:
        """The engine's TrainConfig (every key but nproc and eval_batch_size)."""
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


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
    vocab = model_dir / "vocab.txt"
    if vocab.is_file() and sha256_of(vocab) != dataset.manifest.vocab_sha256:
        raise ValueError(f"{instances_dir / split}: made with another vocabulary than {vocab}; "
                         f"re-run the pretrain_data stage")
    return dataset


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


def write_outputs(model: BertForPreTraining, result: FitResult, metrics: dict, params: PretrainParams,
                  model_dir: Path, out: Path, metrics_file: Path, history: Path) -> None:
    """Rank 0: the model folder (with pretraining.json: metrics, params, environment), metrics.json
    and the history, all or none."""
    with atomic_outputs(out, metrics_file, history) as (tmp_out, tmp_metrics, tmp_history):
        model.save_pretrained(tmp_out)
        for name in ("vocab.txt", "tokenizer_config.json"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp_out / name)
        write_json(tmp_out / "pretraining.json", {**metrics, "start_model": str(model_dir),
                                                  "params": dataclasses.asdict(params), "environment": environment()})
        write_json(tmp_metrics, metrics)
        write_json(tmp_history, [dict(point) for point in result.history])


def pretrain(params: PretrainParams, model_dir: Path, instances_dir: Path, work: Path,
             local_rank: Optional[int] = None):
    """Evaluate, train, evaluate. Returns (model, FitResult, metrics dict or None off rank 0, DistContext)."""
    ctx = setup_distributed(local_rank)
    train = load_split(instances_dir, "train", model_dir)
    dev = load_split(instances_dir, "dev", model_dir)
    eval_split, eval_set = "dev", dev
    if not len(dev):  # no held-out documents: the first train instances (shuffled) stand in
        k = min(len(train), TRAIN_EVAL_LIMIT)
        eval_split, eval_set = f"train[:{k}]", Subset(train, range(k))
    if not len(train):
        raise ValueError(f"{instances_dir / 'train'}: no training instances (is the corpus empty?)")
    if ctx.world_size != params.nproc:
        logger.warning("running on %d processes; params say pretrain.nproc %d", ctx.world_size, params.nproc)
    model, new = load_model(model_dir, train.manifest.max_seq_length, params.seed)
    cfg = params.train_config()
    before = None
    if ctx.is_main:
        # checkpoints under `work` are resumed only by the run that wrote them
        prepare_work_dir(work, {"train_config": dataclasses.asdict(cfg),
                                "instances": sha256_of(instances_dir / "train" / "manifest.json"),
                                "model": {f.name: sha256_of(f) for f in sorted(model_dir.glob("*")) if f.is_file()}})
        before = evaluate_pretraining(model.to(ctx.device), eval_set, params.eval_batch_size, ctx.device)
        logger.info("before: %s", before)
    ctx.barrier()
    result = fit(model, train, functools.partial(pretraining_collate, pad_id=PAD_ID), cfg, work, ctx=ctx,
                 lengths=train.lengths, on_log=history_streamer())  # MLflow's wrapper tails the stream
    metrics = None
    if ctx.is_main:
        after = evaluate_pretraining(model, eval_set, params.eval_batch_size, ctx.device)
        logger.info("after: %s", after)
        metrics = {
            "eval_split": eval_split, "before": dataclasses.asdict(before), "after": dataclasses.asdict(after),
            **dataclasses.asdict(after),
            "newly_initialized": new, "train_instances": len(train), "world_size": ctx.world_size,
            "global_steps": result.global_steps, "seconds": result.seconds,
            "sequences_per_second": result.sequences_per_second, "skipped_steps": result.skipped_steps,
            "final_train_loss": result.history[-1]["loss"] if result.history else None,
        }
    return model, result, metrics, ctx


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    argv, local_rank = strip_launcher_args(sys.argv[1:] if argv is None else argv)  # the old launcher's --local_rank
    parser = argparse.ArgumentParser(prog="python -m stages.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PRETRAIN_PARAMS)
    parser.add_argument("--model", required=True, type=Path, help="the model folder to start from (stage convert)")
    parser.add_argument("--instances", required=True, type=Path, help="the instances folder (stage instances)")
    parser.add_argument("--out", required=True, type=Path, help="the pre-trained model folder to write")
    parser.add_argument("--metrics", required=True, type=Path, help="the metrics JSON to write")
    parser.add_argument("--history", required=True, type=Path, help="the training history JSON to write")
    parser.add_argument("--work", required=True, type=Path, help="the folder for resumable checkpoints")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_pretrain_section("pretrain", PretrainParams, args.params)
        try:
            model, result, metrics, ctx = pretrain(params, args.model, args.instances, args.work, local_rank)
            if ctx.is_main:
                write_outputs(model, result, metrics, params, args.model, args.out, args.metrics, args.history)
                shutil.rmtree(args.work / "checkpoints", ignore_errors=True)  # the run is complete
                logger.info("MLM loss %.3f -> %.3f, accuracy %.3f -> %.3f; NSP accuracy %.3f -> %.3f -> %s",
                            metrics["before"]["mlm_loss"], metrics["mlm_loss"], metrics["before"]["mlm_accuracy"],
                            metrics["mlm_accuracy"], metrics["before"]["nsp_accuracy"], metrics["nsp_accuracy"],
                            args.out)
            ctx.barrier()
        finally:
            cleanup_distributed()

    return run_stage("pretrain", body, debug=args.debug)


if __name__ == "__main__":
    run_training_program(main)
