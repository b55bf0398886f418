"""Inference speed: the `bert predict` path and the evaluate stage's model loop against HF transformers, on the
same weights, the same data and the same precision.

Data: MRPC dev + test (408 + 1725 = 2133 pairs, ../shared/data/glue/MRPC) and SQuAD v1.1 dev
(../shared/data/squad/v1.1: its first --squad-questions questions, file order; 0 for all 10570).
Weights: the packaged MiniLM with a seeded classification head (MRPC, max_seq_length 128) and a seeded QA head
(SQuAD, 384 / doc_stride 128 / max_query_length 64), written once as fine-tuned folders with their task
metadata (--work); both sides load these folders. Speed does not depend on the head's training.

Contenders, each in its own process (so that its peak RSS is its own), all at batch size --batch-size:

    ours          text in, records out: bert.inference.Predictor through `bert predict`'s chunked writer
                  (FastWordpiece ids, length-sorted batches, the packed path, post-processing, JSON)
    hf-pipeline   HF's pipeline("text-classification") on the same texts (fast tokenizer, each batch padded to
                  its longest). transformers 5 removed the question-answering pipeline: for SQuAD this is its fast
                  tokenizer (windows of 384 with stride 128 and offsets, as run_qa.py) then Trainer.predict, timed
                  together; HF's answer extraction lives in its examples (utils_qa.py), not in the library, and is
                  not counted (ours is: n-best, get_final_text, JSON)
    ours-model    bert.engine.predict on features tokenized before the clock (what the evaluate stage runs)
    hf-trainer    Trainer.predict on the same tokenized features: DataCollatorWithPadding (dynamic padding), its
                  sequential eval order, bf16 via its args; needs `accelerate`: pass a folder holding it with
                  --hf-path (put on the HF child's path only)
    hf-trainer-grouped   the same with train_sampling_strategy="group_by_length", which transformers 5.24's eval
                  sampler follows: length-grouped batches, but the predictions come back in the sampler's order,
                  not the dataset's (58% of MRPC labels land on the wrong pair): fast, not usable as it is

Precision: fp32, or bf16 (ours: autocast; HF: autocast around the pipeline call / Trainer's bf16=True, and with
--hf-bf16-weights also the models loaded in bfloat16 (pure bf16), as "hf-pipeline-w" / "hf-trainer-w").
Each child loads, warms up on two batches, then times one pass over all the data (wall time, or with --cpu-time
the CPU seconds of one thread: the work done, robust to other processes' load). Rounds alternate the order;
the medians are reported, with ratio = HF / ours for each pairing (ours vs hf-pipeline, ours-model vs
hf-trainer and hf-trainer-grouped).

    python bench/inference_speed.py --hf-path /tmp/hfpath               # both tasks, fp32 and bf16, 2 rounds
    python bench/inference_speed.py --tasks mrpc --precisions bf16 --rounds 3 --cpu-time
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, SHARED_DATA, add_timing_args, machine_info, peak_rss_mb, table, timing_setup, write_json

log = logging.getLogger("inference_speed")

MRPC = SHARED_DATA / "glue" / "MRPC"
SQUAD_DEV = SHARED_DATA / "squad" / "v1.1" / "dev-v1.1.json"
TASKS = ("mrpc", "squad")
CONTENDERS = ("ours", "hf-pipeline", "ours-model", "hf-trainer", "hf-trainer-grouped")
PAIRS = (("ours", "hf-pipeline"), ("ours-model", "hf-trainer"), ("ours-model", "hf-trainer-grouped"))
GEOMETRY = {"mrpc": {"max_seq_length": 128}, "squad": {"max_seq_length": 384, "doc_stride": 128,
                                                      "max_query_length": 64}}


def prepare_models(work: Path) -> dict[str, Path]:
    """The two fine-tuned folders (MiniLM + a seeded head, with task metadata), made once."""
    import torch

    from bert.modeling import BertForQuestionAnswering, BertForSequenceClassification
    from bert.tasks.folder import TaskMetadata, write_task_metadata
    from bert.tasks.registry import TaskKind
    from bert.tokenization import BertTokenizer

    folders = {"mrpc": work / "mrpc", "squad": work / "squad1"}
    heads = {"mrpc": (BertForSequenceClassification, {"num_labels": 2},
                      TaskMetadata(TaskKind.PAIR_CLASSIFICATION, "mrpc", ("0", "1"), 128)),
             "squad": (BertForQuestionAnswering, {},
                       TaskMetadata(TaskKind.SQUAD, "squad1", (), **GEOMETRY["squad"]))}
    for task, folder in folders.items():
        if (folder / "config.json").is_file():
            continue
        head, kwargs, meta = heads[task]
        torch.manual_seed(42)
        model = head.from_pretrained("minilm-l6-h384-uncased", **kwargs)
        model.save_pretrained(folder)
        BertTokenizer.from_pretrained("minilm-l6-h384-uncased").save_pretrained(folder)
        write_task_metadata(folder, meta, do_lower_case=True)
    return folders


def read_data(task: str, squad_questions: int):
    """MRPC: TextInputs of dev + test; SQuAD: QuestionInputs of dev (the first `squad_questions`)."""
    from bert.inference.inputs import TextInput, read_inputs
    from bert.tasks.glue import MRPC as MRPC_TASK

    if task == "mrpc":
        examples = MRPC_TASK.get_examples(MRPC, "dev") + MRPC_TASK.get_examples(MRPC, "test")
        return [TextInput(e.guid, e.text_a, e.text_b) for e in examples]
    inputs = read_inputs(str(SQUAD_DEV), SQUAD_DEV.read_text(encoding="utf-8"), "qa")
    return inputs[:squad_questions] if squad_questions else inputs


def ours(folder: Path, task: str, data, precision: str, batch: int):
    """`bert predict`'s path: the Predictor and the command's chunked JSON writer."""
    from bert.cli.predict import _write_all
    from bert.inference.predictor import Predictor

    predictor = Predictor(folder, device="cpu", precision=precision, batch_size=batch)

    def run(items):
        out = io.StringIO()
        _write_all(predictor, items, out, quiet=True)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    key = "label" if task == "mrpc" else "answer"
    return run, lambda records: [r[key] for r in records]


def ours_model(folder: Path, task: str, data, precision: str, batch: int):
    """bert.engine.predict on features made before the clock (the evaluate stage's loop)."""
    import torch

    from bert.data.cache import pad_collate
    from bert.engine.prediction import predict
    from bert.inference.predictor import Predictor

    predictor = Predictor(folder, device="cpu", precision=precision, batch_size=batch)  # loads model + tokenizer
    tokenizer, meta = predictor.tokenizer, predictor.meta
    if task == "mrpc":
        rows = [tokenizer.encode(x.text_a, x.text_b, max_length=meta.max_seq_length) for x in data]
        items = [{"input_ids": torch.tensor(e.input_ids), "token_type_ids": torch.tensor(e.token_type_ids)}
                 for e in rows]
    else:
        from bert.tasks.records import CachedTokenizer, SquadExample
        from bert.tasks.squad import convert_examples_to_features, split_context

        examples = [SquadExample(str(i), x.question, split_context(x.context)[0]) for i, x in enumerate(data)]
        features = convert_examples_to_features(examples, CachedTokenizer(tokenizer), meta.max_seq_length,
                                                meta.doc_stride, meta.max_query_length, False)
        items = [{"input_ids": torch.tensor(f.input_ids), "token_type_ids": torch.tensor(f.segment_ids)}
                 for f in features]
    def run(chosen):
        picked = items if len(chosen) == len(data) else items[: len(chosen)]  # the warm-up: a slice
        return predict(predictor.model, picked, pad_collate, batch_size=batch, precision=precision,
                       lengths=[len(i["input_ids"]) for i in picked], progress=False)

    return run, lambda outputs: outputs[0].argmax(-1).tolist() if task == "mrpc" else None


def hf_pipeline(folder: Path, task: str, data, precision: str, batch: int, bf16_weights: bool):
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    pipe = transformers.pipeline("text-classification", model=str(folder), device="cpu", dtype=dtype)
    autocast = precision == "bf16" and not bf16_weights

    def run(items):
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            return pipe([{"text": x.text_a, "text_pair": x.text_b} for x in items], batch_size=batch)

    return run, lambda records: [r["label"] for r in records]


def hf_trainer(folder: Path, task: str, data, precision: str, batch: int, bf16_weights: bool, grouped: bool,
               tokenize_in_clock: bool = False):
    """Trainer.predict with dynamic padding; with tokenize_in_clock the fast tokenizer's work is timed too."""
    import torch
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def encode(items):
        if task == "mrpc":
            enc = tokenizer([x.text_a for x in items], [x.text_b for x in items], truncation=True, max_length=128)
        else:  # run_qa.py's prepare_validation_features: windows with a stride, offsets for the answers
            enc = tokenizer([x.question.lstrip() for x in items], [x.context for x in items],
                            truncation="only_second", max_length=384, stride=128, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
            enc.pop("overflow_to_sample_mapping")
            enc.pop("offset_mapping")
        return [{k: v[i] for k, v in enc.items()} for i in range(len(enc["input_ids"]))]

    auto = (transformers.AutoModelForSequenceClassification if task == "mrpc"
            else transformers.AutoModelForQuestionAnswering)
    model = auto.from_pretrained(str(folder), dtype=torch.bfloat16 if bf16_weights else torch.float32)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hf-trainer-"), use_cpu=True, report_to=[],
                             per_device_eval_batch_size=batch, bf16=precision == "bf16" and not bf16_weights,
                             train_sampling_strategy="group_by_length" if grouped else "sequential",
                             disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
    features = None if tokenize_in_clock else encode(data)

    def run(chosen):
        if tokenize_in_clock:
            return trainer.predict(encode(chosen)).predictions
        picked = features if len(chosen) == len(data) else features[: len(chosen)]  # the warm-up: a slice
        return trainer.predict(picked).predictions

    def labels(predictions):
        import numpy as np

        logits = predictions[0] if isinstance(predictions, tuple) else predictions
        return np.asarray(logits).argmax(-1).tolist() if task == "mrpc" else None

    return run, labels


def child(args) -> None:
    """Run one contender in this process and print its record as one JSON line."""
    import torch

    clock = timing_setup(args)
    if args.child.startswith("hf") and args.hf_path:
        sys.path.insert(0, str(args.hf_path))
    folder = args.work / ("mrpc" if args.task == "mrpc" else "squad1")
    data = read_data(args.task, args.squad_questions)
    weights = args.child.endswith("-w")
    name = args.child.removesuffix("-w")
    start = time.perf_counter()
    if name == "ours":
        run, answers = ours(folder, args.task, data, args.precision, args.batch_size)
    elif name == "ours-model":
        run, answers = ours_model(folder, args.task, data, args.precision, args.batch_size)
    elif name == "hf-pipeline" and args.task == "mrpc":
        run, answers = hf_pipeline(folder, args.task, data, args.precision, args.batch_size, weights)
    elif name == "hf-pipeline":  # transformers 5 has no question-answering pipeline: tokenizer + Trainer.predict
        run, answers = hf_trainer(folder, args.task, data, args.precision, args.batch_size, weights, False, True)
    else:
        run, answers = hf_trainer(folder, args.task, data, args.precision, args.batch_size, weights,
                                  name.endswith("-grouped"))
    setup_s = time.perf_counter() - start
    run(data[: 2 * args.batch_size])  # warm-up: oneDNN primitives, allocator, caches
    start = clock()
    out = run(data)
    seconds = clock() - start
    print(json.dumps({"config": args.child, "task": args.task, "precision": args.precision, "seconds": seconds,
                      "clock": "cpu" if args.cpu_time else "wall",
                      "inputs": len(data), "inputs_per_s": len(data) / seconds, "setup_s": setup_s,
                      "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
                      "answers": answers(out)}))


def run_child(args, task: str, precision: str, config: str) -> dict:
    env = dict(os.environ)
    command = [sys.executable, __file__, "--child", config, "--task", task, "--precision", precision,
               "--work", str(args.work), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--squad-questions", str(args.squad_questions)] + (["--cpu-time"] if args.cpu_time else [])
    if args.hf_path:
        command += ["--hf-path", str(args.hf_path)]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{config} {task} {precision} failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    log.info("%s %s %s: %.2f s (%.1f inputs/s), peak RSS %.0f MiB", task, precision, config, record["seconds"],
             record["inputs_per_s"], record["peak_rss_mb"])
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--hf-bf16-weights", action="store_true",
                        help="in bf16 also run the HF contenders with bfloat16 weights (pure bf16)")
    parser.add_argument("--rounds", type=int, default=2, help="each contender this many times, order alternating")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--squad-questions", type=int, default=1000, help="SQuAD dev questions (0: all 10570)")
    add_timing_args(parser)
    parser.add_argument("--hf-path", type=Path, help="a folder with `accelerate` for hf-trainer (HF child only)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_inference_speed")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "inference_speed.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.child:
        child(args)
        return 0
    prepare_models(args.work)
    records, rows = [], []
    for task in args.tasks:
        for precision in args.precisions:
            configs = list(args.contenders)
            if precision == "bf16" and args.hf_bf16_weights:
                configs += [f"{c}-w" for c in configs if c.startswith("hf")]
            runs: dict[str, list[dict]] = {c: [] for c in configs}
            for r in range(args.rounds):
                for config in configs if r % 2 == 0 else configs[::-1]:
                    runs[config].append(run_child(args, task, precision, config))
            records += [x for rs in runs.values() for x in rs]
            median = {c: statistics.median(x["seconds"] for x in rs) for c, rs in runs.items()}
            rss = {c: max(x["peak_rss_mb"] for x in rs) for c, rs in runs.items()}
            for mine, theirs in PAIRS:
                for other in (theirs, f"{theirs}-w"):
                    if mine in median and other in median:
                        agree = None
                        a, b = runs[mine][0]["answers"], runs[other][0]["answers"]
                        if a and b and len(a) == len(b):
                            a, b = [str(x) for x in a], [str(x) for x in b]
                            agree = sum(x == y for x, y in zip(a, b)) / len(a)
                        rows.append({"task": task, "precision": precision, "ours": mine, "HF": other,
                                     "ours s": median[mine], "HF s": median[other],
                                     "ratio": median[other] / median[mine],
                                     "rounds (ours / HF)": " ".join(f"{x['seconds']:.2f}" for x in runs[mine])
                                     + " / " + " ".join(f"{x['seconds']:.2f}" for x in runs[other]),
                                     "peak RSS MiB (ours / HF)": f"{rss[mine]:.0f} / {rss[other]:.0f}",
                                     "inputs": runs[mine][0]["inputs"], "agreement": agree})
    columns = ["task", "precision", "ours", "HF", "inputs", "ours s", "HF s", "ratio", "rounds (ours / HF)",
               "peak RSS MiB (ours / HF)", "agreement"]
    print(table(rows, columns))
    for record in records:
        record.pop("answers", None)
    write_json(args.out, {"machine": machine_info(), "batch_size": args.batch_size,
                          "squad_questions": args.squad_questions, "rows": rows, "runs": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
