"""Shared pieces of the reliability suite (tests/test_reliability_*.py) and its tally.

The tally: every case of the suite runs inside ``with tally(CATEGORY, "case name") as rec:``. One
JSON line per case goes to the file named by $RELIABILITY_TALLY (nothing is written without it):

    {"category": "bad_input" | "fault", "case": ..., "ok": true/false, "lost": <files lost or damaged>}

``ok`` is true only when every check inside the block passed; a fault test measures what was lost
(files outside a target, outputs changed, bytes that differ) into ``rec["lost"]`` before asserting
it is zero. The README table comes from the file:

    RELIABILITY_TALLY=/tmp/tally.jsonl pytest tests/test_reliability_*.py
    python tests/reliability_helpers.py /tmp/tally.jsonl
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
TALLY_ENV = "RELIABILITY_TALLY"
BAD_INPUT, FAULT = "bad_input", "fault"


@contextlib.contextmanager
def tally(category: str, case: str) -> Iterator[dict]:
    """Register one case; the yielded record's "lost" is set by the test when it measures damage."""
    assert category in (BAD_INPUT, FAULT), category
    record = {"category": category, "case": case, "ok": False, "lost": 0}
    try:
        yield record
        record["ok"] = True
    finally:
        path = os.environ.get(TALLY_ENV)
        if path:
            line = (json.dumps(record) + "\n").encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write on O_APPEND: lines of parallel workers do not interleave
            finally:
                os.close(fd)


def summarize(path: str | os.PathLike) -> dict[str, int]:
    """Counts of a tally file: bad inputs tried and handled, faults injected and survived, data lost."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    bad = [r for r in rows if r["category"] == BAD_INPUT]
    faults = [r for r in rows if r["category"] == FAULT]
    return {
        "bad_inputs_tried": len(bad),
        "bad_inputs_handled": sum(r["ok"] for r in bad),
        "faults_injected": len(faults),
        "faults_survived": sum(r["ok"] for r in faults),
        "data_lost": sum(r["lost"] for r in rows),
        "data_lost_in_known_defects": sum(r["lost"] for r in rows if not r["ok"]),
    }


def markdown_table(counts: dict[str, int]) -> str:
    return "\n".join([
        "| Reliability check | Count |",
        "|---|---|",
        f"| Bad inputs tried (malformed files, params, checkpoints, vocabs, archives, CLI flags) | {counts['bad_inputs_tried']} |",
        f"| ... refused with one clear line, non-zero exit, no partial output | {counts['bad_inputs_handled']} |",
        f"| ... known defects (strict xfail tests naming the file and function to fix) | "
        f"{counts['bad_inputs_tried'] - counts['bad_inputs_handled']} |",
        f"| Faults injected (SIGKILL, hostile archives, server death, concurrent runs) | {counts['faults_injected']} |",
        f"| ... survived | {counts['faults_survived']} |",
        f"| Data lost (files damaged, written outside, or missing after recovery) | {counts['data_lost']} "
        f"({counts['data_lost_in_known_defects']} in known defects) |",
    ])


# ----------------------------------------------------------------------------------------------
# Running the commands and judging their failures.


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: the repo importable, one thread, no proxies, no tracking."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "BERT_DEBUG"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               BERT_TRACKING="off", PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra)
    return env


def run_python(args: Sequence[str], cwd: Optional[Path] = None, timeout: float = 120, **env: str
               ) -> subprocess.CompletedProcess:
    """``python ARGS`` in a child process (text output captured)."""
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=child_env(**env), capture_output=True,
                          text=True, timeout=timeout)


TRACEBACK = "Traceback (most recent call last)"


def error_lines(stderr: str) -> list[str]:
    """The error lines of a ``bert`` command (``bert X: error: ...``) or a stage (an ERROR log record)."""
    return [line for line in stderr.splitlines() if re.match(r"^bert( [\w-]+)?: error: ", line) or " ERROR " in line]


def assert_one_clear_error(returncode: int, stderr: str, *fragments: str) -> str:
    """A non-zero exit, no traceback, exactly one error line, and it holds every fragment."""
    assert returncode != 0, f"exit status 0 on bad input; stderr:\n{stderr[-2000:]}"
    assert TRACEBACK not in stderr, f"a traceback was shown:\n{stderr[-3000:]}"
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr[-3000:]}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in the error line: {lines[0]}"
    return lines[0]


def stage_errors(caplog) -> list[str]:
    """The ERROR records a stage's main() logged (in-process runs)."""
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def assert_stage_failed(rc: int, caplog, *fragments: str) -> str:
    """An in-process stage main() returned 1 with one one-line error record holding `fragments`."""
    errors = stage_errors(caplog)
    assert rc == 1, f"stage returned {rc}; errors: {errors}"
    assert len(errors) == 1, errors
    assert "\n" not in errors[0], f"the error spans several lines:\n{errors[0]}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in: {errors[0]}"
    return errors[0]


# ----------------------------------------------------------------------------------------------
# Files.


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (files) or "dir" / "link -> target", for every entry under root."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Entries removed, added or altered between two snapshots."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def make_tiny_model(folder: Path, vocab_file: Path, seed: int = 0, **config) -> Path:
    """A small random BERT (hidden 32, 2 layers) over a real vocab, in the project's folder format."""
    import shutil

    import torch

    from bert import BertConfig, BertModel

    words = sum(1 for _ in open(vocab_file, encoding="utf-8"))
    values = dict(vocab_size=words, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=128, type_vocab_size=2)
    values.update(config)
    torch.manual_seed(seed)
    BertModel(BertConfig(**values)).save_pretrained(folder)
    shutil.copyfile(vocab_file, folder / "vocab.txt")
    return folder


def write_params(path: Path, **replacements: str) -> Path:
    """The repo's params.yaml with text replaced (old -> new): `old` as it stands once in the file, else
    the `key: value` line of `old`'s key (which must occur once), so that defaults can change freely.
    """
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    for old, new in replacements.items():
        if text.count(old) == 1:
            text = text.replace(old, new)
            continue
        key = old.split(":", 1)[0].strip()
        pattern = re.compile(rf"(?m)^([ \t]*){re.escape(key)}:[^#\n]*?(?=[ \t]*(#|$))")
        found = pattern.findall(text)
        assert len(found) == 1, f"{key!r} occurs {len(found)} times in params.yaml"
        text = pattern.sub(lambda m: m.group(1) + new.strip(), text)
    path.write_text(text, encoding="utf-8")
    return path


SMALL_DATA = {"train_examples: 512": "train_examples: 24", "dev_examples: 200": "dev_examples: 8"}
# A short, checkpointed fine-tuning: 48 examples, batch 4, 2 epochs = 24 steps, a checkpoint every 2.
QUICK_TRAINING = {"train_examples: 512": "train_examples: 48", "dev_examples: 200": "dev_examples: 8",
                  "epochs: 3.0": "epochs: 2.0", "global_batch_size: 32": "global_batch_size: 4",
                  "checkpoint_every: 0 ": "checkpoint_every: 2 ", "log_every: 5 ": "log_every: 1 ",
                  "max_seq_length: 64": "max_seq_length: 32"}


def finetune_inputs(root: Path, vocab_file: Path, task: str = "demo-pair") -> dict[str, Path]:
    """params.yaml (QUICK_TRAINING), a tiny model folder and the task's features, made by the stages.

    Returns:
        {"params", "model", "raw", "features"} paths under root.
    """
    from stages import download, tokenize

    paths = {"params": write_params(root / "params.yaml", **QUICK_TRAINING), "model": root / "model",
             "raw": root / "raw", "features": root / "features"}
    make_tiny_model(paths["model"], vocab_file)
    common = ["--params", str(paths["params"]), "--task", task]
    assert download.main([*common, "--out", str(paths["raw"])]) == 0
    assert tokenize.main([*common, "--data", str(paths["raw"]), "--model", str(paths["model"]),
                          "--out", str(paths["features"])]) == 0
    return paths


def finetune_args(paths: dict[str, Path], out: Path, work: Path, task: str = "demo-pair", seed: int = 1) -> list[str]:
    """The arguments of stages.finetune for finetune_inputs' files."""
    return ["--params", str(paths["params"]), "--task", task, "--seed", str(seed), "--features",
            str(paths["features"]), "--model", str(paths["model"]), "--out", str(out), "--history",
            str(out.parent / f"{out.name}.history.json"), "--work", str(work)]


# ----------------------------------------------------------------------------------------------
# A slow HTTP server on 127.0.0.1.


class _Throttled:
    """A handler's output stream that sends `chunk` bytes at a time, `delay` seconds apart."""

    def __init__(self, raw, owner: "SlowServer"):
        self.raw, self.owner = raw, owner

    def write(self, data: bytes) -> int:
        for at in range(0, len(data), self.owner.chunk):
            self.raw.write(data[at:at + self.owner.chunk])
            self.raw.flush()
            if self.owner.delay:
                time.sleep(self.owner.delay)
        return len(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def slow_server(files: dict[str, bytes], chunk: int = 16384, delay: float = 0.0):
    """test_hub's Range-aware server on 127.0.0.1, sending `chunk` bytes per `delay` seconds.

    ``.delay`` and ``.chunk`` may be changed while it runs; ``.stop()`` ends it.
    """
    from test_hub import Server  # serves .files with Range support, logs (path, Range) in .log

    server = Server()
    server.files.update(files)
    server.chunk, server.delay = chunk, delay
    base = server.httpd.RequestHandlerClass

    class Slow(base):
        def setup(self):
            super().setup()
            self.wfile = _Throttled(self.wfile, server)

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client was killed: expected

    server.httpd.RequestHandlerClass = Slow
    server.httpd.daemon_threads = True
    return server


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/reliability_helpers.py TALLY.jsonl")
    counts = summarize(sys.argv[1])
    print(json.dumps(counts, indent=2))
    print()
    print(markdown_table(counts))
