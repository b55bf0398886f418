"""Bad settings through the commands: params.yaml through each stage, flags through ``bert``.

A stage given a bad params.yaml exits 1 with one line naming the file and the dotted key and what was
expected, and writes nothing. ``bert`` refuses bad flags (exit 2 for usage errors, 1 otherwise) in one
line, and never destroys what sits at its output path.
"""

from __future__ import annotations

import importlib
import json

import pytest

from reliability_helpers import (BAD_INPUT, REPO, assert_one_clear_error, assert_stage_failed, run_python,
                                 snapshot, tally, write_params)

# the line after params.yaml's `epochs:` (where an unclosed [ on it is found to be an error)
AFTER_EPOCHS = next(n for n, line in enumerate((REPO / "params.yaml").read_text().splitlines(), 2)
                    if line.startswith("  epochs:"))

# stage -> (the section it reads, its arguments with {out} where its output goes)
STAGES = {
    "convert": ["--out", "{out}"],
    "download": ["--task", "demo-pair", "--out", "{out}"],
    "tokenize": ["--task", "demo-pair", "--data", "{tmp}/raw", "--model", "{tmp}/model", "--out", "{out}"],
    "finetune": ["--task", "demo-pair", "--seed", "1", "--features", "{tmp}/f", "--model", "{tmp}/model",
                 "--out", "{out}", "--history", "{tmp}/h.json", "--work", "{tmp}/work"],
    "evaluate": ["--task", "demo-pair", "--features", "{tmp}/f", "--data", "{tmp}/raw", "--model", "{tmp}/model",
                 "--out", "{out}"],
    "report": ["--runs", "{tmp}/e/{{trial}}", "--baseline", "{tmp}/b/{{task}}", "--history",
               "{tmp}/h/{{trial}}.json", "--markdown", "{out}", "--html", "{tmp}/r.html",
               "--figures", "{tmp}/fig", "--metrics", "{tmp}/m.json"],
}

# (case, stage, replacements in params.yaml, fragments of the error line)
CASES = [
    ("unknown key", "finetune", {"  learning_rate: 1.0e-4": "  learning_rat: 1.0e-4"},
     ["unknown key finetune.learning_rat"]),
    ("missing key", "tokenize", {"  doc_stride: 32 ": "  # doc_stride: 32 "}, ["key tokenize.doc_stride is missing"]),
    ("unknown nested key", "download", {"    seed: 0\n": "    seed: 0\n    sede: 1\n"},
     ["unknown key data.builtin.sede"]),
    ("text for a number", "finetune", {"epochs: 3.0": "epochs: three"}, ["finetune.epochs", "expected a number"]),
    ("float for an integer", "finetune", {"nproc: 1 ": "nproc: 1.5 "}, ["finetune.nproc", "expected an integer"]),
    ("text for a bool", "tokenize", {"do_lower_case: true": "do_lower_case: 'yes'"},
     ["tokenize.do_lower_case", "expected true or false"]),
    ("integer for a bool", "finetune", {"resume: true": "resume: 1"}, ["finetune.resume", "expected true or false"]),
    ("unknown choice", "finetune", {"precision: fp32   ": "precision: fp8   "},
     ["finetune.precision", "expected one of fp32, fp16, bf16"]),
    ("list for a string", "convert", {"name: minilm-l6-h384-uncased": "name: [a, b]"}, ["model.name", "expected a string"]),
    ("empty value", "evaluate", {"n_best_size: 20": "n_best_size:"}, ["evaluate.n_best_size", "expected an integer"]),
    ("zero processes", "finetune", {"nproc: 1 ": "nproc: 0 "}, ["finetune.nproc", "expected at least 1"]),
    ("negative learning rate", "finetune", {"learning_rate: 1.0e-4": "learning_rate: -1.0e-4"},
     ["finetune.learning_rate", "expected more than 0"]),
    ("warmup of 1", "finetune", {"warmup_proportion: 0.1": "warmup_proportion: 1.0"},
     ["finetune.warmup_proportion", "expected less than 1"]),
    ("sequence too short", "tokenize", {"max_seq_length: 64": "max_seq_length: 4"},
     ["tokenize.max_seq_length", "expected at least 8"]),
    ("zero examples", "download", {"train_examples: 512": "train_examples: 0"},
     ["data.builtin.train_examples", "expected at least 1"]),
    ("zero batch", "evaluate", {"batch_size: 128": "batch_size: 0"}, ["evaluate.batch_size", "expected at least 1"]),
    ("unknown data source", "download", {"source: builtin": "source: ftp"}, ["data.source", "expected one of"]),
    ("tasks not a list", "report", {"tasks: [demo-pair, demo-qa, demo-mc]": "tasks: demo-pair"},
     ["tasks", "expected a list"]),
    ("repeated seeds", "report", {"seeds: [1, 2]": "seeds: [1, 1]"}, ["seeds", "repeated"]),
    ("a section that is a list", "finetune", {"finetune:\n": "finetune: []\nunused:\n"},
     ["finetune", "expected a mapping"]),
    ("a python tag (code) in YAML", "convert",
     {"name: minilm-l6-h384-uncased": "name: !!python/object/apply:os.system ['touch {tmp}/PWNED']"},
     ["not valid YAML"]),
    ("NaN learning rate", "finetune", {"learning_rate: 1.0e-4": "learning_rate: .nan"},
     ["finetune.learning_rate", "expected a finite number, got nan"]),
    ("infinite epochs", "finetune", {"epochs: 3.0": "epochs: .inf"}, ["finetune.epochs", "expected a finite number"]),
    ("NaN SQuAD threshold", "evaluate", {"null_score_diff_threshold: 0.0": "null_score_diff_threshold: .nan"},
     ["evaluate.null_score_diff_threshold", "expected a finite number"]),
    ("YAML syntax error", "finetune", {"epochs: 3.0": "epochs: [3.0"}, ["not valid YAML", f"line {AFTER_EPOCHS}"]),
    ("tab indentation", "tokenize", {"  max_seq_length: 64": "\tmax_seq_length: 64"}, ["not valid YAML", "line "]),
    ("a key written twice", "finetune", {"  epochs: 3.0": "  epochs: 3.0\n  epochs: 30.0"},
     ["key finetune.epochs is written twice"]),
    ("latin-1 bytes", "convert", {"# Every knob": "# <latin-1 e>very knob"}, ["line ", "not UTF-8 (byte 0xe9)"]),
]

def _args(stage: str, tmp_path, out) -> list[str]:
    return [a.format(out=out, tmp=tmp_path) for a in STAGES[stage]]


def _params(tmp_path, replacements: dict[str, str]):
    path = write_params(tmp_path / "params.yaml", **{k: v.format(tmp=tmp_path) for k, v in replacements.items()})
    path.write_bytes(path.read_bytes().replace(b"<latin-1 e>", b"\xe9"))  # a byte that is not UTF-8
    return path


def _run_stage_with(tmp_path, caplog, stage, replacements):
    params = _params(tmp_path, replacements)
    out = tmp_path / "out" / "result"
    (tmp_path / "out").mkdir()
    rc = importlib.import_module(f"stages.{stage}").main(["--params", str(params), *_args(stage, tmp_path, out)])
    return rc, params


@pytest.mark.parametrize("case, stage, replacements, fragments", CASES, ids=[c[0] for c in CASES])
def test_stage_refuses_bad_params(tmp_path, caplog, case, stage, replacements, fragments):
    with tally(BAD_INPUT, f"params.yaml through stages.{stage}: {case}"):
        rc, params = _run_stage_with(tmp_path, caplog, stage, replacements)
        assert_stage_failed(rc, caplog, str(params), *fragments)
        assert not (tmp_path / "PWNED").exists()
        assert snapshot(tmp_path / "out") == {}, "output written despite bad params"


def test_stage_command_line_bad_params(tmp_path):
    """``python -m stages.finetune`` itself: exit 1, one line, no traceback."""
    with tally(BAD_INPUT, "python -m stages.finetune: ill-typed key"):
        params = _params(tmp_path, {"global_batch_size: 32": "global_batch_size: thirty-two"})
        proc = run_python(["-m", "stages.finetune", "--params", str(params),
                           *_args("finetune", tmp_path, tmp_path / "out")])
        assert_one_clear_error(proc.returncode, proc.stderr, "finetune.global_batch_size", "expected an integer")
        assert not (tmp_path / "out").exists()


def test_stage_traceback_on_request(tmp_path):
    with tally(BAD_INPUT, "python -m stages.tokenize with BERT_DEBUG=1 shows the traceback"):
        params = _params(tmp_path, {"max_seq_length: 64": "max_seq_length: 4"})
        proc = run_python(["-m", "stages.tokenize", "--params", str(params), *_args("tokenize", tmp_path, tmp_path / "o")],
                          BERT_DEBUG="1")
        assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr


def test_max_seq_length_beyond_the_models_positions(tmp_path, caplog, minilm_dir):
    from stages import download, tokenize

    with tally(BAD_INPUT, "tokenize.max_seq_length 100000 (model has 512 positions)"):
        params = _params(tmp_path, {"max_seq_length: 64": "max_seq_length: 100000", "train_examples: 512":
                                    "train_examples: 8", "dev_examples: 200": "dev_examples: 8"})
        assert download.main(["--params", str(params), "--task", "demo-pair", "--out", str(tmp_path / "raw")]) == 0
        rc = tokenize.main(["--params", str(params), "--task", "demo-pair", "--data", str(tmp_path / "raw"),
                            "--model", str(minilm_dir), "--out", str(tmp_path / "features")])
        assert_stage_failed(rc, caplog, "max_seq_length", "512")


# ----------------------------------------------------------------------------------------------
# The bert command's flags.

FLAG_CASES = [  # (case, extra arguments, exit status, fragments)
    ("batch size 0", ["--batch-size", "0"], 2, ["--batch-size", "expected a positive integer, got 0"]),
    ("negative batch size", ["--batch-size=-3"], 2, ["--batch-size", "got -3"]),
    ("batch size not a number", ["--batch-size", "many"], 2, ["--batch-size", "'many'"]),
    ("max-seq-length 0", ["--max-seq-length", "0"], 2, ["--max-seq-length"]),
    ("max-seq-length 2", ["--max-seq-length", "2"], 1, ["max_seq_length must be at least 3"]),
    ("max-seq-length past the positions", ["--max-seq-length", "100000"], 1, ["max_position_embeddings (512)"]),
    ("layers not numbers", ["--layers", "a,b"], 1, ["--layers must be comma-separated integers"]),
    ("layer past the top", ["--layers=-1,6"], 1, ["--layers '-1,6'", "[-6, 5]"]),
    ("empty layers", ["--layers="], 1, ["--layers ''"]),
    ("unknown device", ["--device", "tpu:9"], 1, []),
    ("unknown option", ["--frobnicate"], 2, ["unrecognized arguments: --frobnicate"]),
]


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("The cat sat on the mat.\nIs it raining ||| No, it is not.\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case, extra, status, fragments", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_extract_features_flags(tmp_path, capsys, minilm_dir, sentences, case, extra, status, fragments):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"bert extract-features: {case}"):
        out = tmp_path / "out.jsonl"
        rc = main(["extract-features", "-q", "--input-file", str(sentences), "--output-file", str(out),
                   "--model", str(minilm_dir), *extra])
        assert rc == status
        assert_one_clear_error(rc, capsys.readouterr().err, *fragments)
        assert not out.exists()


@pytest.mark.parametrize("case", ["output is a folder", "output is the input"])
def test_extract_features_never_destroys_what_is_at_its_output(tmp_path, capsys, minilm_dir, sentences, case):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"bert extract-features: {case}") as rec:
        folder = tmp_path / "results"
        folder.mkdir()
        (folder / "precious.txt").write_text("a week of results")
        out = folder if case == "output is a folder" else sentences
        before = snapshot(tmp_path)
        rc = main(["extract-features", "-q", "--input-file", str(sentences), "--output-file", str(out),
                   "--model", str(minilm_dir)])
        rec["lost"] = len(snapshot(tmp_path).keys() ^ before.keys()) + sum(
            snapshot(tmp_path).get(k) != v for k, v in before.items())
        assert_one_clear_error(rc, capsys.readouterr().err, "--output-file", str(out))
        assert rec["lost"] == 0


@pytest.mark.parametrize("argv, status, fragments", [
    (["download", "bert-huge-uncased"], 1, ["'bert-huge-uncased' is neither a folder nor a known model name"]),
    (["download"], 1, ["name at least one model"]),
    (["convert-tf-checkpoint", "{tmp}/nothing", "{tmp}/out"], 1, ["no TF checkpoint here"]),
    (["convert-tf-checkpoint", "x", "{tmp}/out", "--head", "gpt"], 2, ["--head", "'gpt'"]),
    (["convert-tf-checkpoint", "x", "{tmp}/out", "--num-labels", "0"], 2, ["--num-labels"]),
    (["export-tf-checkpoint", "{tmp}/nothing", "{tmp}/out/ckpt"], 1, ["'{tmp}/nothing' is neither a folder"]),
    (["teleport"], 2, ["invalid choice: 'teleport'"]),
], ids=["unknown model name", "no model name", "missing checkpoint", "unknown head", "zero labels",
        "missing model folder", "unknown command"])
def test_other_commands(tmp_path, capsys, argv, status, fragments):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"bert {argv[0]}: {' '.join(argv[1:]) or 'no arguments'}"):
        rc = main([a.format(tmp=tmp_path) for a in argv])
        assert rc == status
        assert_one_clear_error(rc, capsys.readouterr().err, *[f.format(tmp=tmp_path) for f in fragments])
        assert not (tmp_path / "out").exists()


def test_bert_command_line(tmp_path, minilm_dir):
    """``python -m bert``: exit 1, one line and no traceback; with --debug, the traceback."""
    with tally(BAD_INPUT, "python -m bert extract-features: a config.json that is not JSON (with and without --debug)"):
        model = tmp_path / "model"
        model.mkdir()
        for name in ("vocab.txt", "model.safetensors"):
            (model / name).symlink_to(minilm_dir / name)
        (model / "config.json").write_text(json.dumps({"hidden_size": 384})[:-1])
        (tmp_path / "in.txt").write_text("hello\n")
        args = ["-m", "bert", "extract-features", "--input-file", str(tmp_path / "in.txt"), "--output-file",
                str(tmp_path / "o.jsonl"), "--model", str(model), "-q"]
        proc = run_python(args)
        assert_one_clear_error(proc.returncode, proc.stderr, str(model / "config.json"), "not valid JSON")
        debug = run_python([*args, "--debug"])
        assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
        assert not (tmp_path / "o.jsonl").exists()


def test_atomic_write_never_replaces_a_folder_by_a_file(tmp_path):
    from bert.io.fileio import atomic_write_text

    with tally(BAD_INPUT, "atomic_write_text onto an existing folder") as rec:
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "precious.txt").write_text("a week of results")
        try:
            atomic_write_text(tmp_path / "results", "{}")
        except OSError:
            pass
        rec["lost"] = int(not (tmp_path / "results" / "precious.txt").is_file())
        assert rec["lost"] == 0
