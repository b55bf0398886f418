"""The real `dvc` on a temporary copy of the repo: what re-runs after which change.

A tiny random-initialised BERT (saved as a folder and named as model.name), one demo task, one
seed, a few dozen examples, one epoch: the test is about the DAG, not about accuracy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bert import BertConfig, BertModel
from pipeline.matrix import write as write_matrix

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's python, dvc and torchrun

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]


def _copy_repo(dest: Path) -> None:
    """The files git tracks (and untracked ones it does not ignore), as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith("reports/"):  # a run's metrics.json, which git may see
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def _tiny_model(folder: Path, vocab: Path) -> None:
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    shutil.copyfile(vocab, folder / "vocab.txt")


def _set_params(repo: Path, edit) -> None:
    path = repo / "params.yaml"
    values = yaml.safe_load(path.read_text())
    edit(values)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def _repro(repo: Path, *args: str) -> set[str]:
    """Run `dvc repro ARGS`; returns the stages that ran (or were restored from DVC's run cache), or
    with `--dry` the stages it would run."""
    # MLflow tracking off: this test is about the DAG (tests/test_tracking* cover the tracker)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "BERT_TRACKING": "off"}
    proc = subprocess.run([str(BIN / "dvc"), "repro", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout)) | \
        set(re.findall(r"Stage '([^']+)' is cached", proc.stdout))


def tiny_project(root: Path, minilm_dir: Path) -> Path:
    """A copy of the repo at root/repo set to the tiny run: one demo task, seed 7, root/tiny-bert."""
    repo = root / "repo"
    repo.mkdir()
    _copy_repo(repo)
    _tiny_model(root / "tiny-bert", minilm_dir / "vocab.txt")

    def edit(v):
        v["tasks"], v["seeds"], v["search"] = ["demo-pair"], [7], {}
        v["model"]["name"] = str(root / "tiny-bert")
        v["data"]["builtin"].update(train_examples=32, dev_examples=16)
        v["tokenize"]["max_seq_length"] = 32
        v["finetune"].update(epochs=1.0, global_batch_size=16, log_every=1)
        v["evaluate"]["batch_size"] = 16
    _set_params(repo, edit)
    write_matrix(repo)  # no search grid: one trial per task and seed
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory, minilm_dir):
    return tiny_project(tmp_path_factory.mktemp("dvc"), minilm_dir)


def test_dvc_reruns_exactly_what_changed(repo):
    everything = {"download@demo-pair", "convert", "tokenize@demo-pair", "finetune@demo-pair-7",
                  "baseline@demo-pair", "evaluate@demo-pair-7", "report", "predict@demo-pair"}
    assert _repro(repo) == everything
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"demo-pair"} and "acc" in metrics["demo-pair"]["fine_tuned"]
    assert (repo / "reports" / "report.html").is_file() and (repo / "reports" / "figures").is_dir()
    history = json.loads((repo / "reports" / "history" / "demo-pair" / "seed7.json").read_text())
    assert [p["step"] for p in history] == [1, 2]  # 32 examples / batch 16, one point per step
    # predict: the report's chosen seed on the generated test split (16 rows, as dev), in MRPC's submission format
    summary = json.loads((repo / "predictions" / "demo-pair" / "summary.json").read_text())
    assert summary["seed"] == metrics["demo-pair"]["chosen"]["seed"] == 7
    rows = (repo / "predictions" / "demo-pair" / "demo-pair.tsv").read_text().splitlines()
    test_ids = [line.split("\t")[0] for line in (repo / "data/raw/demo-pair/test.tsv").read_text().splitlines()[1:]]
    assert rows[0] == "index\tprediction" and [r.split("\t")[0] for r in rows[1:]] == test_ids == \
        [str(i) for i in range(16)]
    assert {r.split("\t")[1] for r in rows[1:]} <= {"0", "1"}

    assert _repro(repo) == set()  # nothing changed: nothing runs

    _set_params(repo, lambda v: v["finetune"].update(learning_rate=3e-4))
    assert _repro(repo) == {"finetune@demo-pair-7", "evaluate@demo-pair-7", "report", "predict@demo-pair"}

    _set_params(repo, lambda v: v["predict"].update(model="seed7"))
    assert _repro(repo) == {"predict@demo-pair"}  # the predict section is the predict stage's alone

    _set_params(repo, lambda v: v["tokenize"].update(max_seq_length=24))
    assert _repro(repo) == {"tokenize@demo-pair", "finetune@demo-pair-7", "baseline@demo-pair",
                            "evaluate@demo-pair-7", "report", "predict@demo-pair"}
    manifest = json.loads((repo / "data" / "features" / "demo-pair" / "train" / "manifest.json").read_text())
    assert manifest["max_seq_length"] == 24


def test_a_new_value_of_the_search_grid_trains_only_its_cells(repo):
    """search.learning_rate [3e-4] -> [3e-4, 1e-3]: the 3e-4 trial is up to date (its command and deps are the same),
    the 1e-3 trial runs, and the report re-runs over both (and predict, which reads the report's choice)."""
    _repro(repo)  # up to date first, whatever ran before
    _set_params(repo, lambda v: v.update(search={"learning_rate": [3e-4]}))
    write_matrix(repo)
    assert _repro(repo) == {"finetune@demo-pair-7-0.0003", "evaluate@demo-pair-7-0.0003", "report", "predict@demo-pair"}
    _set_params(repo, lambda v: v.update(search={"learning_rate": [3e-4, 1e-3]}))  # values: dvc.yaml stays as it is
    assert _repro(repo) == {"finetune@demo-pair-7-0.001", "evaluate@demo-pair-7-0.001", "report", "predict@demo-pair"}
    grid = json.loads((repo / "reports" / "metrics.json").read_text())["demo-pair"]["grid"]
    assert [cell["label"] for cell in grid] == ["learning_rate=0.0003", "learning_rate=0.001"]
    trained = json.loads((repo / "models/finetuned/demo-pair/lr0.001/seed7/training.json").read_text())
    assert trained["params"]["learning_rate"] == 1e-3
