"""Your own dataset under the real `dvc` on a copy of the repo: an edit of your CSV re-runs that task's stages
(and no stage of another task past its download), and the README's "Your own data" flow runs as written."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from test_dvc_pipeline import BIN, REPO, _copy_repo, _repro, _set_params, tiny_project

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]
ENTRY = {"kind": "classification", "file": "datasets/mine.csv", "split": {"dev": 0.25, "seed": 0},
         "text": ["review"], "label": "sentiment"}


def test_an_edit_of_your_csv_reruns_its_tasks_stages(tmp_path, minilm_dir):
    repo = tiny_project(tmp_path, minilm_dir)  # demo-pair, seed 7, a tiny random BERT
    lines = (REPO / "examples/reviews.csv").read_text().splitlines(keepends=True)[:41]  # the header and 40 rows
    (repo / "datasets/mine.csv").write_text("".join(lines))
    _set_params(repo, lambda v: v.update(tasks=["demo-pair", "mine"], datasets={"mine": ENTRY}))
    everything = {"convert", "report", *(f"{stage}@{task}" for stage in ("download", "tokenize", "baseline", "predict")
                                         for task in ("demo-pair", "mine")),
                  *(f"{stage}@{task}-7" for stage in ("finetune", "evaluate") for task in ("demo-pair", "mine"))}
    assert _repro(repo) == everything
    assert _repro(repo) == set()

    # flip one row's label: its task re-runs from download on; demo-pair's download re-runs (it watches
    # datasets/ too) but writes the same files, so nothing of demo-pair after it does
    flipped = lines[5].replace(",positive", ",NEW").replace(",negative", ",positive").replace(",NEW", ",negative")
    assert flipped != lines[5]
    (repo / "datasets/mine.csv").write_text("".join(lines[:5] + [flipped] + lines[6:]))
    assert _repro(repo) == {"download@demo-pair", "download@mine", "tokenize@mine", "finetune@mine-7",
                            "baseline@mine", "evaluate@mine-7", "report", "predict@mine"}
    normalised = [json.loads(line) for split in ("train", "dev")
                  for line in (repo / f"data/raw/mine/{split}.jsonl").read_text().splitlines()]
    row = next(r for r in normalised if r["id"].endswith("-6"))  # file line 6 = lines[5]
    assert row["label"] == flipped.rstrip("\n").rsplit(",", 1)[1]

    # a change of the entry (the split's seed): both downloads are out of date (the datasets section is their
    # param); DVC's dry run lists no more (what follows depends on what they write, as above)
    _set_params(repo, lambda v: v["datasets"]["mine"]["split"].update(seed=1))
    assert _repro(repo, "--dry") == {"download@demo-pair", "download@mine"}


def readme_flow() -> list[tuple[str, str]]:
    """The code blocks of the README's "Your own data" section, in order: (language, text)."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def test_the_readme_flow_runs_as_written(tmp_path):
    """The commands as the README writes them on a copy of the repo: `make run` is its recipe without the install
    (this venv's tools), `.venv/bin/bert` its entry module; the one params.yaml edit as the README says; one seed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    blocks = readme_flow()
    assert [lang for lang, _ in blocks] == ["bash", "yaml", "bash"], blocks
    make_run = re.search(r"^run:.*\n\t\$\(BIN_PATH\) \$\(PY\) (.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    make_run = "python " + make_run.replace("$(VENV)/bin/", "")
    # .venv/bin/bert is the console script of pyproject.toml's [project.scripts]: run its module (the venv's
    # script may predate the entry point, in a venv installed before it moved)
    entry = re.search(r'^bert = "([\w.]+):main"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "BERT_TRACKING": "off", "OMP_NUM_THREADS": "1"}

    def run(command: str) -> str:
        command = command.replace("make run", make_run).replace(".venv/bin/bert ", f"python -m {entry} ")
        done = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout

    run(blocks[0][1])
    params = (repo / "params.yaml").read_text()  # the edit: the tasks line and the datasets line replaced
    tasks_line, datasets_block = blocks[1][1].split("\n", 1)
    assert params.count("\ntasks: [") == 1 and params.count("\ndatasets: {}\n") == 1
    params = re.sub(r"\ntasks: \[.*\]\n", f"\n{tasks_line}\n", params)
    params = params.replace("\ndatasets: {}\n", f"\n{datasets_block}")
    (repo / "params.yaml").write_text(params)
    # the tiny config: one seed and one learning rate (those the README predicts with), shorter sequences
    _set_params(repo, lambda v: (v.update(seeds=[1], search={"learning_rate": [1e-4]}),
                                 v["tokenize"].update(max_seq_length=32)))
    out = run(blocks[2][1])
    predicted = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(predicted) == 1 and predicted[0]["text"] == "The kettle broke the first time I used it."
    shown = re.search(r"\{\"id\".*\}", (REPO / "README.md").read_text().split("\n## Your own data\n")[1]).group(0)
    assert predicted[0]["label"] == json.loads(shown)["label"]
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics) == {"reviews"} and (repo / "models/finetuned/reviews/lr0.0001/seed1/config.json").is_file()
