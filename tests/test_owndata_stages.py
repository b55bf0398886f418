"""Your own dataset through the real stages, one test per kind: files under datasets/, a params.yaml entry,
then download, tokenize, finetune, evaluate and the baseline (and for one, the report; for one, predict) in-process with the
packaged MiniLM (a few dozen rows, max_seq_length 32, one epoch).

Checked against what we did not write: the evaluate stage's metrics recomputed by scikit-learn and SciPy from
its predictions.json and the gold labels read from the user's files with Python's csv and json modules; the
fine-tuned folder loaded by HF transformers' AutoModelForSequenceClassification (its labels, problem_type and
logits); `bert predict` on that folder with no --task.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages import convert, download, evaluate, finetune, predict, report, tokenize

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
POSITIVE = ["great", "lovely", "superb", "excellent", "wonderful", "fantastic"]
NEGATIVE = ["awful", "terrible", "broken", "dreadful", "useless", "horrible"]
THINGS = ["phone", "lamp", "kettle", "chair", "book", "jacket", "bike", "radio"]
TOPICS = {"battery": "the battery died fast", "screen": "the screen cracked", "shipping": "it arrived late"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The convert stage's output of the packaged MiniLM (shared by the three kinds)."""
    root = tmp_path_factory.mktemp("pretrained")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(yaml.safe_load((REPO / "params.yaml").read_text())))
    assert convert.main(["--out", str(root / "models/pretrained"), "--params", str(params)]) == 0
    return root / "models/pretrained"


def project(root: Path, name: str, entry: dict) -> Path:
    """params.yaml of the repo with tasks: [name], the dataset's entry and a tiny run."""
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values.update(tasks=[name], seeds=[1], search={}, datasets={name: entry})  # search: {}: <task>/seed1
    values["tokenize"]["max_seq_length"] = 32
    values["finetune"].update(epochs=1.0, global_batch_size=8, learning_rate=5e-5, log_every=1)
    values["evaluate"]["batch_size"] = 16
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def run_stages(root: Path, task: str, pretrained: Path) -> Path:
    """download .. evaluate and the baseline, with dvc.yaml's paths under root; returns the model folder."""
    p = ["--params", str(root / "params.yaml")]
    r = lambda rel: str(root / rel)  # noqa: E731
    raw, features, model = r(f"data/raw/{task}"), r(f"data/features/{task}"), r(f"models/finetuned/{task}/seed1")
    assert download.main(["--task", task, "--out", raw, *p]) == 0
    assert tokenize.main(["--task", task, "--data", raw, "--model", str(pretrained), "--out", features, *p]) == 0
    assert finetune.main(["--task", task, "--seed", "1", "--features", features, "--model", str(pretrained),
                          "--out", model, "--history", r(f"reports/history/{task}/seed1.json"),
                          "--work", r(f"models/checkpoints/{task}/seed1"), *p]) == 0
    common = ["--task", task, "--features", features, "--data", raw, *p]
    assert evaluate.main([*common, "--model", model, "--out", r(f"reports/eval/{task}/seed1")]) == 0
    baseline = ["--model", str(pretrained), "--untrained", "--out", r(f"reports/baseline/{task}")]
    assert evaluate.main([*common, *baseline]) == 0
    return Path(model)


def reviews(n: int) -> list[tuple[str, str]]:
    """n made-up one-line reviews and their sentiment, alternating."""
    rows = []
    for i in range(n):
        words, label = (POSITIVE, "positive") if i % 2 == 0 else (NEGATIVE, "negative")
        rows.append((f"The {THINGS[i % len(THINGS)]} is {words[i % len(words)]}.", label))
    return rows


def hf_outputs(model: Path, texts: list[tuple[str, ...]]):
    """HF transformers' Auto classes on the folder: its config and the logits of `texts`."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(model).eval()
    lower = json.loads((model / "tokenizer_config.json").read_text())["do_lower_case"]
    tok = transformers.BertTokenizer(str(model / "vocab.txt"), do_lower_case=lower)
    firsts, seconds = [t[0] for t in texts], [t[1] for t in texts] if len(texts[0]) == 2 else None
    batch = tok(firsts, seconds, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return hf.config, hf(**batch).logits.numpy()


def bert_predict(model: Path, rows: list[dict], tmp: Path) -> list[dict]:
    """`bert predict --model FOLDER --input rows.jsonl` (no --task), in-process."""
    from bert.cli.commands import main

    source, out = tmp / "new.jsonl", tmp / "predicted.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["predict", "--model", str(model), "--input", str(source), "--output", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_classification_from_one_csv_cut_by_split(tmp_path, pretrained):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    (tmp_path / "datasets").mkdir()
    with open(tmp_path / "datasets/reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([("review", "sentiment"), *reviews(48)])
    project(tmp_path, "reviews", {"kind": "classification", "file": "datasets/reviews.csv",
                                  "split": {"dev": 0.25, "seed": 3}, "text": ["review"], "label": "sentiment"})
    model = run_stages(tmp_path, "reviews", pretrained)

    described = json.loads((tmp_path / "data/raw/reviews/dataset.json").read_text())
    assert described["labels"] == ["negative", "positive"]  # inferred: the file's names, sorted
    assert described["examples"] == {"train": 36, "dev": 12}
    # the gold labels from the user's file, by line (the normalised ids are "<split>-<line>")
    with open(tmp_path / "datasets/reviews.csv", newline="") as f:
        by_line = {i: row for i, row in enumerate(csv.reader(f), 1)}
    predictions = json.loads((tmp_path / "reports/eval/reviews/seed1/predictions.json").read_text())
    assert len(predictions) == 12 and all(p["id"].startswith("dev-") for p in predictions)
    gold = [by_line[int(p["id"].split("-")[1])][1] for p in predictions]
    assert [p["label"] for p in predictions] == gold
    metrics = json.loads((tmp_path / "reports/eval/reviews/seed1/metrics.json").read_text())
    assert metrics["kind"] == "single_classification" and metrics["primary"] == "acc"
    expected = 100 * sklearn_metrics.accuracy_score(gold, [p["prediction"] for p in predictions])
    assert metrics["metrics"]["acc"] == pytest.approx(expected, abs=1e-9)

    config = json.loads((model / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["problem_type"] == "single_label_classification"
    assert config["task"] == {"name": "reviews", "kind": "single_classification", "max_seq_length": 32, "window": None}
    texts = [(by_line[int(p["id"].split("-")[1])][0],) for p in predictions]
    hf_config, logits = hf_outputs(model, texts)
    assert hf_config.id2label == {0: "negative", 1: "positive"} and hf_config.num_labels == 2
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    assert np.abs(probs - np.array([p["probabilities"] for p in predictions])).max() < 1e-5

    predicted = bert_predict(model, [{"text": t[0]} for t in texts], tmp_path)
    assert [r["label"] for r in predicted] == [p["prediction"] for p in predictions]
    for r, p in zip(predicted, probs):
        assert [r["probabilities"]["negative"], r["probabilities"]["positive"]] == pytest.approx(p, abs=1e-5)


def test_multi_label_from_jsonl_and_csv_with_given_labels(tmp_path, pretrained):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    names = ["shipping", "battery", "screen"]  # given: this order, not sorted
    rows = []
    for i in range(40):
        topics = [t for j, t in enumerate(TOPICS) if (i >> j) & 1] or ["battery"]
        rows.append({"text": f"My {THINGS[i % len(THINGS)]}: " + " and ".join(TOPICS[t] for t in topics) + ".",
                     "tags": topics})
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    with open(tmp_path / "datasets/dev.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "tags"), *((r["text"], "|".join(r["tags"])) for r in rows[30:])])
    project(tmp_path, "complaints", {"kind": "multi-label", "train": "datasets/train.jsonl", "dev": "datasets/dev.csv",
                                     "text": ["text"], "label": "tags", "labels": names, "label_separator": "|"})
    model = run_stages(tmp_path, "complaints", pretrained)

    predictions = json.loads((tmp_path / "reports/eval/complaints/seed1/predictions.json").read_text())
    gold = [[int(n in r["tags"]) for n in names] for r in rows[30:]]
    assert [[int(n in p["label"]) for n in names] for p in predictions] == gold
    pred = [[int(n in p["prediction"]) for n in names] for p in predictions]
    metrics = json.loads((tmp_path / "reports/eval/complaints/seed1/metrics.json").read_text())
    assert metrics["primary"] == "micro_f1" and metrics["kind"] == "multi_label_classification"
    for average in ("micro", "macro"):
        expected = 100 * sklearn_metrics.f1_score(np.array(gold), np.array(pred), average=average, zero_division=0)
        assert metrics["metrics"][f"{average}_f1"] == pytest.approx(expected, abs=1e-9)
    assert metrics["metrics"]["exact_match"] == pytest.approx(100 * sklearn_metrics.accuracy_score(gold, pred))
    baseline = json.loads((tmp_path / "reports/baseline/complaints/metrics.json").read_text())
    assert set(baseline["majority"]["metrics"]) == {"micro_f1", "macro_f1", "exact_match"}
    r = lambda rel: str(tmp_path / rel)  # noqa: E731
    assert report.main(["--runs", r("reports/eval/{trial}"), "--baseline", r("reports/baseline/{task}"),
                        "--history", r("reports/history/{trial}.json"), "--markdown", r("reports/report.md"),
                        "--html", r("reports/report.html"), "--figures", r("reports/figures"),
                        "--metrics", r("reports/metrics.json"), "--params", r("params.yaml")]) == 0
    summary = json.loads((tmp_path / "reports/metrics.json").read_text())["complaints"]
    assert summary["primary"] == "micro_f1"
    assert summary["fine_tuned"]["micro_f1"]["mean"] == metrics["metrics"]["micro_f1"]
    assert "| complaints | **micro_f1** |" in (tmp_path / "reports/report.md").read_text()

    config = json.loads((model / "config.json").read_text())
    assert config["id2label"] == {"0": "shipping", "1": "battery", "2": "screen"}
    assert config["problem_type"] == "multi_label_classification"
    hf_config, logits = hf_outputs(model, [(r["text"],) for r in rows[30:]])
    assert hf_config.problem_type == "multi_label_classification"
    assert hf_config.id2label == {0: "shipping", 1: "battery", 2: "screen"}
    probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
    assert np.abs(probs - np.array([p["probabilities"] for p in predictions])).max() < 1e-5
    predicted = bert_predict(model, [{"text": r["text"]} for r in rows[30:]], tmp_path)
    assert [r["labels"] for r in predicted] == [p["prediction"] for p in predictions]


def test_regression_from_tsv_pairs_with_a_test_file(tmp_path, pretrained):
    stats = pytest.importorskip("scipy.stats")
    header = "first\tsecond\tscore\n"
    lines = [f"The {THINGS[i % 8]} is {POSITIVE[i % 6]}.\tThe {THINGS[(i * 3) % 8]} is {NEGATIVE[i % 6]}.\t"
             f"{(i * 7) % 11 / 2:g}\n" for i in range(44)]
    (tmp_path / "datasets").mkdir()
    for name, part in (("train", lines[:30]), ("dev", lines[30:40]), ("test", lines[40:])):
        (tmp_path / f"datasets/{name}.tsv").write_text(header + "".join(part))
    project(tmp_path, "similar", {"kind": "regression", "train": "datasets/train.tsv", "dev": "datasets/dev.tsv",
                                  "test": "datasets/test.tsv", "text": ["first", "second"], "label": "score"})
    model = run_stages(tmp_path, "similar", pretrained)

    test_rows = (tmp_path / "data/raw/similar/test.jsonl").read_text().splitlines()
    assert [json.loads(r)["label"] for r in test_rows] == [float(line.split("\t")[2]) for line in lines[40:]]
    predictions = json.loads((tmp_path / "reports/eval/similar/seed1/predictions.json").read_text())
    gold = [float(line.rstrip("\n").split("\t")[2]) for line in lines[30:40]]
    assert [p["label"] for p in predictions] == pytest.approx(gold)
    pred = [p["prediction"] for p in predictions]
    metrics = json.loads((tmp_path / "reports/eval/similar/seed1/metrics.json").read_text())
    assert metrics["primary"] == "spearmanr"
    assert metrics["metrics"]["pearson"] == pytest.approx(100 * stats.pearsonr(pred, gold)[0], abs=1e-6)
    assert metrics["metrics"]["spearmanr"] == pytest.approx(100 * stats.spearmanr(pred, gold)[0], abs=1e-6)

    config = json.loads((model / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["task"]["kind"] == "regression"
    assert "id2label" not in config or len(config["id2label"]) == 1
    pairs = [tuple(line.split("\t")[:2]) for line in lines[30:40]]
    hf_config, logits = hf_outputs(model, pairs)
    assert hf_config.problem_type == "regression" and hf_config.num_labels == 1
    assert np.abs(logits[:, 0] - np.array(pred)).max() < 1e-4
    predicted = bert_predict(model, [{"text_a": a, "text_b": b} for a, b in pairs], tmp_path)
    assert [r["score"] for r in predicted] == pytest.approx(pred, abs=1e-4)

    # the predict stage on the test split (predict.model: seed1, as no report ran): bert predict's lines, with
    # the ids and scores bert predict gives for those rows
    params = tmp_path / "params.yaml"
    values = yaml.safe_load(params.read_text())
    values["predict"]["model"] = "seed1"
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    out = tmp_path / "predictions/similar"
    assert predict.main(["--task", "similar", "--data", str(tmp_path / "data/raw/similar"), "--models",
                         str(model.parent), "--report", str(tmp_path / "reports/metrics.json"), "--out", str(out),
                         "--params", str(params)]) == 0
    lines_out = [json.loads(r) for r in (out / "predictions.jsonl").read_text().splitlines()]
    test_pairs = [tuple(line.split("\t")[:2]) for line in lines[40:]]
    assert [(r["text_a"], r["text_b"]) for r in lines_out] == test_pairs
    expected = bert_predict(model, [{"text_a": a, "text_b": b} for a, b in test_pairs], tmp_path)
    assert [r["score"] for r in lines_out] == pytest.approx([r["score"] for r in expected], abs=1e-6)
    assert json.loads((out / "summary.json").read_text())["files"] == {"predictions.jsonl": 4}
