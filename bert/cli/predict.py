"""``bert predict``: a fine-tuned model folder's predictions on new inputs, as JSON lines.

    bert predict --model models/finetuned/mrpc/seed42 --input pairs.tsv --output predictions.jsonl
    echo "The cat sat. ||| A cat was sitting." | bert predict --model models/finetuned/mrpc/seed42 --input -

Inputs are read and checked whole before the model runs (a bad row stops everything, naming file:line and
the column); then they are predicted in chunks, each sorted by length, and written in input order: to
stdout as they come, or to --output atomically (nothing half-written on an error or Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

# Only the standard library here: `bert --help` builds this subcommand's parser without loading torch or numpy.

logger = logging.getLogger(__name__)

CHUNK_BATCHES = 32  # batches per chunk: the span inside which inputs are sorted by length

HELP = """\
input formats (--format, default from the name: .tsv .csv .jsonl .json, else lines):
  TSV/CSV   a header row naming the columns (TSV: quotes are text, as in GLUE's files)
  JSONL     one object per line; .json: a list of objects, or SQuAD's {"data": [...]}
  lines     one input per line; "-" reads stdin: "text", "text_a ||| text_b",
            "question ||| context", "context ||| choice ||| choice ..."
columns (found by these names, or named with the --*-column flags):
  id                   id, idx, index, guid, qid (optional: else the line number)
  text                 text, text_a, sentence, sentence1, question, question1, premise
  pair                 text_a/text_b, text/text_pair, sentence1/sentence2, question1/question2,
                       question/sentence, premise/hypothesis, #1 String/#2 String (MRPC)
  QA                   question (or query) and context (or passage, paragraph)
  multiple choice      context (or startphrase, sent1 + sent2, question) and choices (a JSON list;
                       or endings, options) or ending0 .. endingN
output (JSON lines, one per input, its id and texts echoed):
  classification       "label", "probabilities": {label: p}
  regression           "score"
  multi-label          "labels" (probability above --threshold), "probabilities"
  QA                   "answer", "score" (its n-best probability), "n_best" with --n-best K,
                       "null_odds" for SQuAD 2.0 ("" answers when the null score wins)
  multiple choice      "choice": {"index", "text"}, "probabilities": [...]
"""


def add_arguments(p, positive_int) -> None:
    """The subcommand's flags (bert.cli.commands builds the parser)."""
    p.add_argument("--model", required=True, help="a fine-tuned model folder (e.g. models/finetuned/mrpc/seed42)")
    p.add_argument("--input", required=True, help="the inputs' file, or - for stdin")
    p.add_argument("--output", help="JSON lines to write (atomically); default: stdout")
    p.add_argument("--format", choices=["tsv", "csv", "jsonl", "json", "lines"], help="default: from --input's name")
    p.add_argument("--task", help="for a folder without task metadata: single, pair, regression, multi-label, qa, "
                   "qa-v2, multiple-choice, or a task name (mrpc, squad2, ...)")
    for name in ("id", "text", "text-pair", "question", "context", "choices"):
        p.add_argument(f"--{name}-column", metavar="NAME", help=f"the column holding the {name.replace('-', ' ')}")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences per forward pass (default: 64)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast precision (default: fp32; bf16 on CPUs with bf16 support and recent GPUs)")
    p.add_argument("--max-seq-length", type=positive_int, help="tokens per input (default: the folder's)")
    p.add_argument("--window-stride", type=positive_int, metavar="N",
                   help="classification: cut long inputs into windows advancing by N tokens (default: the folder's)")
    p.add_argument("--window-combine", choices=["mean", "max"], help="how windows' logits combine (default: mean)")
    p.add_argument("--no-window", action="store_true", help="truncate long inputs even if the folder says windows")
    p.add_argument("--threshold", type=float, default=0.5, help="multi-label: a label's probability above which "
                   "it is predicted (default: 0.5)")
    p.add_argument("--n-best", type=int, default=0, metavar="K", help="QA: list the K best answers (default: 0)")
    p.add_argument("--null-threshold", type=float, help="SQuAD 2.0: answer \"\" when null score - best score "
                   "exceeds it (default: the folder's)")
    p.add_argument("--cache-dir", help="download cache for model names")


def _window(args, folder_window):
    """--window-stride / --window-combine / --no-window over the folder's windows: WindowSettings, False or None."""
    from bert.tasks.windows import WindowSettings

    if args.no_window:
        if args.window_stride or args.window_combine:
            raise ValueError("--no-window contradicts --window-stride / --window-combine")
        return False
    if args.window_stride is None and args.window_combine is None:
        return None  # the folder's
    stride = args.window_stride or (folder_window.stride if folder_window else None)
    if stride is None:
        raise ValueError("--window-combine needs windows: give --window-stride N (the folder has none)")
    return WindowSettings(stride, args.window_combine or (folder_window.combine if folder_window else "mean"))


def _read_text(path: str) -> str:
    from bert.tasks.records import DataFormatError

    if path == "-":
        raw, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        if not Path(path).is_file():
            raise ValueError(f"{path}: input file not found" if not Path(path).exists() else f"{path}: not a file")
        raw, name = Path(path).read_bytes(), path
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(f"{name}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _check_output(input_path: str, output: Optional[str]) -> None:
    if output is None:
        return
    if Path(output).is_dir():
        raise ValueError(f"--output {output} is a folder; expected a file name (e.g. {output}/predictions.jsonl)")
    if input_path != "-" and Path(output).exists() and Path(output).resolve() == Path(input_path).resolve():
        raise ValueError(f"--output {output} is the input file; choose another name")


def predict_command(args) -> int:
    """The whole command: check, read the inputs, load the model, predict in chunks, write."""
    from bert.inference.inputs import Columns, read_inputs
    from bert.inference.predictor import Predictor
    from bert.io.fileio import atomic_path
    from bert.model.pretrained import resolve_model_dir
    from bert.tasks.folder import read_task_metadata

    if args.n_best < 0:
        raise ValueError(f"--n-best must be 0 or more, got {args.n_best}")
    _check_output(args.input, args.output)
    folder = resolve_model_dir(args.model, args.cache_dir)
    meta = read_task_metadata(folder, args.task)  # cheap: the kind decides how inputs read
    kind = {"squad": "qa", "multiple_choice": "choice"}.get(meta.kind.value, "text")
    columns = Columns(args.id_column, args.text_column, args.text_pair_column, args.question_column,
                      args.context_column, args.choices_column)
    inputs = read_inputs(args.input, _read_text(args.input), kind, args.format, columns, meta.num_choices)
    predictor = Predictor(folder, args.task, args.device, args.precision, args.batch_size, args.max_seq_length,
                          _window(args, meta.window), args.threshold, args.n_best, args.null_threshold)
    start = time.perf_counter()
    if args.output:
        with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out:
            _write_all(predictor, inputs, out, args.quiet)
    else:
        _write_all(predictor, inputs, sys.stdout, args.quiet)
    seconds = time.perf_counter() - start
    logger.info("%d inputs in %.1f s (%.1f/s) -> %s", len(inputs), seconds, len(inputs) / max(seconds, 1e-9),
                args.output or "stdout")
    return 0


def _write_all(predictor, inputs: list, out: TextIO, quiet: bool) -> None:
    from tqdm.auto import tqdm

    chunk = predictor.batch_size * CHUNK_BATCHES
    with tqdm(total=len(inputs), desc="predict", unit="input", file=sys.stderr, disable=quiet) as bar:
        for begin in range(0, len(inputs), chunk):
            part = inputs[begin:begin + chunk]
            for record in predictor.predict(part):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(part))
