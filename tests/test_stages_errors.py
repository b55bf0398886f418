"""Bad input and failures: missing inputs name the stage that makes them; a failing stage leaves nothing.

Runs the stages in-process on a tiny random BERT and a few dozen built-in examples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from bert import BertConfig, BertModel
from stages import convert, download, evaluate, finetune, report, tokenize
from stages._lib import figures, training

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TASK = "demo-mc"


@pytest.fixture(scope="module")
def run(tmp_path_factory, minilm_dir):
    """A finished tiny run: {name: path} of every stage's outputs, plus params."""
    root = tmp_path_factory.mktemp("run")
    model = root / "tiny"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(model)
    shutil.copyfile(minilm_dir / "vocab.txt", model / "vocab.txt")
    values = yaml.safe_load(REPO_PARAMS.read_text())
    values.update(tasks=[TASK], seeds=[3], search={})
    values["model"]["name"] = str(model)
    values["data"]["builtin"].update(train_examples=16, dev_examples=8)
    values["tokenize"]["max_seq_length"] = 24
    values["finetune"].update(epochs=1.0, global_batch_size=8, log_every=1)
    (root / "params.yaml").write_text(yaml.safe_dump(values))
    p = {k: root / v for k, v in dict(
        params="params.yaml", raw=f"raw/{TASK}", pretrained="pretrained", features=f"features/{TASK}",
        model="finetuned/seed3", history="history/demo-mc/seed3.json", work="work/seed3", eval="eval/demo-mc/seed3",
        baseline="baseline/demo-mc").items()}
    prm = ["--params", str(p["params"])]
    assert download.main(["--task", TASK, "--out", str(p["raw"]), *prm]) == 0
    assert convert.main(["--out", str(p["pretrained"]), *prm]) == 0
    assert tokenize.main(["--task", TASK, "--data", str(p["raw"]), "--model", str(p["pretrained"]),
                          "--out", str(p["features"]), *prm]) == 0
    assert finetune.main(_finetune_args(p)) == 0
    for model_dir, out, extra in ((p["model"], p["eval"], []), (p["pretrained"], p["baseline"], ["--untrained"])):
        assert evaluate.main(["--task", TASK, "--features", str(p["features"]), "--data", str(p["raw"]),
                              "--model", str(model_dir), "--out", str(out), *extra, *prm]) == 0
    return p


def _finetune_args(p, **override) -> list[str]:
    p = {**p, **override}
    return ["--task", TASK, "--seed", "3", "--features", str(p["features"]), "--model", str(p["pretrained"]),
            "--out", str(p["model"]), "--history", str(p["history"]), "--work", str(p["work"]),
            "--params", str(p["params"])]


def _report_args(p, out: Path) -> list[str]:
    root = p["params"].parent
    return ["--runs", str(root / "eval/{trial}"), "--baseline", str(root / "baseline/{task}"),
            "--history", str(root / "history/{trial}.json"), "--markdown", str(out / "report.md"),
            "--html", str(out / "report.html"), "--figures", str(out / "figures"),
            "--metrics", str(out / "metrics.json"), "--params", str(p["params"])]


def test_outputs_of_a_tiny_run(run):
    assert sorted(f.name for f in run["model"].iterdir()) == ["config.json", "model.safetensors",
                                                             "tokenizer_config.json", "training.json", "vocab.txt"]
    # what the model was fine-tuned for (bert/tasks/folder.py), from the features: bert predict needs no --task
    config = json.loads((run["model"] / "config.json").read_text())
    assert config["task"] == {"name": TASK, "kind": "multiple_choice", "max_seq_length": 24, "num_choices": 4}
    assert json.loads((run["model"] / "tokenizer_config.json").read_text()) == {"do_lower_case": True}
    history = json.loads(run["history"].read_text())
    assert [h["step"] for h in history] == [1, 2]
    assert sorted(f.name for f in run["work"].iterdir()) == ["fingerprint.json"]  # checkpoints dropped when done
    metrics = json.loads((run["eval"] / "metrics.json").read_text())
    assert metrics["kind"] == "multiple_choice" and len(metrics["confusion"]) == 4
    assert sum(map(sum, metrics["confusion"])) == 8 and len(json.loads((run["eval"] / "predictions.json").read_text())) == 8


def test_missing_inputs_name_their_stage(run, tmp_path, caplog):
    assert finetune.main(_finetune_args(run, pretrained=tmp_path / "none", model=tmp_path / "m")) == 1
    assert "missing pretrained model; it is produced by the convert stage" in caplog.text
    assert finetune.main(_finetune_args(run, features=tmp_path / "none", model=tmp_path / "m")) == 1
    assert "missing tokenized features; it is produced by the tokenize stage" in caplog.text
    assert evaluate.main(["--task", TASK, "--features", str(run["features"]), "--data", str(run["raw"]),
                          "--model", str(tmp_path / "none"), "--out", str(tmp_path / "e"),
                          "--params", str(run["params"])]) == 1
    assert "missing model; it is produced by the finetune stage" in caplog.text
    args = _report_args(run, tmp_path / "r")
    args[1] = str(tmp_path / "nowhere/{trial}")
    assert report.main(args) == 1
    assert "metrics.json: missing input; it is produced by the evaluate stage" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failing_finetune_leaves_no_outputs(run, tmp_path, monkeypatch, caplog):
    real = training.write_json

    def broken(path, value):
        if Path(path).name == "training.json":  # written after the weights, before the history
            raise OSError("disk full (simulated)")
        real(path, value)
    monkeypatch.setattr(training, "write_json", broken)
    out, history = tmp_path / "model", tmp_path / "history.json"
    assert finetune.main(_finetune_args(run, model=out, history=history, work=tmp_path / "work")) == 1
    assert "disk full (simulated)" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no model, no history, no temp files


def test_failing_report_leaves_no_outputs(run, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ValueError("cannot draw (simulated)")
    monkeypatch.setattr(figures, "confusion_matrix", broken)
    assert report.main(_report_args(run, tmp_path)) == 1
    assert "cannot draw (simulated)" in caplog.text
    assert list(tmp_path.iterdir()) == []  # the markdown, html, figures and metrics: none, nor temp files


def test_report(run, tmp_path):
    out = tmp_path / "reports"
    assert report.main(_report_args(run, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figures", "metrics.json", "report.html", "report.md"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["demo-mc-confusion.png", "demo-mc-training.png"]
    metrics = json.loads((out / "metrics.json").read_text())[TASK]
    run_metrics = json.loads((run["eval"] / "metrics.json").read_text())["metrics"]
    assert metrics["fine_tuned"]["acc"]["per_seed"] == {"3": run_metrics["acc"]}
    assert metrics["fine_tuned"]["acc"]["std"] is None  # one seed
    markdown = (out / "report.md").read_text()
    assert "| demo-mc | **acc** |" in markdown and "figures/demo-mc-training.png" in markdown
    assert "<table>" in (out / "report.html").read_text()


def test_features_from_another_vocab_are_refused(run, tmp_path, caplog):
    other = tmp_path / "other"
    shutil.copytree(run["pretrained"], other)
    with open(other / "vocab.txt", "a") as f:
        f.write("[extra]\n")
    assert finetune.main(_finetune_args(run, pretrained=other, model=tmp_path / "m", history=tmp_path / "h")) == 1
    assert "tokenized with another vocabulary" in caplog.text and not (tmp_path / "m").exists()
