"""The paper's fine-tuning protocol: params.yaml's search grid crossed with seeds as DVC matrix stages, the report's
choice (the best mean over seeds, runs at the majority baseline left out) and the champion (its best seed).

The grid is checked against the real `dvc` (its stage names, paths and commands from a copy of the repo's
dvc.yaml), the stage's own parser reading those commands, and the real MLflow (a sqlite store); the choice
against means computed by hand on evaluate records written here.
"""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from test_tracking import mlflow_client, tiny_model, tool_env  # noqa: F401 (tiny_model: a fixture)

REPO = Path(__file__).resolve().parents[1]
BASE_LR = 1.0e-4  # params.yaml's finetune.learning_rate


def _project(root: Path, search: str, tasks: str = "[demo-pair, demo-mc]", seeds: str = "[1, 2]") -> Path:
    """A DVC project (no git) with the repo's dvc.yaml, parsing config and params.yaml, its grid, tasks and seeds set."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=tool_env(), check=True)
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")  # the repo's parsing.bool: how ${item} writes a switch
    subprocess.run([sys.executable, "-m", "dvc", "config", "parsing.bool", config["parsing"]["bool"]], cwd=root,
                   env=tool_env(), check=True)
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    grid = "search:\n  learning_rate: [1.0e-4, 5.0e-5]\n"
    for old, new in ((grid, search), ("tasks: [demo-pair, demo-qa, demo-mc]", f"tasks: {tasks}"),
                     ("seeds: [1, 2]", f"seeds: {seeds}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (root / "params.yaml").write_text(text, encoding="utf-8")
    return root


def _matrix(root: Path, action: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.matrix", action, "--root", str(root)], cwd=REPO,
                          env=tool_env(PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)


def _dvc_stages(root: Path) -> dict[str, str]:
    """`dvc stage list`: stage name -> what it says of the stage."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=root, env=tool_env(),
                          capture_output=True, text=True, timeout=120, check=True)
    return dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())


def _stage_part(cmd: str) -> list[str]:
    """The finetune command's arguments of the stage module (after `-m stages.finetune`)."""
    tokens = shlex.split(cmd)
    return tokens[tokens.index("stages.finetune") + 1:]


def test_the_grid_is_crossed_with_tasks_and_seeds_as_dvc_matrix_stages(tmp_path):
    from pipeline.dvcgraph import load_pipeline
    from pipeline.stagerun import StageRun
    from pipeline.tracking import read_params
    from pipeline.trials import settings_hash
    from stages._lib.params import read_params_file, section_values
    from stages._lib.search import read_search, trials
    from stages.finetune import Finetune

    root = _project(tmp_path / "p", "search:\n  learning_rate: [5.0e-5, 3.0e-5]\n  group_by_length: [true, false]\n")
    stale = _matrix(root, "check")  # the repo's dvc.yaml crosses learning_rate only
    assert stale.returncode == 1 and "run `python -m pipeline.matrix write`" in stale.stdout, stale.stdout
    assert _matrix(root, "write").returncode == 0 and _matrix(root, "check").returncode == 0

    listed = _dvc_stages(root)
    assert [n for n in listed if n.startswith("finetune@")] == [
        f"finetune@{task}-{seed}-{lr}-{flag}" for task in ("demo-pair", "demo-mc") for seed in (1, 2)
        for lr in ("5e-05", "3e-05") for flag in ("True", "False")]
    assert listed["evaluate@demo-mc-2-3e-05-False"].startswith("Outputs reports/eval/demo-mc/lr3e-05-group_by_length"
                                                               "false/seed2")
    grid = trials(["demo-pair", "demo-mc"], [1, 2], read_search(read_params_file(root / "params.yaml")))
    assert len(grid) == 16
    specs = {s.name: s for s in load_pipeline(root)}
    for trial in grid:  # the one naming function agrees with DVC on every name and path
        finetune, evaluate = specs[f"finetune@{trial.stage_suffix}"], specs[f"evaluate@{trial.stage_suffix}"]
        assert f"models/finetuned/{trial.folder}" in finetune.outs and f"models/finetuned/{trial.folder}" in evaluate.deps
        assert f"reports/history/{trial.folder}.json" in finetune.plots
        assert f"reports/eval/{trial.folder}" in evaluate.outs

    # the trial's command, as DVC resolves it, read by the stage's own parser: the section it trains with
    trial = next(t for t in grid if t.stage_suffix == "demo-mc-2-3e-05-False")
    spec = specs["finetune@demo-mc-2-3e-05-False"]
    stage = Finetune("finetune\n")
    args = stage.parser().parse_args([*_stage_part(spec.cmd), "--params", str(root / "params.yaml")])
    used = section_values(stage.load_params(args))
    base = read_params_file(root / "params.yaml")["finetune"]
    assert (args.task, args.seed) == ("demo-mc", 2) and base["learning_rate"] == BASE_LR and base["group_by_length"]
    assert used == {**base, "learning_rate": 3e-05, "group_by_length": False}
    assert trial.setting == {"learning_rate": 3e-05, "group_by_length": False}
    # what MLflow records of it (its params and trial key) is that section, not params.yaml's base values
    wrapped = shlex.split(spec.cmd)
    tracked = StageRun(root, spec.name, under_dvc=True, cmd=wrapped[wrapped.index("--") + 1:])  # pipeline.track's
    tracked.spec, tracked.specs, tracked.values = spec, list(specs.values()), read_params(root)
    assert tracked._training_section() == ("finetune", used)
    assert settings_hash(tracked._training_section()[1]) == settings_hash(used) != settings_hash(base)


def test_no_search_is_one_cell_the_finetune_section(tmp_path):
    """`search: {}`: the stages, paths and commands of the pipeline without a grid."""
    root = _project(tmp_path / "p", "search: {}\n", tasks="[demo-pair]", seeds="[7]")
    assert _matrix(root, "write").returncode == 0
    listed = _dvc_stages(root)
    assert listed["finetune@demo-pair-7"].startswith("Outputs models/finetuned/demo-pair/seed7")
    assert listed["evaluate@demo-pair-7"].startswith("Outputs reports/eval/demo-pair/seed7")
    from pipeline.dvcgraph import load_pipeline

    (spec,) = [s for s in load_pipeline(root) if s.name.startswith("finetune@")]
    assert _stage_part(spec.cmd)[:4] == ["--task", "demo-pair", "--seed", "7"]
    assert "--learning_rate" not in spec.cmd
    assert _matrix(root, "check").returncode == 0


def test_under_dvc_a_grid_key_without_its_override_is_refused(tmp_path, monkeypatch, caplog):
    """A key added to the grid but not to dvc.yaml's matrix (`dvc exp run -S search.epochs=[2,3]`): the finetune
    stage refuses to train finetune's value in its place, before loading anything."""
    from stages import finetune

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text(encoding="utf-8").replace(
        "search:\n  learning_rate: [1.0e-4, 5.0e-5]\n", "search:\n  learning_rate: [1.0e-4]\n  epochs: [2.0, 3.0]\n"))
    argv = ["--task", "demo-pair", "--seed", "1", "--learning_rate", "1e-4", "--features", str(tmp_path / "f"),
            "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--history", str(tmp_path / "h.json"),
            "--work", str(tmp_path / "w"), "--params", str(params)]
    monkeypatch.setenv("DVC_STAGE", "finetune@demo-pair-1-0.0001")
    assert finetune.main(argv) == 1
    assert (f"{params}: search.epochs: dvc.yaml's finetune matrix does not cross it (the command has no --epochs): "
            "run `python -m pipeline.matrix write`") in caplog.text
    monkeypatch.delenv("DVC_STAGE")  # by hand, outside DVC: the command's overrides are the trial
    caplog.clear()
    assert finetune.main(argv) == 1 and "missing pretrained model" in caplog.text


# ---------------------------------------------------------------------------------------------
# The choice, on evaluate records written here

MAJORITY_ACC = 50.0  # the baseline's majority-class accuracy
# setting -> seed -> (f1, acc): lr1e-4 holds the best single run (95) but the worse mean; lr5e-5's seed 3 sits at
# the majority baseline (acc 50.5, within the tolerance of 1 point) and is left out of its mean
RESULTS = {1.0e-4: {1: (95.0, 90.0), 2: (70.0, 70.0), 3: (72.0, 71.0)},
           5.0e-5: {1: (86.0, 84.0), 2: (88.0, 85.0), 3: (40.0, 50.5)}}


def _record(f1: float, acc: float, seed: int, lr: float) -> dict:
    return {"primary": "f1", "metrics": {"f1": f1, "acc": acc}, "kind": "pair_classification", "dev_examples": 200,
            "eval_seconds": 1.0, "eval_sequences_per_second": 200.0, "predicted_counts": [90, 110],
            "training": {"seconds": 2.0, "sequences_per_second": 96.0, "seed": seed, "world_size": 1,
                         "params": {"learning_rate": lr}, "environment": {"device": "cpu"}}}


def _write_records(root: Path, task: str = "demo-pair") -> None:
    from stages._lib.search import trial_folder

    for lr, seeds in RESULTS.items():
        for seed, (f1, acc) in seeds.items():
            folder = root / "reports/eval" / trial_folder(task, seed, {"learning_rate": lr})
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(_record(f1, acc, seed, lr)))
            history = root / "reports/history" / (trial_folder(task, seed, {"learning_rate": lr}) + ".json")
            history.parent.mkdir(parents=True, exist_ok=True)
            history.write_text(json.dumps([{"step": 1, "loss": 0.7, "learning_rate": lr}]))
    baseline = root / "reports/baseline" / task
    baseline.mkdir(parents=True)
    (baseline / "metrics.json").write_text(json.dumps({"primary": "f1", "metrics": {"f1": 30.0, "acc": 48.0},
                                                       "majority": {"class": "1", "metrics": {"acc": MAJORITY_ACC}}}))


def test_the_best_mean_wins_not_the_best_single_run():
    from stages._lib.search import Trial
    from stages.report import summarize_search

    runs = {Trial("t", seed, {"learning_rate": lr}): _record(f1, acc, seed, lr)
            for lr, seeds in RESULTS.items() for seed, (f1, acc) in seeds.items()}
    folders = {trial: f"reports/eval/{trial.folder}" for trial in runs}
    baseline = {"metrics": {"f1": 30.0, "acc": 48.0}, "majority": {"class": "1", "metrics": {"acc": MAJORITY_ACC}}}
    summary = summarize_search("t", runs, baseline, 1.0, folders)
    high, low = summary["grid"]
    # by hand: lr1e-4 (95 + 70 + 72) / 3 = 79.0; lr5e-5 (86 + 88) / 2 = 87.0, seed 3 left out
    assert (high["label"], high["mean"], high["n"]) == ("learning_rate=0.0001", pytest.approx(79.0, abs=1e-9), 3)
    assert high["std"] == pytest.approx(statistics.stdev([95.0, 70.0, 72.0]), abs=1e-9)
    assert (low["label"], low["mean"], low["n"]) == ("learning_rate=5e-05", pytest.approx(87.0, abs=1e-9), 2)
    assert low["std"] == pytest.approx(2 ** 0.5, abs=1e-9) and list(low["left_out"]) == ["3"]
    assert "within 1.0 points of the majority class (50.00)" in low["left_out"]["3"]
    assert summary["flagged_trials"] == [{"setting": "lr5e-05", "seed": 3, "why": low["left_out"]["3"]}]
    chosen = summary["chosen"]
    assert (chosen["setting"], chosen["seed"], chosen["value"]) == ({"learning_rate": 5e-05}, 2, 88.0)
    assert chosen["eval"] == "reports/eval/t/lr5e-05/seed2" and chosen["setting_mean"] == pytest.approx(87.0)
    assert "flagged" not in chosen and chosen["seeds_used"] == 2
    # the results table is the chosen setting's: every seed, the flagged one included and named
    assert summary["fine_tuned"]["f1"]["per_seed"] == {"1": 86.0, "2": 88.0, "3": 40.0}
    assert [f["seed"] for f in summary["flagged_runs"]] == [3]


def test_every_run_flagged_counts_them_all_and_says_so():
    from stages._lib.search import Trial
    from stages.report import summarize_search

    runs = {Trial("t", seed, {"learning_rate": lr}): _record(f1, 50.0, seed, lr)
            for lr, f1s in ((1e-4, (60.0, 64.0)), (5e-5, (61.0, 62.0))) for seed, f1 in zip((1, 2), f1s)}
    baseline = {"metrics": {"f1": 30.0, "acc": 48.0}, "majority": {"class": "1", "metrics": {"acc": MAJORITY_ACC}}}
    summary = summarize_search("t", runs, baseline, 1.0, {t: t.folder for t in runs})
    assert [c["mean"] for c in summary["grid"]] == [pytest.approx(62.0), pytest.approx(61.5)]
    assert summary["chosen"]["seed"] == 2 and summary["chosen"]["flagged"] is True
    assert summary["chosen"]["rule"].endswith("every run is flagged: all counted")


def test_the_report_shows_the_grid_and_the_choice(tmp_path):
    from stages import report

    _write_records(tmp_path)
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text(encoding="utf-8").replace(
        "tasks: [demo-pair, demo-qa, demo-mc]", "tasks: [demo-pair]").replace("seeds: [1, 2]", "seeds: [1, 2, 3]")
    params.write_text(text, encoding="utf-8")
    r = tmp_path / "reports"
    assert report.main(["--runs", f"{r}/eval/{{trial}}", "--baseline", f"{r}/baseline/{{task}}",
                        "--history", f"{r}/history/{{trial}}.json", "--markdown", f"{r}/report.md",
                        "--html", f"{r}/report.html", "--figures", f"{r}/figures", "--metrics", f"{r}/metrics.json",
                        "--params", str(params)]) == 0
    page = (r / "report.md").read_text(encoding="utf-8")
    grid = page[page.index("## Search grid"):page.index("## Results")]
    assert "| demo-pair | learning_rate=0.0001 | 79.00 ± 13.89 | 3 of 3 | 1: 95.00 / 2: 70.00 / 3: 72.00 | — |" in grid
    assert ("| demo-pair | **learning_rate=5e-05** | 87.00 ± 1.41 | 2 of 3 | 1: 86.00 / 2: 88.00 / 3: 40.00 | chosen; "
            "seed 3 left out: accuracy 50.50 is within 1.0 points of the majority class (50.00) |") in grid
    assert "- demo-pair: learning_rate=5e-05 (mean f1 87.00 over 2 seeds), seed 2 (f1 88.00;" in page
    assert "- demo-pair lr5e-05 seed 3: accuracy 50.50" in page
    assert "Training and evaluation took 18.0 s in all" in page  # six trials of 2 s training and 1 s evaluation
    metrics = json.loads((r / "metrics.json").read_text())["demo-pair"]
    assert metrics["chosen"]["eval"] == f"{r}/eval/demo-pair/lr5e-05/seed2"
    assert [c["n"] for c in metrics["grid"]] == [3, 2]
    assert "<strong>learning_rate=5e-05</strong>" in (r / "report.html").read_text(encoding="utf-8")


def test_the_champion_is_the_chosen_settings_best_seed(tmp_path, monkeypatch):
    """The report's metrics.json through the MLflow glue (a sqlite store): the chosen setting's best seed's trial
    becomes bert-<task>@champion, not the trial of the best single run."""
    from bert.tasks import TaskKind
    from predict_helpers import tiny_folder

    from pipeline.models import log_trial_model
    from pipeline.stagerun import StageRun
    from pipeline.tracking import Tracker
    from pipeline.trials import create_trial, settings_hash
    from stages._lib.search import Trial
    from stages.report import summarize_search

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "BERT_TRACKING"):
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "p"
    model = tiny_folder(tmp_path / "tiny", TaskKind.PAIR_CLASSIFICATION, ("0", "1"))  # with its task entry
    tracker = Tracker(project)
    assert tracker.connect()
    runs, folders, trial_runs = {}, {}, {}
    for lr, seeds in RESULTS.items():
        for seed in (1, 2):  # a trial per (setting, seed), each with its model
            trial = Trial("demo-pair", seed, {"learning_rate": lr})
            record = _record(*seeds[seed], seed, lr)
            runs[trial], folders[trial] = record, f"reports/eval/{trial.folder}"
            (project / folders[trial]).mkdir(parents=True)
            (project / folders[trial] / "metrics.json").write_text(json.dumps(record))
            key = settings_hash(record["training"]["params"])
            trial_runs[trial] = create_trial(tracker, None, "demo-pair", seed, key, {"lr": lr}, {})
            assert log_trial_model(tracker, trial_runs[trial], model)
    baseline = {"metrics": {"f1": 30.0, "acc": 48.0}, "majority": {"class": "1", "metrics": {"acc": MAJORITY_ACC}}}
    summary = {"demo-pair": summarize_search("demo-pair", runs, baseline, 1.0, folders)}
    assert summary["demo-pair"]["chosen"]["seed"] == 2  # lr5e-5 (mean 87) over lr1e-4 (82.5, best single run 95)

    report = StageRun(project, "report", under_dvc=False, cmd=["python", "-m", "stages.report"])
    report.tracker = tracker
    report._register_champions(summary)
    version = mlflow_client(project).get_model_version_by_alias("bert-demo-pair", "champion")
    assert version.run_id == trial_runs[Trial("demo-pair", 2, {"learning_rate": 5e-05})]
    assert version.tags["seed"] == "2" and version.tags["setting"] == '{"learning_rate": 5e-05}'


# ---------------------------------------------------------------------------------------------
# `make run` over a grid: the real dvc, the stages, MLflow


@pytest.mark.slow
def test_make_run_over_a_grid_records_each_trials_own_setting(tmp_path, tiny_model):  # noqa: F811 (the fixture)
    """Two learning rates x one seed of the tiny project: each trial trained, recorded in MLflow and reported with its
    own learning rate (not finetune's 1e-4), and the report's choice is the champion."""
    from test_tracking import all_runs, make_run, tiny_project

    from pipeline.matrix import write as write_matrix
    from pipeline.overrides import apply_overrides

    project = tiny_project(tmp_path / "repo", tiny_model)
    apply_overrides(project / "params.yaml", {"search": {"learning_rate": [3.0e-4, 1.0e-3]}})
    write_matrix(project)
    make_run(project)

    trials = {r.data.tags["setting"]: r for r in all_runs(mlflow_client(project)) if "setting" in r.data.tags}
    assert set(trials) == {"learning_rate=0.0003", "learning_rate=0.001"}
    for lr, folder in ((3e-4, "lr0.0003"), (1e-3, "lr0.001")):
        run = trials[f"learning_rate={lr}"]
        assert run.data.params["finetune.learning_rate"] == str(lr) and run.data.tags["seed"] == "1"
        assert run.data.tags["dvc.stage.finetune"] == f"finetune@demo-pair-1-{lr}"
        assert run.info.run_name == f"demo-pair {folder} seed1"  # the first trial of its task, setting and seed
        training = json.loads((project / f"models/finetuned/demo-pair/{folder}/seed1/training.json").read_text())
        assert training["params"]["learning_rate"] == lr  # what the stage trained with
        assert "dev.f1" in run.data.metrics
        model_id = run.outputs.model_outputs[-1].model_id
        assert mlflow_client(project).get_logged_model(model_id).name == f"demo-pair-{folder.replace('.', '_')}-seed1"
    summary = json.loads((project / "reports/metrics.json").read_text())["demo-pair"]
    grid = summary["grid"]  # the report's per-seed values are the trials' dev F1 in MLflow
    assert {c["label"]: c["per_seed"] for c in grid} == {k: {"1": r.data.metrics["dev.f1"]} for k, r in trials.items()}
    best = max((c for c in grid if c["mean"] is not None), key=lambda c: c["mean"])  # ties: the first
    assert summary["chosen"]["setting_label"] == best["label"]
    version = mlflow_client(project).get_model_version_by_alias("bert-demo-pair", "champion")
    assert version.run_id == trials[best["label"]].info.run_id
    assert "## Search grid" in (project / "reports/report.md").read_text()
