"""Long texts through the real stages (tokenize.windows): a task whose label is written only past
max_seq_length is learned with windows and not without, evaluate's combined metrics are `bert predict`'s on
the same model and dev file, and the predict stage's submission says what `bert predict` says.

The task: SST-2's file layout, each sentence 11 filler words, then "good" or "awful" (the label), then 4 more
filler words. max_seq_length 12 keeps 10 words: truncated, the label word is never seen; windows 4 words apart
(at 0, 4, 8) show it to two of an example's three windows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from bert.cli.commands import main as bert_main
from stages import evaluate, finetune, predict, tokenize

REPO = Path(__file__).resolve().parents[1]
FILLER = ("the river house blue green small town road hill car tree sun moon water stone city door window "
          "garden table chair book paper light").split()
LABEL_WORDS = {"0": "awful", "1": "good"}

pytestmark = [pytest.mark.slow]


def _sentence(rng: random.Random, label: str) -> str:
    words = [rng.choice(FILLER) for _ in range(11)] + [LABEL_WORDS[label]] + [rng.choice(FILLER) for _ in range(4)]
    return " ".join(words)


def _write_task(folder: Path) -> None:
    """train.tsv, dev.tsv (sentence, label) and test.tsv (index, sentence) in SST-2's layout."""
    folder.mkdir(parents=True)
    rng = random.Random(5)
    for split, n in (("train", 64), ("dev", 48), ("test", 24)):
        labels = [str(i % 2) for i in range(n)]
        rng.shuffle(labels)
        if split == "test":
            rows = ["index\tsentence", *(f"{i}\t{_sentence(rng, y)}" for i, y in enumerate(labels))]
            (folder / "test_labels.json").write_text(json.dumps(labels))
        else:
            rows = ["sentence\tlabel", *(f"{_sentence(rng, y)}\t{y}" for y in labels)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def _run_task(root: Path, model: Path, data: Path, stride: int) -> Path:
    """tokenize, finetune (seed 1) and evaluate sst2 with tokenize.windows.stride `stride`; returns root."""
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["tasks"], values["seeds"] = ["sst2"], [1]
    values["tokenize"].update(max_seq_length=12, windows={"stride": stride, "combine": "mean"})
    values["finetune"].update(epochs=3.0, learning_rate=2e-4, global_batch_size=16, log_every=100)
    values["evaluate"]["batch_size"] = 32
    values["predict"].update(model="seed1", batch_size=32)
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(values))
    p = ["--params", str(root / "params.yaml")]
    features, tuned = root / "features", root / "models" / "seed1"
    assert tokenize.main(["--task", "sst2", "--data", str(data), "--model", str(model), "--out", str(features),
                          *p]) == 0
    assert finetune.main(["--task", "sst2", "--seed", "1", "--features", str(features), "--model", str(model),
                          "--out", str(tuned), "--history", str(root / "history.json"), "--work", str(root / "work"),
                          *p]) == 0
    assert evaluate.main(["--task", "sst2", "--features", str(features), "--data", str(data), "--model", str(tuned),
                          "--out", str(root / "eval"), *p]) == 0
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("windows")
    data = root / "data"
    _write_task(data)
    return data, _run_task(root / "windows", minilm_dir, data, stride=4), _run_task(root / "cut", minilm_dir, data, 0)


def test_the_label_past_max_seq_length_is_learned_with_windows_only(runs):
    _, windowed, cut = runs
    with_windows = json.loads((windowed / "eval" / "metrics.json").read_text())
    without = json.loads((cut / "eval" / "metrics.json").read_text())
    manifest = json.loads((windowed / "features" / "dev" / "manifest.json").read_text())
    assert manifest["extra"]["window"] == {"stride": 4, "combine": "mean"}
    assert (manifest["num_examples"], manifest["num_features"]) == (48, 48 * 3)  # 16 words: windows at 0, 4, 8
    assert with_windows["dev_examples"] == without["dev_examples"] == 48
    assert with_windows["metrics"]["acc"] >= 95.0, with_windows["metrics"]
    assert without["metrics"]["acc"] <= 75.0, without["metrics"]  # chance: the label word is never seen


def test_evaluate_combines_windows_as_bert_predict_does(runs, tmp_path):
    data, windowed, _ = runs
    model = windowed / "models" / "seed1"
    config = json.loads((model / "config.json").read_text())
    assert config["task"]["window"] == {"stride": 4, "combine": "mean"}  # finetune wrote what tokenize did
    out = tmp_path / "dev.jsonl"
    assert bert_main(["predict", "--model", str(model), "--input", str(data / "dev.tsv"), "--output", str(out),
                      "--quiet"]) == 0
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    rows = json.loads((windowed / "eval" / "predictions.json").read_text())
    assert len(predicted) == len(rows) == 48
    assert [r["prediction"] for r in rows] == [p["label"] for p in predicted]
    # both rounded to 6 decimals: a float32 and a float64 softmax may round 1e-6 apart
    for row, p in zip(rows, predicted, strict=True):
        assert row["probabilities"] == pytest.approx([p["probabilities"][k] for k in ("0", "1")], abs=2e-6)
    gold = [r["label"] for r in rows]
    acc = 100.0 * sum(g == p["label"] for g, p in zip(gold, predicted, strict=True)) / len(gold)
    assert json.loads((windowed / "eval" / "metrics.json").read_text())["metrics"]["acc"] == pytest.approx(acc,
                                                                                                           abs=1e-9)


def test_the_predict_stage_submits_what_bert_predict_says(runs, tmp_path):
    data, windowed, _ = runs
    report = tmp_path / "metrics.json"
    report.write_text("{}")
    assert predict.main(["--task", "sst2", "--data", str(data), "--models", str(windowed / "models"), "--report",
                         str(report), "--out", str(tmp_path / "out"), "--params", str(windowed / "params.yaml")]) == 0
    rows = (tmp_path / "out" / "SST-2.tsv").read_text().splitlines()
    out = tmp_path / "test.jsonl"
    assert bert_main(["predict", "--model", str(windowed / "models" / "seed1"), "--input", str(data / "test.tsv"),
                      "--output", str(out), "--quiet"]) == 0
    said = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == "index\tprediction"
    assert rows[1:] == [f"{p['id']}\t{p['label']}" for p in said]
    truth = json.loads((data / "test_labels.json").read_text())
    assert sum(r.split("\t")[1] == y for r, y in zip(rows[1:], truth, strict=True)) >= 0.9 * len(truth)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["seed"] == 1 and summary["files"] == {"SST-2.tsv": 24} and summary["split"] == "test"
