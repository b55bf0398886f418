"""Stage finetune: train one (task, seed) from the cached train features.

    torchrun --standalone --nproc_per_node 1 -m stages.finetune --task demo-pair --seed 1 --learning_rate 5e-05 \
        --features data/features/demo-pair --model models/pretrained \
        --out models/finetuned/demo-pair/lr5e-05/seed1 --history reports/history/demo-pair/lr5e-05/seed1.json \
        --work models/checkpoints/demo-pair/lr5e-05/seed1 --data data/raw/demo-pair

``--<key> VALUE`` (any key of the finetune section but nproc; ``--resume`` / ``--no-resume`` for a switch)
overrides params.yaml's value: a trial of the search grid (stages._lib.search; dvc.yaml passes them).

dvc.yaml runs it through ``python -m bert.engine.launch`` (torchrun, asking ``preflight`` first); it also runs
as ``python -m stages.finetune ...`` (one process) and under the old ``python -m torch.distributed.launch``.
Rank 0 writes the fine-tuned model folder (config.json with what it was fine-tuned for: id2label, label2id,
problem_type and the task entry of bert/tasks/folder.py; model.safetensors, vocab.txt, tokenizer_config.json,
training.json) and the per-step training history (a JSON list, one point per ``log_every`` optimizer steps and
one at each evaluation, read by ``dvc plots``); resumable checkpoints live under ``--work`` and are dropped once
the run has finished. The steps every training stage shares are stages._lib.training's; what is the task's own
is here.

With ``finetune.eval_every`` > 0 the dev split (``<features>/dev``; SQuAD also reads ``--data``'s dev file) is
scored every eval_every optimizer steps and at the last, by the evaluate stage's own code with its params
(section ``evaluate``): the figures join the history as ``dev_<metric>``, ``select: best`` writes the weights
of the best step by the task's primary metric, ``patience`` stops early, and training.json's ``selection``
says which step was written and why.
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from bert.data.cache import CachedFeatures, CacheManifest, pad_collate
from bert.engine import DistContext, FitResult, TrainConfig
from bert.io.fingerprint import fingerprint
from bert.io.settings import SettingError, check_value, seed_range
from bert.tasks import TaskKind, TaskSpec
from bert.tasks.folder import metadata_for_task, write_task_metadata
from bert.tasks.windows import WindowSettings
from stages._lib.common import load_features, read_json, require_input
from stages._lib.params import ParamsError, load_section, read_params_file
from stages._lib.scoring import EvaluateParams, dev_metrics, predict_dev
from stages._lib.search import SECTION, read_search
from stages._lib.tasks import get_task, head_for, manifest_labels, primary_metric
from stages._lib.training import Outputs, Run, TrainingParams, TrainingStage, final_loss, fit_summary, run_as_program

PAD_ID = 0  # BERT vocabularies put [PAD] first


@dataclass(frozen=True, kw_only=True)
class FinetuneParams(TrainingParams):
    """Section ``finetune``: the engine's TrainConfig and nproc (stages._lib.training.TrainingParams);
    the seed is each run's --seed (params.yaml's ``seeds`` list), not a key of the section."""

    NOT_IN_PARAMS: ClassVar[tuple[str, ...]] = (*TrainingParams.NOT_IN_PARAMS, "seed")


@dataclass
class DevEvaluator:
    """The dev figures of the model in training, as the evaluate stage computes them (stages._lib.scoring's
    predict_dev and dev_metrics, its params): the engine's Evaluator (bert.engine.selection), on rank 0's device."""

    spec: TaskSpec
    dev: CachedFeatures
    data_dir: Optional[Path]
    params: EvaluateParams
    ctx: DistContext  # one process on the training device: the other ranks wait
    primary: str  # "dev_<the task's primary metric>"

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        outputs = predict_dev(model, self.dev, self.params, self.ctx, progress=False)
        metrics = dev_metrics(self.spec, outputs, self.dev, self.data_dir, self.params)
        return {f"dev_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def dev_evaluator(args: argparse.Namespace, spec: TaskSpec, ctx: DistContext) -> DevEvaluator:
    """The evaluator of --features' dev split, with the params file's evaluate section (rank 0 scores)."""
    if spec.kind is TaskKind.SQUAD and args.data is None:
        raise ValueError(f"--data: finetune.eval_every scores {args.task}'s dev set with the official SQuAD script, "
                         "which reads the raw dev file: pass the task's raw data folder (stage download)")
    dev = load_features(args.features / "dev", args.model, args.task)
    return DevEvaluator(spec, dev, args.data, load_section("evaluate", EvaluateParams, args.params),
                        DistContext(device=ctx.device), f"dev_{primary_metric(spec)}")


class Finetune(TrainingStage):
    name = "finetune"
    params_cls = FinetuneParams
    summary_name = "training.json"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task", required=True)
        parser.add_argument("--seed", required=True, type=int)
        parser.add_argument("--features", required=True, type=Path, help="the task's feature folder (stage tokenize)")
        parser.add_argument("--data", type=Path, help="the task's raw data folder (stage download): SQuAD's dev "
                            "file, for finetune.eval_every")

    def load_params(self, args: argparse.Namespace) -> FinetuneParams:
        """The section with the command's overrides; under DVC, every key of params.yaml's search grid must be one
        of them (a key added to the grid but not to dvc.yaml's matrix would train finetune's value instead)."""
        params = super().load_params(args)
        if os.environ.get("DVC_STAGE"):
            for key in read_search(read_params_file(args.params), args.params):
                if getattr(args, f"set_{key}", None) is None:
                    raise ParamsError(f"{args.params}: {SECTION}.{key}: dvc.yaml's finetune matrix does not cross it "
                                      f"(the command has no --{key}): run `python -m pipeline.matrix write`")
        return params

    def prepare(self, args: argparse.Namespace, params: FinetuneParams, ctx: DistContext) -> Run:
        try:
            check_value(int, seed_range(), args.seed, "--seed")
        except SettingError as err:
            raise ValueError(f"{err} (the run's seed: an entry of params.yaml's seeds)") from None
        require_input(args.model / "config.json", "convert", "pretrained model")
        source_record(args.model)  # read again by finish(): a damaged one fails now, not after the training
        train = load_features(args.features / "train", args.model, args.task)
        self.spec = spec = get_task(args.task, args.params, labels=manifest_labels(train.manifest))
        head, kwargs = head_for(spec)
        torch.manual_seed(args.seed)  # the new head's initialisation depends on the run's seed
        model = head.from_pretrained(args.model, **kwargs)
        evaluator = dev_evaluator(args, spec, ctx) if params.eval_every and ctx.is_main else None
        return Run(model, train, functools.partial(pad_collate, pad_id=PAD_ID), params.train_config(seed=args.seed),
                   evaluator)

    def inputs(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"task": args.task, "features": fingerprint(args.features / "train"), "model": fingerprint(args.model)}

    def fingerprint(self, args: argparse.Namespace, config: TrainConfig) -> dict[str, Any]:
        # the dev split decides the best step and an early stop: a checkpoint of another one is not resumed
        dev = {"dev_features": fingerprint(args.features / "dev")} if config.eval_every else {}
        return {**super().fingerprint(args, config), **dev}

    def finish(self, args: argparse.Namespace, params: FinetuneParams, run: Run, result: FitResult,
               ctx: DistContext) -> Outputs:
        record = source_record(args.model)
        summary = {"task": args.task, "seed": args.seed, "train_examples": len(run.dataset),
                   "model": record["name"] if record else str(args.model), **fit_summary(result, ctx),
                   "final_loss": final_loss(result), "selection": result.selection}
        message = (f"{args.task} seed {args.seed}: {result.global_steps} steps in {result.seconds:.1f} s "
                   f"({result.sequences_per_second:.1f} sequences/s){selection_note(result.selection)} -> {args.out}")
        return Outputs(self.summary_name, summary, message=message,
                       describe=functools.partial(describe_model, self.spec, run.dataset.manifest))


def describe_model(spec: TaskSpec, manifest: CacheManifest, folder: Path) -> None:
    """Write what the model was fine-tuned for into its folder (bert/tasks/folder.py: config.json's id2label,
    label2id, problem_type and task entry with its input geometry, windows included; tokenizer_config.json's
    casing), from the features it was trained on: `bert predict --model FOLDER` and the predict stage need no
    --task and read inputs exactly as tokenize did, and HF's Auto classes read the same labels."""
    settings: dict[str, Any] = {}
    if spec.kind is TaskKind.SQUAD:
        settings.update(doc_stride=manifest.doc_stride, max_query_length=manifest.max_query_length)
    window = manifest.extra.get("window")
    if window:
        settings["window"] = WindowSettings(window["stride"], window["combine"])
    write_task_metadata(folder, metadata_for_task(spec, manifest.max_seq_length, **settings), manifest.do_lower_case)


def selection_note(chosen: Optional[dict]) -> str:
    """The log line's account of evaluation during training (FitResult.selection), or "" without it."""
    if not chosen:
        return ""
    stopped = ", stopped early" if chosen["stopped_early"] else ""
    return (f"; kept step {chosen['selected_step']} ({chosen['select']}; {chosen['metric']} best "
            f"{chosen['best_value']} at step {chosen['best_step']}{stopped})")


def source_record(model_dir: Path) -> Optional[dict]:
    """The start model's SOURCE.json (stage convert), or None for a folder that has none."""
    source = model_dir / "SOURCE.json"
    return read_json(source, "convert", dict) if source.is_file() else None


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    return Finetune(__doc__).main(argv)


def preflight(argv: list[str], nproc: int) -> int:
    """The check bert.engine.launch makes before it starts `nproc` workers; returns the exit status."""
    return Finetune(__doc__).preflight(argv, nproc)


if __name__ == "__main__":
    run_as_program(main)
