"""Training throughput of bert.engine per precision, and with a one-process DDP group (NCCL on GPU).

A BERT (base by default on a GPU, MiniLM-sized on CPU) with random weights trains on synthetic
sequence-pair classification batches through `fit`, exactly as the finetune stage drives it. Printed:
sequences/s per case, the loss at the end, skipped fp16 steps. Not a test: nothing is asserted.

    python bench/gpu_engine.py                                   # fp32, fp16, bf16 (+ ddp-1 on GPU)
    python bench/gpu_engine.py --config minilm --seq 128 --steps 30 --precisions bf16 --ddp
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import REPO_ROOT, machine_info, table, write_json

import torch

from bert import BertConfig, BertForSequenceClassification
from bert.engine import TrainConfig, cleanup_distributed, fit, setup_distributed

CONFIGS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}


class SyntheticPairs(torch.utils.data.Dataset):
    """Random token pairs of lengths between seq/4 and seq; the label is a simple token statistic."""

    def __init__(self, n: int, seq: int, vocab: int = 30522, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(seq // 4, seq + 1, (n,), generator=g).tolist()
        self.ids = [torch.randint(1000, vocab, (length,), generator=g) for length in self.lengths]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        ids = self.ids[i]
        half = len(ids) // 2
        return {"input_ids": ids, "token_type_ids": (torch.arange(len(ids)) >= half).long(),
                "labels": (ids[:half].float().mean() > ids[half:].float().mean()).long()}


def collate(items: list[dict]) -> dict:
    longest = max(len(it["input_ids"]) for it in items)
    out = {k: torch.zeros(len(items), longest, dtype=torch.long)
           for k in ("input_ids", "token_type_ids", "attention_mask")}
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        out["input_ids"][i, :n], out["token_type_ids"][i, :n] = it["input_ids"], it["token_type_ids"]
        out["attention_mask"][i, :n] = 1
    out["labels"] = torch.stack([it["labels"] for it in items])
    return out


def run_case(name: str, precision: str, args, ctx) -> dict:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**CONFIGS[args.config]), 2)
    data = SyntheticPairs(args.steps * args.batch, args.seq)
    cfg = TrainConfig(epochs=1.0, learning_rate=2e-5, global_batch_size=args.batch, precision=precision,
                      log_every=max(args.steps // 5, 1), optimizer=args.optimizer)
    warm = TrainConfig(**{**cfg.to_dict(), "epochs": 2 / args.steps})  # two steps: kernels, allocator
    with tempfile.TemporaryDirectory() as work:
        fit(model, data, collate, warm, Path(work) / "warm", ctx=ctx, progress=False)
        result = fit(model, data, collate, cfg, Path(work) / "run", ctx=ctx, lengths=data.lengths,
                     progress=False)
    return {"case": name, "precision": precision, "sequences_per_second": round(result.sequences_per_second, 1),
            "seconds": round(result.seconds, 2), "final_loss": round(result.history[-1]["loss"], 4),
            "skipped_steps": result.skipped_steps, "world_size": ctx.world_size}


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="bert-base" if cuda else "minilm")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32 if cuda else 8)
    parser.add_argument("--steps", type=int, default=50 if cuda else 6)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--optimizer", choices=["bertadam", "adamw"], default="bertadam")
    parser.add_argument("--ddp", action="store_true", default=cuda,
                        help="also run bf16 (GPU: fp16) in a one-process DDP group (nccl on GPU, gloo on CPU)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "gpu_engine.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = [run_case(p, p, args, setup_distributed()) for p in args.precisions]
    if args.ddp:
        precision = "fp16" if cuda else "bf16"
        ctx = setup_distributed(backend="nccl" if cuda else "gloo")
        try:
            rows.append(run_case(f"ddp-1 ({ctx.backend})", precision, args, ctx))
        finally:
            cleanup_distributed()
    print(f"{args.config}, seq <= {args.seq}, batch {args.batch}, {args.steps} steps, {args.optimizer}")
    print(table(rows, list(rows[0])))
    write_json(args.out, {"machine": machine_info(), "settings": vars(args) | {"out": str(args.out)},
                          "results": rows})


if __name__ == "__main__":
    main()
