"""Shared pieces of the engine tests: a tiny model, a learnable toy task, and the torchrun worker.

Run as a script (by torchrun or the old ``python -m torch.distributed.launch``) this module trains the
tiny model with bert.engine and rank 0 saves the loss history, final weights and predictions:

    torchrun --standalone --nproc_per_node 2 tests/test_engine_helpers.py --config '{...}' \
        --work DIR --out result.pt
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from bert import BertConfig, BertForSequenceClassification

REPO_ROOT = Path(__file__).resolve().parents[1]
PAD, CLS, SEP = 0, 2, 3


def tiny_model(dropout: float = 0.0, seed: int = 0, num_labels: int = 2) -> BertForSequenceClassification:
    """The tests' tiny BERT (hidden 32, 2 layers, 4 heads, vocab 99), same weights for a seed."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config, num_labels)


class ToyDataset(Dataset):
    """A learnable pair of classes: label 1 draws 80% of its tokens from ids 5..51, label 0 from 52..98.

    Items are unpadded, as bert/data/cache.py gives them: 1-D input_ids / token_type_ids and a label.
    """

    def __init__(self, n: int, seed: int, max_len: int = 24):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(3, max_len - 1, (1,), generator=g))
            label = int(torch.randint(0, 2, (1,), generator=g))
            low, high = (5, 52) if label else (52, 99)
            own = torch.randint(low, high, (length,), generator=g)
            noise = torch.randint(5, 99, (length,), generator=g)
            tokens = torch.where(torch.rand(length, generator=g) < 0.8, own, noise)
            ids = torch.cat([torch.tensor([CLS]), tokens, torch.tensor([SEP])])
            self.items.append({"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
                               "labels": torch.tensor(label)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]

    @property
    def labels(self) -> torch.Tensor:
        return torch.stack([item["labels"] for item in self.items])


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Dynamic padding to the batch's longest item, with the attention mask."""
    longest = max(len(item["input_ids"]) for item in items)
    batch = {k: torch.full((len(items), longest), PAD, dtype=torch.long)
             for k in ("input_ids", "token_type_ids", "attention_mask")}
    for i, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][i, :n] = item["input_ids"]
        batch["token_type_ids"][i, :n] = item["token_type_ids"]
        batch["attention_mask"][i, :n] = 1
    batch["labels"] = torch.stack([item["labels"] for item in items])
    return batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(commands: list[list[str]], timeout: float = 120.0) -> list[subprocess.CompletedProcess]:
    """Run launcher commands side by side (one thread each) from the repo root; kill on timeout."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "TORCH_CPP_LOG_LEVEL": "ERROR"}
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for cmd in commands]
    results = []
    for cmd, proc in zip(commands, procs):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:  # the launcher forwards SIGTERM to its workers
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            out, _ = proc.communicate()
            raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-3000:]}")
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, None))
    return results


WORKER = __file__


class DevAccuracy:
    """An evaluator (bert.engine.selection): accuracy in points on a toy dev set, in one process on `device`."""

    primary = "dev_acc"

    def __init__(self, dev: "ToyDataset", device=None):
        self.dev, self.device = dev, device

    def __call__(self, model) -> dict[str, float]:
        from bert.engine import DistContext, predict

        ctx = DistContext(device=self.device) if self.device is not None else None
        logits, = predict(model, self.dev, collate, batch_size=8, ctx=ctx, lengths=self.dev.lengths, progress=False)
        return {"dev_acc": 100.0 * (logits.argmax(-1) == self.dev.labels).float().mean().item()}


def torchrun(launcher_args: list[str], worker_args: list[str]) -> list[str]:
    """A torchrun command line running this file as the worker."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher_args, WORKER, *worker_args]


# ----------------------------------------------------------------------------------------------
# The worker


def _worker(argv: list[str]) -> int:
    from bert.engine import TrainConfig, cleanup_distributed, fit, predict, setup_distributed
    from bert.engine import strip_launcher_args

    argv, launcher_local_rank = strip_launcher_args(argv)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="JSON: TrainConfig fields + dropout, n_train, kill_at")
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    settings = json.loads(args.config)
    dropout = settings.pop("dropout", 0.0)
    n_train = settings.pop("n_train", 160)
    kill_at = settings.pop("kill_at", 0)
    evaluated = settings.pop("evaluate", False)  # dev accuracy on rank 0 every eval_every steps

    ctx = setup_distributed(local_rank=launcher_local_rank)
    work = Path(args.work)
    pids = work / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / str(ctx.rank)).write_text(str(os.getpid()))
    model = tiny_model(dropout)
    train, dev = ToyDataset(n_train, seed=1), ToyDataset(37, seed=2)

    logged = []  # the steps this invocation trained (a resumed run starts after its checkpoint)

    def on_log(record: dict) -> None:
        logged.append(record["step"])
        if kill_at and record["step"] == kill_at:
            # SIGKILL the whole job mid-epoch: every worker, then the launcher, then this process.
            others = [int(p.read_text()) for p in pids.iterdir() if int(p.name) != ctx.rank]
            for pid in others + [os.getppid(), os.getpid()]:
                os.kill(pid, signal.SIGKILL)

    evaluator = DevAccuracy(dev, ctx.device) if evaluated and ctx.is_main else None
    result = fit(model, train, collate, TrainConfig(**settings), work, ctx=ctx, lengths=train.lengths,
                 on_log=on_log, progress=False, evaluator=evaluator)
    logits, = predict(model, dev, collate, batch_size=8, ctx=ctx, lengths=dev.lengths, progress=False)
    if ctx.is_main:
        torch.save({"history": result.history, "state": model.state_dict(), "logits": logits,
                    "world_size": ctx.world_size, "launcher_local_rank": launcher_local_rank,
                    "skipped_steps": result.skipped_steps, "logged": logged, "selection": result.selection},
                   args.out)
    ctx.barrier()
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
