"""Tokenizer speed on the real corpus: our slow path, our fast path and HF's BertTokenizerFast.

    .venv/bin/python bench/tokenizer_speed.py [--repeat 3] [--data ../shared/data]

The corpus is the parity test's: every GLUE text field in ../shared/data and every SQuAD v1.1 dev
context and question (about 134k lines). Each path turns every line into WordPiece ids (no special
tokens); the best of --repeat runs is kept. The fast path is timed cold (a fresh word cache, what one
pass of the tokenize stage costs) and warm. HF is timed as users call it (``tok(texts)``) and as its
bare Rust batch encoder (``backend_tokenizer.encode_batch``), on all its threads; ours runs on one. Prints lines/s and ratios and writes bench/tokenizer_speed.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bert.text.fast_tokenization import FastWordpiece  # noqa: E402
from bert.io.fileio import atomic_write_text  # noqa: E402
from bert.tokenization import BertTokenizer, load_vocab  # noqa: E402
from test_tokenization_parity import DATA, corpus_lines, vocab_path  # noqa: E402


def best_time(fn, repeat: int) -> tuple[float, float, object]:
    """The shortest wall time and CPU time (all threads) of `repeat` calls of fn, and its last result.

    CPU time is the fairer figure on a shared, loaded machine; wall time counts HF's threads once.
    """
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "tokenizer_speed.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # silence the "longer than 512" warnings of long contexts

    import transformers

    texts = [t for lines in corpus_lines(args.data).values() for t in lines]
    chars = sum(map(len, texts))
    ours = BertTokenizer(vocab_path(), max_len=10**9)
    hf = transformers.BertTokenizerFast(vocab=dict(load_vocab(vocab_path())), do_lower_case=True)

    def slow():
        return [ours.convert_tokens_to_ids(ours.tokenize(t)) for t in texts]

    def fast_cold():
        return FastWordpiece(ours).tokenize_to_ids(texts)

    warm = FastWordpiece(ours)
    warm.tokenize_to_ids(texts)

    def hf_batch():
        return hf(texts, add_special_tokens=False)["input_ids"]

    def hf_rust():  # the Rust encoder alone, without transformers' BatchEncoding layer
        return [e.ids for e in hf.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]

    timings, cpu, results = {}, {}, {}
    for name, fn, repeat in (("slow", slow, 1), ("fast_cold", fast_cold, args.repeat),
                             ("fast_warm", lambda: warm.tokenize_to_ids(texts), args.repeat),
                             ("hf_fast", hf_batch, args.repeat), ("hf_rust", hf_rust, args.repeat)):  # fmt: skip
        timings[name], cpu[name], results[name] = best_time(fn, repeat)
        print(f"{name:10s} wall {timings[name]:7.2f} s {len(texts) / timings[name]:8.0f} lines/s   "
              f"cpu {cpu[name]:7.2f} s {len(texts) / cpu[name]:8.0f} lines/cpu-s", flush=True)
    identical = {name: results[name] == results["hf_fast"] for name in ("slow", "fast_cold", "fast_warm", "hf_rust")}
    pairs = {"fast_cold/slow": ("fast_cold", "slow"), "fast_cold/hf": ("fast_cold", "hf_fast"),
             "fast_warm/hf": ("fast_warm", "hf_fast"), "fast_cold/hf_rust": ("fast_cold", "hf_rust"),
             "fast_warm/hf_rust": ("fast_warm", "hf_rust"), "hf/slow": ("hf_fast", "slow")}  # fmt: skip
    ratios = {name: {"wall": timings[b] / timings[a], "cpu": cpu[b] / cpu[a]} for name, (a, b) in pairs.items()}
    for name, ratio in ratios.items():
        print(f"speed ratio {name:18s} wall {ratio['wall']:6.2f}x   cpu {ratio['cpu']:6.2f}x")
    print("ids identical to HF:", identical)
    report = {
        "lines": len(texts),
        "chars": chars,
        "seconds": timings,
        "cpu_seconds": cpu,
        "lines_per_s": {name: len(texts) / t for name, t in timings.items()},
        "lines_per_cpu_s": {name: len(texts) / t for name, t in cpu.items()},
        "speed_ratios": ratios,
        "identical_to_hf": identical,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "transformers": transformers.__version__,
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
    }  # fmt: skip
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
