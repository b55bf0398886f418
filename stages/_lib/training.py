"""The training stages' one skeleton (finetune, pretrain): a run of the engine from the command line.

    python -m stages.<stage> --params P --model M --out O --history H --work W  [the stage's own flags]

A stage subclasses TrainingStage and says what is its own: its flags, what to train (``prepare``), what
identifies its inputs (``inputs``) and what to write besides the model (``finish``). ``main`` does the rest,
in this order:

1. the flags (the old launcher's --local_rank is stripped), then the stage's params section, read into
   its TrainingParams: the engine's TrainConfig, same fields and checks, plus the process count;
2. torch.distributed from torchrun's environment (one process: no group);
3. ``prepare``: the model, the training set, its collate function and the TrainConfig;
4. resumption (rank 0): the checkpoints under --work are kept only when they were written by the same
   run, i.e. the same fingerprint: the training trajectory (TrainConfig.trajectory(): not log_every,
   checkpoint_every or the process count, which change no weight) and the stage's ``inputs``;
   the engine then continues from the newest one;
5. the engine's fit (with the stage's evaluator, when its params evaluate during training), its history
   streamed to $BERT_HISTORY_STREAM (pipeline.track logs it to MLflow);
6. rank 0: the model folder (weights, the start model's vocab, what the stage says of the model, the stage's
   summary JSON with its params and environment), the history and the stage's other files, all or none; then
   the checkpoints are dropped: the run is complete.

Run as a program (``run_as_program``), the process first re-executes itself with tcmalloc preloaded
(stages._lib.allocator, BERT_ALLOCATOR).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, NoReturn, Optional

import torch
from torch.utils.data import Dataset

from bert.engine import DistContext, FitResult, TrainConfig, cleanup_distributed, fit, setup_distributed
from bert.engine import strip_launcher_args
from bert.engine.checkpoint import list_checkpoints
from bert.engine.selection import Evaluator
from bert.io.jsonfile import read_json_object
from bert.io.lifetime import lock_folder
from bert.io.settings import SettingError, at_least, check_value
from stages._lib.allocator import active_allocator, reexec_with_allocator
from stages._lib.common import atomic_outputs, check_replaceable, run_stage, stage_parser, write_json
from stages._lib.params import DEFAULT_PARAMS, ParamsError, load_section, section_keys, section_values

logger = logging.getLogger("stages.training")
FINGERPRINT = "fingerprint.json"  # in --work: the run the checkpoints there belong to
CHECKPOINTS = "checkpoints"  # the engine's folder under --work
HISTORY_STREAM_ENV = "BERT_HISTORY_STREAM"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json")  # copied from the start model into the output
MODEL_FILES = ("config.json", "model.safetensors", *TOKENIZER_FILES)  # the output model folder, with the summary


@dataclass(frozen=True, kw_only=True)
class TrainingParams(TrainConfig):
    """A training stage's params section: the engine's TrainConfig (its fields, its checks) plus the
    number of processes torchrun starts. TrainConfig's min_loss_scale and keep_checkpoints are not in
    params files: the engine's defaults hold."""

    NOT_IN_PARAMS: ClassVar[tuple[str, ...]] = ("min_loss_scale", "keep_checkpoints")
    nproc: int = field(metadata=at_least(1))

    def __post_init__(self) -> None:
        super().__post_init__()
        shards = self.grad_accum_steps * self.nproc
        if self.global_batch_size % shards:
            raise SettingError("global_batch_size", f"{self.global_batch_size} is not a multiple of grad_accum_steps "
                               f"{self.grad_accum_steps} x nproc {self.nproc} = {shards} (each process takes an equal "
                               "share of every step)", type(self).__name__)

    def train_config(self, **changes: Any) -> TrainConfig:
        """The engine's TrainConfig of these params (nproc and the stage's other keys dropped)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{**values, **changes})


@dataclass
class Run:
    """What a stage's prepare() gives the skeleton to train."""

    model: torch.nn.Module
    dataset: Dataset  # with .lengths (true sequence lengths, for length-grouped batches) and len()
    collate_fn: Callable[[list], dict]
    config: TrainConfig
    evaluator: Optional[Evaluator] = None  # with config.eval_every: scores the model during training


@dataclass
class Outputs:
    """What a stage's finish() has rank 0 write, besides the model's weights and the history."""

    summary_name: str  # the JSON written into the model folder, e.g. training.json
    summary: dict[str, Any]  # its contents; the skeleton adds "params" and "environment"
    files: dict[Path, Any] = field(default_factory=dict)  # other JSON outputs: path -> value
    message: str = ""  # the log line saying the run is done
    describe: Optional[Callable[[Path], Any]] = None  # writes more into the saved model folder (its task entry)


class TrainingStage:
    """One training stage: a subclass sets name, params_cls (and default_params) and says what is its own."""

    name: ClassVar[str]
    params_cls: ClassVar[type[TrainingParams]]
    summary_name: ClassVar[str]  # the JSON written into the model folder (Outputs.summary_name)
    default_params: ClassVar[Path] = DEFAULT_PARAMS

    def __init__(self, doc: str) -> None:
        self.doc = doc  # the stage module's docstring: its first line is the --help description

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The stage's own flags (the shared ones: the module docstring)."""

    def prepare(self, args: argparse.Namespace, params: TrainingParams, ctx: DistContext) -> Run:
        """Load the start model and the training data; every rank."""
        raise NotImplementedError

    def inputs(self, args: argparse.Namespace) -> dict[str, Any]:
        """What identifies this run's inputs in the resume fingerprint: the content fingerprints
        (bert.io.fingerprint) of the training data and the start model; rank 0."""
        raise NotImplementedError

    def fingerprint(self, args: argparse.Namespace, config: TrainConfig) -> dict[str, Any]:
        """What identifies this run, kept as the work folder's fingerprint.json: a checkpoint there is resumed
        only by a run with the same one (the stage, the training trajectory and the stage's ``inputs``)."""
        return {"stage": self.name, "train_config": config.trajectory(), **self.inputs(args)}

    def finish(self, args: argparse.Namespace, params: TrainingParams, run: Run, result: FitResult,
               ctx: DistContext) -> Outputs:
        """After training, on rank 0: the summary and the stage's other outputs."""
        raise NotImplementedError

    def parser(self) -> argparse.ArgumentParser:
        parser = stage_parser(self.name, self.doc, self.default_params)
        parser.add_argument("--model", required=True, type=Path, help="the model folder to start from (stage convert)")
        self.add_arguments(parser)
        parser.add_argument("--out", required=True, type=Path, help="the trained model folder to write")
        parser.add_argument("--history", required=True, type=Path, help="the training history JSON to write")
        parser.add_argument("--work", required=True, type=Path, help="the folder for resumable checkpoints")
        group = parser.add_argument_group(f"overrides of the params file's {self.name} section (a trial of a search)")
        hints = typing.get_type_hints(self.params_cls)
        for key in overridable(self.params_cls):
            if hints[key] is bool:
                group.add_argument(f"--{key}", dest=f"set_{key}", action=argparse.BooleanOptionalAction)
            else:
                group.add_argument(f"--{key}", dest=f"set_{key}", metavar="VALUE", help="read as YAML 1.2")
        return parser

    def load_params(self, args: argparse.Namespace) -> TrainingParams:
        """The stage's params section, with the command line's overrides (--learning_rate 3e-05 ...) applied
        and checked as the file's values are."""
        params = load_section(self.name, self.params_cls, args.params)
        changes = {key: getattr(args, f"set_{key}") for key in overridable(self.params_cls)
                   if getattr(args, f"set_{key}") is not None}
        return with_overrides(params, changes, self.name, args.params) if changes else params

    def main(self, argv: Optional[list[str]] = None) -> int:
        """The stage's CLI (the module docstring's steps); returns the exit status."""
        argv, local_rank = strip_launcher_args(sys.argv[1:] if argv is None else argv)  # the old launcher's
        args = self.parser().parse_args(argv)

        self.params: Optional[TrainingParams] = None

        def body() -> None:
            self.params = params = self.load_params(args)
            ctx = setup_distributed(local_rank)
            try:
                self.train(args, params, ctx)
            finally:
                cleanup_distributed()

        return run_stage(self.name, body, debug=args.debug, saved=lambda: self.saved(args))

    def preflight(self, argv: list[str], nproc: int) -> int:
        """bert.engine.launch's check before it starts `nproc` workers with these arguments: the flags, the
        params section and what the launch asks of it and of this machine; returns the exit status."""
        args = self.parser().parse_args(strip_launcher_args(argv)[0])

        def body() -> None:
            check_launch(self.name, self.load_params(args), nproc, args.params)

        return run_stage(self.name, body, debug=args.debug)

    def saved(self, args: argparse.Namespace) -> str:
        """What an interrupted run leaves to resume from, and how (the interruption's log line)."""
        found = list_checkpoints(args.work)
        if found:
            step, path = found[-1]
            again = ("run the same command to resume from it" if self.params is None or self.params.resume else
                     f"set {self.name}.resume: true and run the same command to resume from it")
            return f"the checkpoint of step {step} is kept ({path}); {again}"
        every = self.params.checkpoint_every if self.params is not None else None
        why = f" ({self.name}.checkpoint_every is 0)" if every == 0 else " yet"
        return f"no checkpoint was written{why} and no output: the same command starts over"

    def train(self, args: argparse.Namespace, params: TrainingParams, ctx: DistContext) -> None:
        with contextlib.ExitStack() as held:
            if ctx.is_main:  # the work folder is this run's until it ends: a second run is refused at once
                held.enter_context(lock_folder(args.work, f"stage {self.name}"))
                check_work_dir(args.work, self.name)  # before the model and data are loaded: fail fast
                check_replaceable(args.out, (*MODEL_FILES, self.summary_name))  # atomic_outputs checks it again
            run = self.prepare(args, params, ctx)
            check_steps(self.name, run, args.params)
            if ctx.world_size != params.nproc:
                logger.warning("running on %d processes; params say %s.nproc %d", ctx.world_size, self.name,
                               params.nproc)
            if ctx.is_main:
                prepare_work_dir(args.work, self.name, self.fingerprint(args, run.config))
            ctx.barrier()
            result = fit(run.model, run.dataset, run.collate_fn, run.config, args.work, ctx=ctx,
                         lengths=run.dataset.lengths, on_log=history_streamer(), evaluator=run.evaluator)
            if ctx.is_main:
                outputs = self.finish(args, params, run, result, ctx)
                outputs.summary.update(params=section_values(params), environment=environment())
                write_outputs(run.model, result, outputs, args.model, args.out, args.history)
                shutil.rmtree(args.work / CHECKPOINTS, ignore_errors=True)  # the run is complete
                logger.info("%s", outputs.message)
        ctx.barrier()


def overridable(cls: type[TrainingParams]) -> list[str]:
    """The section keys a command line may override: all but nproc (the launcher's, set in the section)."""
    return [key for key in section_keys(cls) if key != "nproc"]


def with_overrides(params: TrainingParams, changes: dict[str, Any], section: str,
                   path: os.PathLike | str) -> TrainingParams:
    """`params` with some keys set from the command line (text read as YAML 1.2, as params.yaml is) or the search grid.

    Raises:
        ParamsError: a value of the wrong type or range, naming its flag, or one the other keys refuse.
    """
    from ruamel.yaml import YAML

    cls, yaml = type(params), YAML(typ="safe", pure=True)
    hints, fields = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    values = dict(section_values(params))
    for key, raw in changes.items():
        value = yaml.load(raw) if isinstance(raw, str) else raw
        try:
            values[key] = check_value(hints[key], fields[key].metadata, value, f"--{key}")
        except SettingError as err:
            raise ParamsError(f"{err} (overriding {path}'s {section}.{key})") from None
    try:
        return cls(**values)
    except SettingError as err:
        raise ParamsError(f"{path}: {section}.{err.name}: {err.problem} (overridden: "
                          f"{', '.join(f'{k}={v}' for k, v in changes.items())})") from None


def check_steps(section: str, run: Run, path: os.PathLike | str) -> None:
    """Refuse a run of no optimizer step (epochs so small that not one global batch is trained on).

    Raises:
        ParamsError: naming the params file, the section's epochs, the examples and the batch size.
    """
    examples = len(run.dataset)  # type: ignore[arg-type]
    per_epoch, total = run.config.steps(max(examples, 1))
    if total < 1:
        raise ParamsError(f"{path}: {section}.epochs: {run.config.epochs:g} epochs of {examples} examples in global "
                          f"batches of {run.config.global_batch_size} ({per_epoch} steps per epoch) is no optimizer "
                          "step; expected at least one")


def machine_capacity() -> tuple[int, str]:
    """How many training processes this machine takes: its GPUs, or without one its CPU cores."""
    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPUs"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU cores and no GPU"


def check_launch(section: str, params: TrainingParams, nproc: int, path: os.PathLike | str) -> None:
    """A launch of `nproc` processes per node for these params, on this machine.

    Raises:
        ParamsError: more processes than this machine has GPUs (or CPU cores), or a global batch that
            `nproc` processes cannot share equally; naming the params file and key.
    """
    have, what = machine_capacity()
    if nproc > have:
        raise ParamsError(f"{path}: {section}.nproc: {nproc} processes, but this machine has {have} {what} "
                          f"(at most {have})")
    shards = params.grad_accum_steps * nproc
    if params.global_batch_size % shards:
        raise ParamsError(f"{path}: {section}.global_batch_size: {params.global_batch_size} is not a multiple of "
                          f"grad_accum_steps {params.grad_accum_steps} x {nproc} processes = {shards}")


def prepare_work_dir(work: Path, stage: str, fingerprint: dict) -> None:
    """Keep the checkpoints in `work` only if they belong to this exact run (the same `fingerprint`, from
    TrainingStage.fingerprint).

    Only what a training stage puts there is ever deleted (its checkpoints and fingerprint.json), and only
    in a work folder of this stage (check_work_dir).
    """
    if check_work_dir(work, stage) != fingerprint:
        shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)  # another run's: must not be resumed
        write_json(work / FINGERPRINT, fingerprint)


def check_work_dir(work: Path, stage: str) -> Optional[dict]:
    """Check that `work` is empty or a work folder of `stage`; returns its fingerprint (None: none yet).

    Raises:
        ValueError: `work` holds files and is not a work folder of `stage` (``--work .``, or a typo naming
            a folder of results): refused untouched.
    """
    work.mkdir(parents=True, exist_ok=True)
    old = read_fingerprint(work / FINGERPRINT)
    if old is None or old.get("stage", stage) != stage:  # no stage: written before stages were named
        others = sorted(p.name for p in work.iterdir())
        if others:
            whose = (f"of no training stage (no {FINGERPRINT})" if old is None else f"of stage {old['stage']}"
                     if old["stage"] else f"of no training stage (its {FINGERPRINT} is not a stage's)")
            raise ValueError(f"{work}: --work must be an empty folder or a work folder of stage {stage}; this one "
                             f"is {whose} and holds {len(others)} entries ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}); nothing was deleted")
    return old


def read_fingerprint(path: Path) -> Optional[dict]:
    """The fingerprint a training stage wrote in its work folder, or None when there is none.

    Raises:
        ValueError: a damaged one (bert.io.jsonfile: one line naming it).
    """
    if not path.exists():
        return None
    value = read_json_object(path)
    return value if "train_config" in value else {"stage": None}  # some other program's JSON: not ours


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


def fit_summary(result: FitResult, ctx: DistContext) -> dict[str, Any]:
    """The figures every training summary holds: processes, steps, time, throughput."""
    return {"world_size": ctx.world_size, "global_steps": result.global_steps, "seconds": result.seconds,
            "sequences_per_second": result.sequences_per_second, "skipped_steps": result.skipped_steps}


def final_loss(result: FitResult) -> Optional[float]:
    """The training loss of the last history point (None when nothing was logged)."""
    return result.history[-1]["loss"] if result.history else None


def write_outputs(model: torch.nn.Module, result: FitResult, outputs: Outputs, model_dir: Path, out: Path,
                  history: Path) -> None:
    """Rank 0: the model folder, the history and the stage's other files, all or none."""
    with atomic_outputs(out, history, *outputs.files) as (tmp_out, tmp_history, *tmp_files):
        model.save_pretrained(tmp_out)
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp_out / name)
        if outputs.describe is not None:
            outputs.describe(tmp_out)
        write_json(tmp_out / outputs.summary_name, outputs.summary)
        for tmp, value in zip(tmp_files, outputs.files.values()):
            write_json(tmp, value)
        write_json(tmp_history, [dict(point) for point in result.history])


def environment() -> dict[str, Any]:
    """Versions, device and malloc, for the summary (and the report, and MLflow's tags)."""
    import bert

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()})"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bert_toolkit": bert.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "allocator": active_allocator(),
    }


def run_as_program(main: Callable[[], int]) -> NoReturn:
    """A training stage run as a program: re-executed with tcmalloc first (BERT_ALLOCATOR), then main()."""
    try:
        reexec_with_allocator()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(main())
