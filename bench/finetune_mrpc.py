"""End-to-end MRPC fine-tuning: our finetune stage vs an HF Trainer script, same hyperparameters.

The packaged MiniLM on the real MRPC (../shared/data/glue/MRPC), 3 epochs, learning rate 5e-5, batch 32,
max_seq_length 128, warmup 10%, weight decay 0.01, seed 42. Contenders, each in its own process (so
that its peak RSS is its own):

    ours-fp32, ours-bf16   stages.finetune (bert/engine: dynamic padding, length-grouped batches,
                           BertAdam) then stages.evaluate on dev
    hf-default             HF Trainer as run_glue.py runs by default: pad to max_seq_length, fp32
    hf-best                HF Trainer with dynamic padding, group_by_length and bf16
    ours-bf16-2proc        ours-bf16 as two torchrun processes of one thread each (DDP over gloo, the
                           same global batch): the two cores without intra-op thread hand-offs
    hf-best-2proc          hf-best the same way (Trainer under torchrun, 2 x batch 16)

Both sides tokenize before the clock starts; the figure is the training loop's time (our FitResult
seconds, HF's train_runtime), then dev accuracy/F1. HF's Trainer needs `accelerate`: pass a folder
holding it with --hf-path if the venv lacks it (it is only put on the HF child's sys.path).

Each child starts as our training stages do (stages/_lib/allocator.py): ours with BERT_ALLOCATOR as set
(default auto: tcmalloc when installed), HF with --hf-allocator (default system: glibc's malloc, as an
HF Trainer script runs); `--hf-allocator auto` gives HF tcmalloc too. The allocator of each run is in
its record.

    python bench/finetune_mrpc.py                       # all four, writes bench/finetune_mrpc.json
    python bench/finetune_mrpc.py --configs ours-bf16 hf-best --epochs 0.1   # a quick check
    python bench/finetune_mrpc.py --configs ours-bf16 hf-best --rounds 2     # each twice, in both orders
    python bench/finetune_mrpc.py --configs ours-bf16 hf-best --hf-allocator auto   # both on tcmalloc
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO_ROOT, SHARED_DATA, machine_info, peak_rss_mb, table, write_json

from stages._lib.allocator import ALLOCATOR_ENV, active_allocator, reexec_with_allocator

log = logging.getLogger("finetune_mrpc")

MRPC = SHARED_DATA / "glue" / "MRPC"
CONFIGS = ["ours-fp32", "ours-bf16", "hf-default", "hf-best", "ours-bf16-2proc", "hf-best-2proc"]
TWO_PROCESSES = "-2proc"
HYPER = {"learning_rate": 5e-5, "batch": 32, "max_seq_length": 128, "warmup": 0.1, "weight_decay": 0.01,
         "seed": 42}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def wait_for(paths: list[Path], timeout_s: float = 120.0) -> None:
    """Until every path exists: what one rank writes for another (the ranks share no other channel here)."""
    deadline = time.monotonic() + timeout_s
    while not all(p.is_file() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {[str(p) for p in paths if not p.is_file()]}")
        time.sleep(0.05)


def write_params(work: Path, epochs: float, precision: str) -> Path:
    """A params.yaml for our stages: the repo's, with MRPC from the shared data and the bench's settings."""
    import yaml

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["tasks"], params["seeds"] = ["mrpc"], [HYPER["seed"]]
    params["data"].update(source="local", local_dir=str(SHARED_DATA / "glue"))
    params["tokenize"]["max_seq_length"] = HYPER["max_seq_length"]
    params["finetune"].update(epochs=float(epochs), learning_rate=HYPER["learning_rate"],
                              global_batch_size=HYPER["batch"], warmup_proportion=HYPER["warmup"],
                              weight_decay=HYPER["weight_decay"], precision=precision, group_by_length=True,
                              checkpoint_every=0, log_every=20, nproc=world_size())
    path = work / f"params-{precision}-{world_size()}.yaml"
    if rank() == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(params, sort_keys=False))
        tmp.replace(path)
    wait_for([path])  # the other ranks read rank 0's file
    return path


def prepare_ours(work: Path) -> None:
    """download (local MRPC), convert (the packaged MiniLM), tokenize: once, reused by later runs."""
    from stages import convert, download, tokenize

    params = str(write_params(work, 3.0, "fp32"))
    if not (work / "raw").is_dir():
        assert download.main(["--params", params, "--task", "mrpc", "--out", str(work / "raw")]) == 0
    if not (work / "pretrained").is_dir():
        assert convert.main(["--params", params, "--out", str(work / "pretrained")]) == 0
    if not (work / "features").is_dir():
        assert tokenize.main(["--params", params, "--task", "mrpc", "--data", str(work / "raw"),
                              "--model", str(work / "pretrained"), "--out", str(work / "features")]) == 0


def run_ours(work: Path, name: str, epochs: float) -> dict:
    """Our finetune then evaluate stages, in this process; the precision is the name's second part."""
    from stages import evaluate, finetune

    params = str(write_params(work, epochs, name.split("-")[1]))
    out = work / name
    common = ["--params", params, "--task", "mrpc", "--features", str(work / "features")]
    cpu = time.process_time()
    assert finetune.main(common + ["--seed", str(HYPER["seed"]), "--model", str(work / "pretrained"),
                                   "--out", str(out / "model"), "--history", str(out / "history.json"),
                                   "--work", str(out / "work")]) == 0
    cpu = time.process_time() - cpu
    cpu_files = [work / f"cpu-{name}-rank{r}.json" for r in range(world_size())]
    write_json(cpu_files[rank()], {"cpu_s": cpu})
    if world_size() > 1:
        if rank() != 0:
            return {}
        wait_for(cpu_files)  # the other ranks' CPU seconds; then evaluate as the pipeline does: one process
        cpu = sum(json.loads(f.read_text())["cpu_s"] for f in cpu_files)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    assert evaluate.main(common + ["--data", str(work / "raw"), "--model", str(out / "model"),
                                   "--out", str(out / "eval")]) == 0
    training = json.loads((out / "model" / "training.json").read_text())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]  # in percent
    return {"train_s": training["seconds"], "sequences_per_s": training["sequences_per_second"],
            "steps": training["global_steps"], "final_loss": training["final_loss"], "finetune_cpu_s": cpu,
            "accuracy": metrics["acc"], "f1": metrics["f1"]}


def read_mrpc(split: str) -> list[tuple[str, str, int]]:
    """(sentence 1, sentence 2, label) rows of MRPC's train.tsv / dev.tsv."""
    with open(MRPC / f"{split}.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r[3], r[4], int(r[0])) for r in rows[1:]]


def run_hf(work: Path, best: bool, epochs: float) -> dict:
    """HF's Trainer on the same converted model folder; run_glue.py's defaults unless `best`."""
    import numpy as np
    import torch
    import transformers
    from transformers import BertForSequenceClassification, BertTokenizerFast, Trainer, TrainingArguments

    transformers.logging.set_verbosity_error()
    model_dir = str(work / "pretrained")
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    padding = False if best else "max_length"

    def encode(split):
        rows = read_mrpc(split)
        enc = tokenizer([a for a, _, _ in rows], [b for _, b, _ in rows], truncation=True, padding=padding,
                        max_length=HYPER["max_seq_length"])
        return [{**{k: v[i] for k, v in enc.items()}, "labels": rows[i][2]} for i in range(len(rows))]

    train, dev = encode("train"), encode("dev")
    cpu = time.process_time()  # as ours: model loading and training, not tokenization
    torch.manual_seed(HYPER["seed"])
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(
        output_dir=str(work / ("hf-best" if best else "hf-default")), use_cpu=True, report_to=[],
        per_device_train_batch_size=HYPER["batch"] // world_size(), per_device_eval_batch_size=128,
        learning_rate=HYPER["learning_rate"], num_train_epochs=epochs, warmup_steps=HYPER["warmup"],
        weight_decay=HYPER["weight_decay"], seed=HYPER["seed"], save_strategy="no", eval_strategy="no",
        logging_steps=20, disable_tqdm=True, bf16=best,
        train_sampling_strategy="group_by_length" if best else "random")
    collator = transformers.DataCollatorWithPadding(tokenizer) if best else transformers.default_data_collator
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    out = trainer.train()
    cpu = time.process_time() - cpu
    logits = trainer.predict(dev).predictions
    preds = np.asarray(logits[0] if isinstance(logits, tuple) else logits).argmax(-1)
    labels = np.array([r["labels"] for r in dev])
    tp, fp, fn = (int(((preds == 1) & (labels == 1)).sum()), int(((preds == 1) & (labels == 0)).sum()),
                  int(((preds == 0) & (labels == 1)).sum()))
    return {"train_s": out.metrics["train_runtime"], "sequences_per_s": out.metrics["train_samples_per_second"],
            "steps": out.global_step, "final_loss": out.training_loss, "finetune_cpu_s": cpu,
            "accuracy": 100.0 * float((preds == labels).mean()), "f1": 100.0 * 2 * tp / max(2 * tp + fp + fn, 1)}


def child(name: str, work: Path, epochs: float, threads: int) -> None:
    """Run one contender in this process; write work/result-<name>.json."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    if name.startswith("ours"):
        result = run_ours(work, name, epochs)
    else:
        result = run_hf(work, name.startswith("hf-best"), epochs)
    if rank() != 0:
        return
    result.update(config=name, allocator=active_allocator(), epochs=epochs,
                  process_s=time.perf_counter() - start, peak_rss_mb=peak_rss_mb(),
                  seconds_per_epoch=result["train_s"] / epochs, threads=torch.get_num_threads(),
                  cpu_s_per_epoch=result["finetune_cpu_s"] / epochs)
    write_json(work / f"result-{name}.json", result)


def run_config(args, name: str) -> dict:
    """One contender in its own process (torchrun for the 2-process ones); its result record."""
    env = dict(os.environ)
    if name.startswith("hf") and args.hf_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.hf_path), env.get("PYTHONPATH")]))
    if name.startswith("hf"):
        env[ALLOCATOR_ENV] = args.hf_allocator
    log.info("running %s (%.2f epochs)", name, args.epochs)
    for stale in args.work.glob(f"cpu-{name}-rank*.json"):  # an earlier run's: not this one's figures
        stale.unlink()
    launcher, threads = [], args.threads
    if name.endswith(TWO_PROCESSES):
        launcher, threads = ["-m", "torch.distributed.run", "--nproc_per_node", "2"], 1
        env["OMP_NUM_THREADS"] = "1"
    subprocess.run([sys.executable, *launcher, __file__, "--child", name, "--work", str(args.work),
                    "--epochs", str(args.epochs), "--threads", str(threads)], env=env, check=True,
                   cwd=REPO_ROOT)
    result = json.loads((args.work / f"result-{name}.json").read_text())
    log.info("%s: %.1f s/epoch (%.1f CPU s), %.1f seq/s, peak RSS %.0f MiB, dev acc %.2f F1 %.2f", name,
             result["seconds_per_epoch"], result["cpu_s_per_epoch"], result["sequences_per_s"],
             result["peak_rss_mb"], result["accuracy"], result["f1"])
    return result


def median_run(results: list[dict]) -> dict:
    """One record for a config's rounds: the run nearest the median, with the median seconds (wall and CPU)
    per epoch and every round's wall figure under "rounds_seconds_per_epoch"."""
    wall = statistics.median(r["seconds_per_epoch"] for r in results)
    chosen = dict(min(results, key=lambda r: abs(r["seconds_per_epoch"] - wall)))
    chosen.update(seconds_per_epoch=wall, cpu_s_per_epoch=statistics.median(r["cpu_s_per_epoch"] for r in results),
                  rounds_seconds_per_epoch=[r["seconds_per_epoch"] for r in results])
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_finetune_mrpc"))
    parser.add_argument("--hf-path", type=Path, help="a folder with `accelerate`, for the HF child only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each run (0: torch's default); "
                        "with 1, CPU seconds per epoch measure the work whatever the machine's load")
    parser.add_argument("--rounds", type=int, default=1, help="run every config this many times, the order "
                        "reversed every other round (the machine's speed drifts over minutes); report the median")
    parser.add_argument("--hf-allocator", default="system", help="BERT_ALLOCATOR for the HF runs (default "
                        "system: glibc's malloc; auto: tcmalloc when installed, as ours)")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "finetune_mrpc.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child:
        reexec_with_allocator()  # first: it starts this process again with the allocator preloaded
        child(args.child, args.work, args.epochs, args.threads)
        return 0
    if not MRPC.is_dir():
        raise SystemExit(f"{MRPC}: MRPC not found (the shared data folder)")
    args.work.mkdir(parents=True, exist_ok=True)
    prepare_ours(args.work)
    runs: dict[str, list[dict]] = {name: [] for name in args.configs}
    for round_ in range(args.rounds):
        order = args.configs if round_ % 2 == 0 else list(reversed(args.configs))
        for name in order:
            runs[name].append(run_config(args, name))
    rows = [median_run(results) for results in runs.values()]
    if args.out.is_file():  # keep the earlier runs of configs not run this time (same epochs only)
        earlier = json.loads(args.out.read_text())
        if earlier.get("epochs") == args.epochs:
            ran = {r["config"] for r in rows}
            rows = [r for r in earlier["results"] if r["config"] not in ran] + rows
    by_name = {r["config"]: r for r in rows}
    for r in rows:
        for ref in ("hf-default", "hf-best", "hf-best-2proc"):
            if ref in by_name and r["config"].startswith("ours"):
                r[f"vs_{ref}"] = by_name[ref]["seconds_per_epoch"] / r["seconds_per_epoch"]
                r[f"cpu_vs_{ref}"] = by_name[ref]["cpu_s_per_epoch"] / r["cpu_s_per_epoch"]
    write_json(args.out, {"machine": machine_info(), "hyperparameters": HYPER, "epochs": args.epochs,
                          "results": rows})
    print(table(rows, ["config", "allocator", "seconds_per_epoch", "cpu_s_per_epoch", "sequences_per_s", "peak_rss_mb",
                       "accuracy", "f1", "vs_hf-default", "vs_hf-best", "vs_hf-best-2proc", "cpu_vs_hf-default",
                       "cpu_vs_hf-best"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
