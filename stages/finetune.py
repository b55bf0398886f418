"""Stage finetune: train one (task, seed) from the cached train features.

    torchrun --standalone --nproc_per_node 1 -m stages.finetune --task demo-pair --seed 1 \
        --features data/features/demo-pair --model models/pretrained \
        --out models/finetuned/demo-pair/seed1 --history reports/history/demo-pair/seed1.json \
        --work models/checkpoints/demo-pair/seed1

Also runs as ``python -m stages.finetune ...`` (one process) and under the old
``python -m torch.distributed.launch``. Rank 0 writes the fine-tuned model folder (config.json,
model.safetensors, vocab.txt, training.json) and the per-step training history (a JSON list, one
point per ``log_every`` optimizer steps, read by ``dvc plots``); resumable checkpoints live under
``--work`` and are dropped once the run has finished.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from bert.data.cache import pad_collate
from bert.engine import FitResult, TrainConfig, cleanup_distributed, fit, setup_distributed, strip_launcher_args
from stages.common import (
    atomic_outputs,
    environment,
    load_features,
    require_input,
    run_stage,
    run_training_program,
    write_json,
    stage_parser,
)
from stages.params import FinetuneParams, load_section
from stages.tasks import get_task, head_for

logger = logging.getLogger("stages.finetune")
FINGERPRINT = "fingerprint.json"
HISTORY_STREAM_ENV = "BERT_HISTORY_STREAM"


def train_config(params: FinetuneParams, seed: int) -> TrainConfig:
    """The engine's TrainConfig from the finetune section (every key but nproc) and the run's seed."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in dataclasses.asdict(params).items() if k in names}
    return TrainConfig(**values, seed=seed)


def prepare_work_dir(work: Path, fingerprint: dict) -> None:
    """Keep the checkpoints in `work` only if they belong to this exact run (same inputs and params)."""
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / FINGERPRINT
    old = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else None
    if old != fingerprint:
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        write_json(stamp, fingerprint)


def finetune(task: str, seed: int, features_dir: Path, model_dir: Path, work: Path,
             params: FinetuneParams, on_log: Optional[Callable[[dict], None]] = None,
             local_rank: Optional[int] = None):
    """Train; returns (the trained model, the FitResult, the DistContext, the number of train examples)."""
    ctx = setup_distributed(local_rank)
    spec = get_task(task)
    require_input(model_dir / "config.json", "convert", "pretrained model")
    train = load_features(Path(features_dir) / "train", model_dir)
    if train.manifest.task != task:
        raise ValueError(f"{features_dir}: features of task {train.manifest.task}, not {task}")
    if ctx.world_size != params.nproc:
        logger.warning("running on %d processes; params say finetune.nproc %d", ctx.world_size, params.nproc)
    head, kwargs = head_for(spec)
    torch.manual_seed(seed)  # the new head's initialisation depends on the run's seed
    model = head.from_pretrained(model_dir, **kwargs)
    cfg = train_config(params, seed)
    if ctx.is_main:
        manifest_sha = hashlib.sha256((Path(features_dir) / "train" / "manifest.json").read_bytes()).hexdigest()
        source = model_dir / "SOURCE.json"
        model_record = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else None
        # the settings that change the weights (not log_every, accumulation, the process count)
        prepare_work_dir(work, {"train_config": cfg.trajectory(), "task": task,
                                "features_manifest": manifest_sha, "model": model_record})
    ctx.barrier()
    pad_id = 0  # BERT vocabularies put [PAD] first
    result = fit(model, train, functools.partial(pad_collate, pad_id=pad_id), cfg, work, ctx=ctx,
                 lengths=train.lengths, on_log=on_log)
    return model, result, ctx, len(train)


def history_streamer() -> Optional[Callable[[dict], None]]:
    """An on_log callback appending each history point as a JSON line to $BERT_HISTORY_STREAM.

    The MLflow stage wrapper (pipeline.track) tails that file to log metrics while training runs.
    """
    path = os.environ.get(HISTORY_STREAM_ENV)
    if not path:
        return None

    def append(point: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")

    return append


def write_outputs(model, result: FitResult, task: str, seed: int, num_examples: int, params: FinetuneParams,
                  model_dir: Path, out: Path, history: Path, world_size: int) -> None:
    """Rank 0: the model folder and the history file, both or neither."""
    source = model_dir / "SOURCE.json"
    summary = {
        "task": task, "seed": seed, "train_examples": num_examples, "world_size": world_size,
        "model": json.loads(source.read_text(encoding="utf-8"))["name"] if source.is_file() else str(model_dir),
        "global_steps": result.global_steps, "seconds": result.seconds,
        "sequences_per_second": result.sequences_per_second, "skipped_steps": result.skipped_steps,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "params": dataclasses.asdict(params), "environment": environment(),
    }
    with atomic_outputs(out, history) as (tmp_out, tmp_history):
        model.save_pretrained(tmp_out)
        for name in ("vocab.txt", "tokenizer_config.json"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp_out / name)
        write_json(tmp_out / "training.json", summary)
        write_json(tmp_history, [dict(point) for point in result.history])


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    argv, local_rank = strip_launcher_args(sys.argv[1:] if argv is None else argv)  # the old launcher's --local_rank
    parser = stage_parser("finetune", __doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--features", required=True, type=Path, help="the task's feature folder (stage tokenize)")
    parser.add_argument("--model", required=True, type=Path, help="the pretrained model folder (stage convert)")
    parser.add_argument("--out", required=True, type=Path, help="the fine-tuned model folder to write")
    parser.add_argument("--history", required=True, type=Path, help="the training history JSON to write")
    parser.add_argument("--work", required=True, type=Path, help="the folder for resumable checkpoints")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("finetune", args.params)
        try:
            model, result, ctx, n = finetune(args.task, args.seed, args.features, args.model, args.work, params,
                                             on_log=history_streamer(), local_rank=local_rank)
            if ctx.is_main:
                write_outputs(model, result, args.task, args.seed, n, params, args.model, args.out,
                              args.history, ctx.world_size)
                shutil.rmtree(args.work / "checkpoints", ignore_errors=True)  # the run is complete
                logger.info("%s seed %d: %d steps in %.1f s (%.1f sequences/s) -> %s", args.task, args.seed,
                            result.global_steps, result.seconds, result.sequences_per_second, args.out)
            ctx.barrier()
        finally:
            cleanup_distributed()

    return run_stage("finetune", body, debug=args.debug)


if __name__ == "__main__":
    run_training_program(main)
