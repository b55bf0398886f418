"""The embedded offline demo learns: a reduced run of the default pipeline (packaged MiniLM, the three
built-in tasks, fewer examples) puts every task at least 20 points above its untrained baseline in
the report's metrics.json, and its majority-class baseline too (classification and multiple choice).

The stages run in-process in dvc.yaml's order with the paths dvc.yaml uses, from params.yaml with only
the sizes made smaller, and evaluation during training on (every 4 of the 16 steps, the best step kept): the
evaluate stage then finds, for each task kind, exactly the figure fine-tuning selected by.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stages import convert, download, evaluate, finetune, predict, report, tokenize
from stages._lib import builtin_data
from stages._lib.search import trial_folder

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["seeds"] = values["seeds"][:1]
    values["search"] = {}  # finetune's values, once per task: stages._lib.search.trial_folder is <task>/seed<seed>
    values["data"]["builtin"].update(train_examples=128, dev_examples=64)
    values["tokenize"]["max_seq_length"] = 48
    values["finetune"].update(eval_every=4, select="best")
    (root / "params.yaml").write_text(yaml.safe_dump(values))
    p = ["--params", str(root / "params.yaml")]
    seed = values["seeds"][0]
    r = lambda rel: str(root / rel)  # noqa: E731
    assert convert.main(["--out", r("models/pretrained"), *p]) == 0
    for task in values["tasks"]:
        raw, features = r(f"data/raw/{task}"), r(f"data/features/{task}")
        assert download.main(["--task", task, "--out", raw, *p]) == 0
        assert tokenize.main(["--task", task, "--data", raw, "--model", r("models/pretrained"), "--out", features, *p]) == 0
        folder = trial_folder(task, seed, {})
        model = r(f"models/finetuned/{folder}")
        assert finetune.main(["--task", task, "--seed", str(seed), "--features", features, "--model",
                              r("models/pretrained"), "--out", model, "--history",
                              r(f"reports/history/{folder}.json"), "--work", r(f"checkpoints/{task}"),
                              "--data", raw, *p]) == 0
        common = ["--task", task, "--features", features, "--data", raw, *p]
        assert evaluate.main([*common, "--model", model, "--out", r(f"reports/eval/{folder}")]) == 0
        assert evaluate.main([*common, "--model", r("models/pretrained"), "--untrained",
                              "--out", r(f"reports/baseline/{task}")]) == 0
    assert report.main(["--runs", r("reports/eval/{trial}"), "--baseline", r("reports/baseline/{task}"),
                        "--history", r("reports/history/{trial}.json"), "--markdown", r("reports/report.md"),
                        "--html", r("reports/report.html"), "--figures", r("reports/figures"),
                        "--metrics", r("reports/metrics.json"), *p]) == 0
    for task in values["tasks"]:
        assert predict.main(["--task", task, "--data", r(f"data/raw/{task}"), "--models", r(f"models/finetuned/{task}"),
                             "--report", r("reports/metrics.json"), "--out", r(f"predictions/{task}"), *p]) == 0
    return root, values


def test_every_demo_task_beats_its_baselines_by_20_points(demo):
    root, values = demo
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics) == set(values["tasks"]) == {"demo-pair", "demo-qa", "demo-mc"}
    for task, m in metrics.items():
        primary = m["primary"]
        ours = m["fine_tuned"][primary]["mean"]
        assert ours >= m["untrained"][primary] + 20, (task, primary, ours, m["untrained"])
        assert m["gain_over_untrained"] >= 20
        if m["majority"] is not None:
            assert m["fine_tuned"]["acc"]["mean"] >= m["majority"]["acc"] + 20, (task, m["majority"])
        assert not m["flagged_runs"]
    assert metrics["demo-qa"]["primary"] == "f1" and metrics["demo-pair"]["primary"] == "f1"
    markdown = (root / "reports" / "report.md").read_text()
    for task in metrics:
        assert f"| {task} | **{metrics[task]['primary']}** |" in markdown
    figures = sorted(p.name for p in (root / "reports" / "figures").iterdir())
    assert figures == ["demo-mc-confusion.png", "demo-mc-dev.png", "demo-mc-training.png", "demo-pair-confusion.png",
                       "demo-pair-dev.png", "demo-pair-training.png", "demo-qa-dev.png", "demo-qa-training.png"]
    seed = values["seeds"][0]
    for task in metrics:
        assert f"![{task} dev metric during training](figures/{task}-dev.png)" in markdown
        assert f"- {task} seed {seed}: dev_{metrics[task]['primary']} best " in markdown  # the kept step listed


def test_the_evaluate_stage_finds_the_figure_fine_tuning_selected_by(demo):
    """select: best wrote the weights of the best evaluation: evaluating them gives that figure again, for a
    classification, a SQuAD and a multiple-choice task (the dev curve's kept point is the report's result)."""
    root, values = demo
    seed = values["seeds"][0]
    for task in values["tasks"]:
        record = json.loads((root / "reports" / "eval" / task / f"seed{seed}" / "metrics.json").read_text())
        selection = record["training"]["selection"]
        history = json.loads((root / "reports" / "history" / task / f"seed{seed}.json").read_text())
        dev = {p["step"]: p[selection["metric"]] for p in history if selection["metric"] in p}
        assert sorted(dev) == [4, 8, 12, 16] and selection["evaluations"] == 4
        assert selection["best_value"] == max(dev.values()) == dev[selection["selected_step"]]
        assert selection["metric"] == f"dev_{record['primary']}"
        assert abs(record["metrics"][record["primary"]] - selection["best_value"]) <= 1e-6, (task, record["metrics"])


def test_the_predict_stage_scores_the_generated_test_splits_as_dev(demo):
    """The submissions of the predict stage, scored against the labels the generator drew for the test splits
    (the files leave them out): the test accuracy is the dev accuracy's, within 10 points (64 examples each)."""
    root, values = demo
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    b = values["data"]["builtin"]
    n, seed = b["dev_examples"], b["seed"]
    pair = builtin_data.pair_rows(builtin_data._rng("demo-pair", "test", seed), n, start_id=3_000_000)
    rows = (root / "predictions" / "demo-pair" / "demo-pair.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and [r.split("\t")[0] for r in rows[1:]] == [str(i) for i in range(n)]
    pair_acc = 100 * sum(r.split("\t")[1] == gold[0] for r, gold in zip(rows[1:], pair, strict=True)) / n
    mc = builtin_data.mc_rows(builtin_data._rng("demo-mc", "test", seed), n, "test")
    lines = (root / "predictions" / "demo-mc" / "predictions.csv").read_text().splitlines()
    assert lines[0] == ",pred"
    mc_acc = 100 * sum(line.split(",")[1] == gold[-1] for line, gold in zip(lines[1:], mc, strict=True)) / n
    for task, acc in (("demo-pair", pair_acc), ("demo-mc", mc_acc)):
        assert acc >= metrics[task]["fine_tuned"]["acc"]["mean"] - 10, (task, acc)
    answers = json.loads((root / "predictions" / "demo-qa" / "predictions.json").read_text())
    seed = values["seeds"][0]
    # demo-qa: the dev file's questions (SQuAD's test set is hidden), answered as evaluate answered them
    evaluated = root / "reports" / "eval" / "demo-qa" / f"seed{seed}" / "predictions.json"
    assert answers == json.loads(evaluated.read_text())
