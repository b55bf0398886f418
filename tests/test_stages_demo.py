"""The embedded offline demo learns: a reduced run of the default pipeline (packaged MiniLM, the three
built-in tasks, fewer examples) puts every task at least 20 points above its untrained baseline in
the report's metrics.json, and its majority-class baseline too (classification and multiple choice).

The stages run in-process in dvc.yaml's order with the paths dvc.yaml uses, from params.yaml with only
the sizes made smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stages import convert, download, evaluate, finetune, report, tokenize
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
                              r(f"reports/history/{folder}.json"), "--work", r(f"checkpoints/{task}"), *p]) == 0
        common = ["--task", task, "--features", features, "--data", raw, *p]
        assert evaluate.main([*common, "--model", model, "--out", r(f"reports/eval/{folder}")]) == 0
        assert evaluate.main([*common, "--model", r("models/pretrained"), "--untrained",
                              "--out", r(f"reports/baseline/{task}")]) == 0
    assert report.main(["--runs", r("reports/eval/{trial}"), "--baseline", r("reports/baseline/{task}"),
                        "--history", r("reports/history/{trial}.json"), "--markdown", r("reports/report.md"),
                        "--html", r("reports/report.html"), "--figures", r("reports/figures"),
                        "--metrics", r("reports/metrics.json"), *p]) == 0
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
    assert figures == ["demo-mc-confusion.png", "demo-mc-training.png", "demo-pair-confusion.png",
                       "demo-pair-training.png", "demo-qa-training.png"]
