"""The training loop: DDP, mixed precision, gradient accumulation, checkpoints and exact resume.

One optimizer step over a global batch of N examples (see sampler.py for who gets which):

    for each of this rank's micro-batches b (DDP's all-reduce held back by no_sync but on the last):
        loss_b = model(**b)                                   # mean over b's n_b examples
        backward(loss_b * n_b / N * world_size)               # DDP then averages over ranks
    => every parameter's gradient is d/dw (mean loss over the N examples), for any world size,
       any accumulation and a short last batch alike.
    unscale (fp16) -> clip (AdamW: global norm; BertAdam clips per parameter itself) -> step.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bert.engine import checkpoint as ckpt
from bert.engine.batch import Batch, to_device
from bert.engine.config import FitResult, TrainConfig
from bert.engine.distributed import DistContext
from bert.engine.optim import build_optimizer
from bert.engine.precision import Precision, TrainingDiverged
from bert.engine.row_grads import RowGradients
from bert.engine.sampler import DistributedLengthGroupedSampler, StepPlan
from bert.engine.selection import Evaluator, Selection

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _scalar_loss(out: Any) -> torch.Tensor:
    if not (isinstance(out, torch.Tensor) and out.dim() == 0):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model returned {shape}, not a scalar loss: do the training batches "
                         f"carry the label keys (labels, start_positions/end_positions)?")
    return out.float()


def unused_parameters(model: nn.Module, batch: Batch) -> list[str]:
    """Names of trainable parameters that get no gradient from `batch`'s loss (e.g. QA's pooler).

    DDP must be told about them (find_unused_parameters) or its all-reduce waits for them forever.
    Runs under a forked RNG so that it leaves dropout's generator untouched.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        loss = _scalar_loss(model(**batch))
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


class Trainer:
    """One training run; `fit` is the function to call. Kept as a class so tests can drive a step.

    Args: as fit.
    """

    def __init__(self, model: nn.Module, dataset: Dataset, collate_fn: Callable[[list], Batch],
                 cfg: TrainConfig, work_dir: Path, ctx: DistContext,
                 lengths: Optional[Sequence[int]] = None,
                 on_log: Optional[Callable[[dict], None]] = None, progress: bool = True,
                 evaluator: Optional[Evaluator] = None):
        self.cfg, self.ctx, self.on_log, self.progress = cfg, ctx, on_log, progress
        if cfg.eval_every and evaluator is None and ctx.is_main:
            raise ValueError(f"TrainConfig.eval_every is {cfg.eval_every} but fit got no evaluator; pass one "
                             "(rank 0; the other ranks only wait for it) or set eval_every 0")
        self.evaluator = evaluator if cfg.eval_every else None
        self.work_dir = Path(work_dir)
        self.dataset, self.collate_fn = dataset, collate_fn
        self.model = model.to(ctx.device)
        self.per_device_batch = cfg.per_device_batch_size(ctx.world_size)
        self.num_items = len(dataset)  # type: ignore[arg-type]
        self.steps_per_epoch, self.total_steps = cfg.steps(max(self.num_items, 1))
        if self.total_steps < 1:
            raise ValueError(f"TrainConfig.epochs: {cfg.epochs:g} epochs of {self.num_items} items in batches of "
                             f"{cfg.global_batch_size} is no optimizer step; expected at least one")
        self.sampler = DistributedLengthGroupedSampler(
            self.num_items, cfg.global_batch_size, cfg.grad_accum_steps, ctx.world_size, ctx.rank,
            cfg.seed, lengths, cfg.group_by_length)
        # Different dropout masks per rank; rank 0's initial weights are broadcast by DDP anyway.
        seed_everything(cfg.seed + ctx.rank)
        self.opt = build_optimizer(self.model, cfg, self.total_steps)
        self.precision = Precision(cfg.precision, ctx.device, cfg.loss_scale, cfg.min_loss_scale)
        self.ddp: nn.Module = self.model
        if ctx.distributed:
            probe = to_device(collate_fn([dataset[0]]), ctx.device)
            unused = unused_parameters(self.model, probe)
            if unused:
                logger.info("%d parameters get no gradient (%s, ...): DDP will look for them",
                            len(unused), unused[0])
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, forward_sync_buffers=False,
                                               find_unused_parameters=bool(unused))
        # CPU: embedding gradients go into buffers kept for the run (after DDP is built; see row_grads.py).
        self.row_grads = RowGradients(self.model if ctx.device.type == "cpu" else nn.Module())
        self.row_grads.enable()
        self.global_step = 0
        self.updates = 0  # optimizer updates applied (steps minus fp16-skipped ones)
        self.last_lr = 0.0
        self.history: list[dict[str, float]] = []
        # Running sums since the last log line: global mean loss per step, steps, sequences.
        self.log_loss = torch.zeros((), device=ctx.device)
        # The first step whose loss was not finite (-1: none yet) and that loss, kept on the device and read
        # (one sync) only where the loop syncs anyway: a log line, a checkpoint, the end.
        self.bad_step = torch.full((), -1, dtype=torch.long, device=ctx.device)
        self.bad_loss = torch.zeros((), device=ctx.device)
        self.log_steps = 0
        self.log_sequences = 0
        self.log_time = time.perf_counter()
        # Evaluation during training (rank 0 holds the state): the best so far, and with select "best" its
        # weights, a copy on the CPU (one model's size) that every checkpoint carries, so that a resumed run
        # selects what an uninterrupted one would.
        self.selection = Selection(cfg.patience)
        self.best_state: Optional[dict[str, torch.Tensor]] = None
        self.stopped = False  # early: patience evaluations without improvement

    # ------------------------------------------------------------------------------------------
    # One optimizer step

    def accumulate(self, plan: StepPlan, batches: Sequence[Batch]) -> torch.Tensor:
        """Forward and backward of this rank's micro-batches of one step (gradients accumulate).

        Returns:
            This rank's share of the step's mean loss (sum it over ranks for the step's loss).
        """
        world = self.ctx.world_size
        local = torch.zeros((), device=self.ctx.device)
        last = len(batches) - 1
        for k, (mb, batch) in enumerate(zip(plan.micro_batches, batches)):
            batch = to_device(batch, self.ctx.device)
            sync = k == last or not isinstance(self.ddp, DistributedDataParallel)
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                with self.precision.autocast():
                    loss = _scalar_loss(self.ddp(**batch))
                weight = mb.num_real / plan.global_count
                self.precision.backward(loss * (weight * world))
            local += loss.detach() * weight
        return local

    def apply_update(self) -> bool:
        """Unscale, clip, step the optimizer and schedule, zero the gradients.

        Returns:
            False when fp16 gradients overflowed and the step was skipped.
        """
        optimizer = self.opt.optimizer
        self.precision.unscale_(optimizer)
        finite = True
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.opt.clip_global_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.opt.clip_global_norm)
            finite = bool(torch.isfinite(norm)) if self.precision.scaler is not None else True
        elif self.precision.scaler is not None:
            finite = bool(torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params])))
        taken = self.precision.step(optimizer, finite)
        if taken:
            self.last_lr = self.opt.learning_rate(self.cfg.learning_rate, self.updates)
            self.updates += 1
            if self.opt.scheduler is not None:
                self.opt.scheduler.step()
        self.row_grads.zero_(optimizer)
        return taken

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def _gather_rng(self) -> list[dict[str, torch.Tensor]]:
        """Every rank's RNG state (rank 0 writes them all), gathered as tensors."""
        mine = ckpt.get_rng_state()
        if not self.ctx.distributed:
            return [mine]
        per_rank: list[dict[str, torch.Tensor]] = [{} for _ in range(self.ctx.world_size)]
        for key, value in mine.items():
            gathered = self.ctx.all_gather(value.to(self.ctx.device))
            for r, tensor in enumerate(gathered):
                per_rank[r][key] = tensor.cpu()
        return per_rank

    def note_loss(self, step_loss: torch.Tensor, taken: bool) -> None:
        """Remember the first step whose update was applied with a loss that is not finite (no sync).

        fp16's skipped steps are not counted: their update was not applied (the loss scale handles them).
        """
        if taken:
            bad = (self.bad_step < 0) & ~torch.isfinite(step_loss)
            self.bad_step.masked_fill_(bad, self.global_step)
            self.bad_loss = torch.where(bad, step_loss, self.bad_loss)

    def check_finite(self, weights: bool = False) -> None:
        """Stop with one clear message once a loss (or, with `weights`, a weight) is NaN or infinite.

        Raises:
            TrainingDiverged: naming the step, the value and the likely causes; nothing more is written.
        """
        cfg, step = self.cfg, int(self.bad_step)
        what = f"the training loss was {float(self.bad_loss)} at step {step}" if step >= 0 else None
        if what is None and weights:
            broken = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
            if broken is not None:
                what = f"the weight {broken} holds NaN or infinite values at step {self.global_step}"
        if what is not None:
            overflow = f", an overflow in {cfg.precision} (train in fp32)" if cfg.precision != "fp32" else ""
            raise TrainingDiverged(
                f"{what} of {self.total_steps} (precision {cfg.precision}, learning_rate {cfg.learning_rate:g}): "
                "training stopped and the model was not written; likely causes: a learning rate too high (lower "
                f"learning_rate or max_grad_norm), labels that are not finite numbers in the training data{overflow}")

    def save(self) -> None:
        """Write a checkpoint (rank 0); every rank takes part in gathering RNG states and waits."""
        self.check_finite(weights=True)  # never a checkpoint of a diverged run: a resume would continue it
        rng = self._gather_rng()
        if self.ctx.is_main:
            state = {
                "global_step": self.global_step,
                "epoch": self.global_step // self.steps_per_epoch,
                "step_in_epoch": self.global_step % self.steps_per_epoch,
                "num_items": self.num_items,
                "model": self.model.state_dict(),
                "optimizer": self.opt.optimizer.state_dict(),
                "scheduler": self.opt.scheduler.state_dict() if self.opt.scheduler else {},
                "precision": self.precision.state_dict(),
                "rng": rng,
                "train_config": self.cfg.trajectory(),
                "history": self.history,
                "log": {"loss": float(self.log_loss), "steps": self.log_steps,
                        "sequences": self.log_sequences},
                "selection": {**self.selection.state_dict(), "stopped": self.stopped,
                              # the best step's weights; None when they are this checkpoint's "model"
                              "best_model": None if self.selection.best_step == self.global_step else self.best_state},
            }
            ckpt.save_checkpoint(self.work_dir, state, keep=self.cfg.keep_checkpoints)
        self.ctx.barrier()

    def restore(self, path: Path) -> None:
        """Continue exactly where the checkpoint at `path` stopped."""
        state = ckpt.load_checkpoint(path)
        saved = state.get("train_config", {})
        expected = {**self.cfg.trajectory()}
        diff = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in expected.items() if saved.get(k) != v]
        if state.get("num_items") != self.num_items:
            diff.append(f"dataset size {state.get('num_items')} (now {self.num_items})")
        if diff:
            raise ValueError(f"{path}: checkpoint written with other settings: {', '.join(diff)}; "
                             f"remove {ckpt.checkpoint_dir(self.work_dir)} or set resume false")
        self.model.load_state_dict(state["model"])
        self.opt.optimizer.load_state_dict(state["optimizer"])
        if self.opt.scheduler is not None and state.get("scheduler"):
            self.opt.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("precision", {}))
        self.global_step = int(state["global_step"])
        self.updates = self.global_step - self.precision.skipped_steps
        self.last_lr = self.opt.learning_rate(self.cfg.learning_rate, max(self.updates - 1, 0))
        self.history = list(state.get("history", []))
        log = state.get("log", {})
        self.log_loss.fill_(float(log.get("loss", 0.0)))
        self.log_steps, self.log_sequences = int(log.get("steps", 0)), int(log.get("sequences", 0))
        selection = dict(state.get("selection") or {})
        best_model, self.stopped = selection.pop("best_model", None), bool(selection.pop("stopped", False))
        self.selection.load_state_dict(selection)
        if self.cfg.select == "best" and self.selection.best_step >= 0 and self.ctx.is_main:
            self.best_state = best_model if best_model is not None else _cpu_copy(self.model)
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            ckpt.set_rng_state(rng[self.ctx.rank])
        else:
            logger.warning("%s was written by %d processes, now %d: RNG streams (dropout) start "
                           "afresh, the rest resumes exactly", path, len(rng), self.ctx.world_size)
        logger.info("resumed from %s at step %d of %d", path, self.global_step, self.total_steps)

    # ------------------------------------------------------------------------------------------
    # The run

    def _log(self, epoch_progress: float, evaluation: dict[str, float]) -> None:
        self.check_finite()
        loss = float(self.log_loss) / max(self.log_steps, 1)  # one sync per log line
        now = time.perf_counter()
        record = {
            "step": self.global_step,
            "epoch": round(epoch_progress, 6),
            "loss": loss,
            "learning_rate": self.last_lr,
            "loss_scale": self.precision.loss_scale,
            "sequences_per_second": self.log_sequences / max(now - self.log_time, 1e-9),
            "skipped_steps": self.precision.skipped_steps,
            **evaluation,
        }
        self.history.append(record)
        self.log_loss.zero_()
        self.log_steps = self.log_sequences = 0
        self.log_time = now
        if self.ctx.is_main:
            logger.info("step %d/%d loss %.5f lr %.3g", record["step"], self.total_steps, loss,
                        record["learning_rate"])
            if self.on_log is not None:
                self.on_log(dict(record))

    def _loader(self) -> DataLoader:
        # A private generator: the DataLoader must not draw from the global RNG (dropout's), or a
        # resumed run would see other dropout masks than an uninterrupted one.
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collate_fn,
                          num_workers=self.cfg.num_workers, generator=torch.Generator(),
                          pin_memory=self.ctx.device.type == "cuda")

    def _train_steps(self, bar: tqdm) -> int:
        """Steps until the configured total (logging, checkpoints); returns the sequences trained on."""
        cfg, ctx = self.cfg, self.ctx
        sequences = 0
        while self.global_step < self.total_steps and not self.stopped:
            epoch = self.global_step // self.steps_per_epoch
            self.sampler.set_epoch(epoch)
            self.sampler.set_start_step(self.global_step % self.steps_per_epoch)
            plans = iter(self.sampler.plan())
            batches = iter(self._loader())
            for plan in plans:
                micro = [next(batches) for _ in plan.micro_batches]
                step_loss = ctx.all_reduce_sum(self.accumulate(plan, micro))
                taken = self.apply_update()
                self.global_step += 1
                self.note_loss(step_loss, taken)
                self.log_loss += step_loss
                self.log_steps += 1
                self.log_sequences += plan.global_count
                sequences += plan.global_count
                bar.update(1)
                done = self.global_step >= self.total_steps
                evaluated = bool(cfg.eval_every) and (self.global_step % cfg.eval_every == 0 or done)
                evaluation = self._evaluate() if evaluated else {}
                done = done or self.stopped
                if self.global_step % cfg.log_every == 0 or done or evaluated:
                    self._log(self.global_step / self.steps_per_epoch, evaluation)
                if cfg.checkpoint_every and (self.global_step % cfg.checkpoint_every == 0 or done):
                    self.save()
                if done:
                    break
        return sequences

    def _evaluate(self) -> dict[str, float]:
        """Rank 0 scores the model (the others wait); every rank learns whether to stop. Returns the figures
        (rank 0; {} elsewhere) for this step's history point."""
        figures: dict[str, float] = {}
        stop = torch.zeros((), device=self.ctx.device)
        if self.ctx.is_main:
            assert self.evaluator is not None
            devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # a DataLoader draws its seed from the global RNG
                figures = {k: float(v) for k, v in self.evaluator(self.model).items()}
            value = figures[self.evaluator.primary]
            if self.selection.update(self.global_step, value) and self.cfg.select == "best":
                self.best_state = _cpu_copy(self.model)
            logger.info("step %d: %s %.4f (best %.4f at step %d)", self.global_step, self.evaluator.primary, value,
                        self.selection.best_value, self.selection.best_step)
            stop.fill_(float(self.selection.stop))
        self.stopped = bool(self.ctx.all_reduce_sum(stop))  # also the barrier the other ranks wait at
        if self.stopped and self.ctx.is_main:
            logger.info("stopping early at step %d of %d: %d evaluations without improvement", self.global_step,
                        self.total_steps, self.selection.since_best)
        return figures

    def _selected(self) -> Optional[dict[str, Any]]:
        """Rank 0 with an evaluator: put the selected weights in the model; returns what was selected."""
        if self.evaluator is None or not self.ctx.is_main:  # no evaluation, or not rank 0
            return None
        sel = self.selection
        if self.cfg.select == "best" and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return {"metric": self.evaluator.primary, "select": self.cfg.select,
                "selected_step": sel.best_step if self.cfg.select == "best" else self.global_step,
                "best_step": sel.best_step, "best_value": sel.best_value, "evaluations": sel.evaluations,
                "patience": self.cfg.patience, "stopped_early": self.stopped}

    def run(self) -> FitResult:
        """Train until the configured number of steps; returns the FitResult."""
        cfg, ctx = self.cfg, self.ctx
        latest = ckpt.latest_checkpoint(self.work_dir) if cfg.resume else None
        if ctx.distributed:
            # Every rank reads the checkpoint rank 0 wrote: they must all see the same one.
            found = torch.tensor([ckpt.list_checkpoints(self.work_dir)[-1][0] if latest else -1],
                                 device=ctx.device)
            low, high = -ctx.all_reduce_max(-found.clone()), ctx.all_reduce_max(found.clone())
            if int(low) != int(high):
                raise ValueError(f"{ckpt.checkpoint_dir(self.work_dir)}: the ranks see different "
                                 f"checkpoints (steps {int(low)} to {int(high)}; -1 = none): the work "
                                 f"folder must be on a file system shared by all nodes")
        if latest is not None:
            self.restore(latest)
        elif ctx.is_main and ckpt.list_checkpoints(self.work_dir):
            # A fresh run must not leave a stale, later-numbered checkpoint to be resumed from.
            for _, old in ckpt.list_checkpoints(self.work_dir):
                old.unlink()
        ctx.barrier()
        was_training = self.model.training
        self.model.train()
        start_step, start = self.global_step, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train", unit="step",
                   disable=not (ctx.is_main and self.progress))
        self.log_time = start
        try:
            sequences = self._train_steps(bar)
            self.check_finite(weights=True)  # what the caller writes next must be a usable model
            selection = self._selected()
        finally:  # also when a step fails: hand the model back as it came
            bar.close()
            self.row_grads.disable()
        self.model.train(was_training)
        seconds = time.perf_counter() - start
        return FitResult(
            global_steps=self.global_step,
            seconds=seconds,
            sequences_per_second=sequences / seconds if self.global_step > start_step else 0.0,
            history=list(self.history),
            skipped_steps=self.precision.skipped_steps,
            selection=selection,
        )


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU (the GPU keeps its memory for training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(model: nn.Module, dataset: Dataset, collate_fn: Callable[[list], Batch], cfg: TrainConfig,
        work_dir: Path, ctx: Optional[DistContext] = None, lengths: Optional[Sequence[int]] = None,
        on_log: Optional[Callable[[dict], None]] = None, progress: bool = True,
        evaluator: Optional[Evaluator] = None) -> FitResult:
    """Fine-tune `model` on `dataset`: one process, or DDP under torchrun; resumable.

    Args:
        model: an unwrapped BertFor* model returning its scalar loss for batches with labels; it is
            moved to ctx.device and trained in place.
        dataset: map-style dataset; item i is what collate_fn takes.
        collate_fn: list of items -> dict of model keyword arguments (with labels).
        cfg: the TrainConfig.
        work_dir: checkpoints go to work_dir/checkpoints/.
        ctx: from setup_distributed(); None means one process on the CPU.
        lengths: true sequence lengths, for length-grouped batches (with cfg.group_by_length).
        on_log: called on rank 0 every cfg.log_every steps (and at every evaluation) with {"step", "epoch",
            "loss", "learning_rate", "loss_scale", "sequences_per_second", "skipped_steps"}, plus the
            evaluator's figures at an evaluated step.
        progress: show a tqdm bar on rank 0.
        evaluator: with cfg.eval_every, scores the model on rank 0 every eval_every steps and at the last;
            its figures join that step's history point (a point is logged there), its primary one selects
            (cfg.select, cfg.patience: selection.py). Rank 0's model then ends with the selected weights.
    Returns:
        FitResult(global_steps, seconds, sequences_per_second, history, skipped_steps, selection).
    """
    trainer = Trainer(model, dataset, collate_fn, cfg, work_dir, ctx or DistContext(), lengths,
                      on_log, progress, evaluator)
    return trainer.run()
