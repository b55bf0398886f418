"""Evaluation during training in the finetune stage (finetune.eval_every, select, patience), on the packaged
MiniLM and the built-in demo-pair task: the dev points are the evaluate stage's figures of that step's weights,
patience stops a real run where its dev sequence says, select: best writes exactly the best step's weights, a
SIGKILLed run resumes to the same choice, and MLflow holds the dev metric's history at its steps."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bert.engine import DistContext, fit
from bert.engine.selection import Selection
from reliability_helpers import REPO, write_params
from stages import download, evaluate, finetune, tokenize

pytestmark = pytest.mark.slow

# 52 examples in batches of 8, 2 epochs: 14 steps; dev evaluations at steps 3, 6, 9, 12 and the last, 14.
SMALL = {"train_examples: ?": "train_examples: 52", "dev_examples: ?": "dev_examples: 40",
         "global_batch_size: ?": "global_batch_size: 8", "epochs: ?": "epochs: 2.0", "log_every: ?": "log_every: 5",
         "max_seq_length: ?": "max_seq_length: 32", "checkpoint_every: ?": "checkpoint_every: 2",
         "eval_every: ?": "eval_every: 3"}
EVAL_STEPS = [3, 6, 9, 12, 14]
PATIENCE = 1


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, minilm_dir):
    """params files (evaluation every 3 steps; and with select: best, patience 1), demo-pair's raw data and
    features made by the stages for the packaged MiniLM."""
    root = tmp_path_factory.mktemp("evaltrain")
    paths = {"params": write_params(root / "params.yaml", **SMALL), "raw": root / "raw", "features": root / "features",
             "stopping": write_params(root / "stopping.yaml", **SMALL, **{"select: ?": "select: best",
                                                                         "patience: ?": f"patience: {PATIENCE}"})}
    common = ["--params", str(paths["params"]), "--task", "demo-pair"]
    assert download.main([*common, "--out", str(paths["raw"])]) == 0
    assert tokenize.main([*common, "--data", str(paths["raw"]), "--model", str(minilm_dir),
                          "--out", str(paths["features"])]) == 0
    return paths


def _args(inputs, minilm_dir, out: Path, params: str = "params") -> list[str]:
    return ["--params", str(inputs[params]), "--task", "demo-pair", "--seed", "1", "--features",
            str(inputs["features"]), "--model", str(minilm_dir), "--data", str(inputs["raw"]),
            "--out", str(out / "model"), "--history", str(out / "history.json"), "--work", str(out / "work")]


@pytest.fixture(scope="module")
def reference(inputs, minilm_dir, tmp_path_factory):
    """The stage's own run (its prepare: model, data, evaluator) through the engine with a checkpoint kept at
    every evaluated step, each checkpoint's weights written as a model folder; no early stop."""
    from bert.engine.checkpoint import list_checkpoints, load_checkpoint

    root = tmp_path_factory.mktemp("reference")
    stage = finetune.Finetune(finetune.__doc__)
    args = stage.parser().parse_args(_args(inputs, minilm_dir, root))
    params = finetune.load_section("finetune", finetune.FinetuneParams, args.params)
    run = stage.prepare(args, params, DistContext())
    config = dataclasses.replace(run.config, checkpoint_every=3, keep_checkpoints=len(EVAL_STEPS))  # and the last
    result = fit(run.model, run.dataset, run.collate_fn, config, root / "work", lengths=run.dataset.lengths,
                 progress=False, evaluator=run.evaluator)
    folders = {}
    for step, path in list_checkpoints(root / "work"):
        folders[step] = folder = root / f"step{step}"
        model = finetune.head_for(run.evaluator.spec)[0].from_pretrained(minilm_dir, num_labels=2)
        model.load_state_dict(load_checkpoint(path)["model"])
        model.save_pretrained(folder)
        shutil.copyfile(minilm_dir / "vocab.txt", folder / "vocab.txt")
        (folder / "training.json").write_text(json.dumps({"task": "demo-pair"}))
    shutil.rmtree(root / "work")
    return result, folders


def test_dev_points_are_the_evaluate_stages_figures_of_that_steps_weights(reference, inputs, tmp_path):
    result, folders = reference
    dev = {p["step"]: {k[4:]: v for k, v in p.items() if k.startswith("dev_")} for p in result.history
           if "dev_f1" in p}
    assert sorted(dev) == EVAL_STEPS == sorted(folders)
    assert len({round(d["f1"], 6) for d in dev.values()}) > 2  # the model learns: not one figure repeated
    for step, folder in folders.items():
        out = tmp_path / f"eval{step}"
        assert evaluate.main(["--params", str(inputs["params"]), "--task", "demo-pair", "--features",
                              str(inputs["features"]), "--data", str(inputs["raw"]), "--model", str(folder),
                              "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert dev[step].keys() == metrics.keys()
        for key, value in metrics.items():
            assert abs(dev[step][key] - value) <= 1e-6, (step, key, dev[step][key], value)


def _expected_stop(history: list[dict]) -> tuple[int, int]:
    """(the step patience stops at, the best step by then): the selection replayed over the dev points."""
    sel = Selection(PATIENCE)
    for point in (p for p in history if "dev_f1" in p):
        sel.update(point["step"], point["dev_f1"])
        if sel.stop:
            return point["step"], sel.best_step
    raise AssertionError("the reference's dev sequence never stops this patience: the test would prove nothing")


def _weights_equal(folder: Path, reference: Path) -> float:
    got, want = load_file(str(folder / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert got.keys() == want.keys()
    return max(float((got[k] - want[k]).abs().max()) for k in got)


@pytest.fixture(scope="module")
def stopped(inputs, minilm_dir, tmp_path_factory):
    """The stage run with select: best and patience 1."""
    out = tmp_path_factory.mktemp("stopped")
    assert finetune.main(_args(inputs, minilm_dir, out, "stopping")) == 0
    return out


def test_patience_stops_a_real_run_and_best_writes_that_steps_weights(reference, stopped):
    result, folders = reference
    stop, best = _expected_stop(result.history)
    assert stop < 14
    training = json.loads((stopped / "model" / "training.json").read_text())
    history = json.loads((stopped / "history.json").read_text())
    assert training["global_steps"] == stop == history[-1]["step"]
    best_value = next(p["dev_f1"] for p in result.history if p["step"] == best)
    assert training["selection"] == {"metric": "dev_f1", "select": "best", "selected_step": best, "best_step": best,
                                     "best_value": best_value, "evaluations": EVAL_STEPS.index(stop) + 1,
                                     "patience": PATIENCE, "stopped_early": True}
    # the same trajectory as the reference up to the stop: equal points, the best step's exact weights
    def same(points):
        return [(p["step"], p["loss"], p.get("dev_f1"), p.get("dev_acc")) for p in points]

    assert same(history) == same(p for p in result.history if p["step"] <= stop)
    assert _weights_equal(stopped / "model", folders[best]) == 0.0


KILLED_AT_SECOND_EVALUATION = """
import os, signal, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
import stages.finetune as stage
real, calls = stage.DevEvaluator.__call__, []
def call(self, model):
    calls.append(1)
    if len(calls) == 2:  # step 6's evaluation: after step 4's checkpoint, step 3 the best so far
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, model)
stage.DevEvaluator.__call__ = call
sys.exit(stage.main(sys.argv[2:]))
"""


def test_sigkill_then_resume_selects_the_same_step(inputs, minilm_dir, stopped, tmp_path, caplog):
    from bert.engine.checkpoint import list_checkpoints

    args = _args(inputs, minilm_dir, tmp_path, "stopping")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_SECOND_EVALUATION, str(torch.get_num_threads()), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert [step for step, _ in list_checkpoints(tmp_path / "work")] == [4] and not (tmp_path / "model").exists()
    with caplog.at_level("INFO"):
        assert finetune.main(args) == 0
    assert "resumed from" in caplog.text and "at step 4 of 14" in caplog.text
    got = json.loads((tmp_path / "model" / "training.json").read_text())["selection"]
    want = json.loads((stopped / "model" / "training.json").read_text())["selection"]
    assert got["selected_step"] == want["selected_step"] == 3
    assert got == {**want, "best_value": got["best_value"]} and abs(got["best_value"] - want["best_value"]) <= 1e-6
    assert _weights_equal(tmp_path / "model", stopped / "model") <= 1e-6


def test_mlflow_holds_the_dev_metric_history_of_the_trial(inputs, minilm_dir, stopped, tmp_path):
    """`python -m pipeline.track -- python -m stages.finetune ...` into a real sqlite store: the trial run's
    dev_f1 at the evaluated steps, as the history file has it."""
    from test_tracking import all_runs, mlflow_client, tool_env

    (tmp_path / "params.yaml").write_bytes(inputs["stopping"].read_bytes())
    env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "stages.finetune", *_args(inputs, minilm_dir, tmp_path / "run", "stopping")]
    done = subprocess.run([sys.executable, "-m", "pipeline.track", "--stage", "finetune", "--", *command],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    client = mlflow_client(tmp_path)
    (trial,) = [r for r in all_runs(client) if r.data.tags.get("bert.run_kind") == "trial"]
    logged = [(m.step, m.value) for m in client.get_metric_history(trial.info.run_id, "dev_f1")]
    assert logged == [(p["step"], p["dev_f1"]) for p in history if "dev_f1" in p] and len(logged) >= 2
    assert sorted(m.step for m in client.get_metric_history(trial.info.run_id, "loss")) == [p["step"] for p in history]


def test_a_squad_task_without_data_is_refused_naming_the_flag(inputs, minilm_dir, tmp_path):
    """The official SQuAD script needs the raw dev file: without --data the stage says so before training."""
    args = _args(inputs, minilm_dir, tmp_path)
    at = args.index("--data")
    del args[at:at + 2]
    args[args.index("demo-pair")] = "demo-qa"
    stage = finetune.Finetune(finetune.__doc__)
    with pytest.raises(ValueError, match="^--data: finetune.eval_every scores demo-qa's dev set"):
        finetune.dev_evaluator(stage.parser().parse_args(args), finetune.get_task("demo-qa"), DistContext())


def test_a_trials_precision_tag_is_the_one_it_trained_in(tmp_path):
    """finetune lists evaluate.precision among its params (its dev evaluations use it): the trial's precision
    tag still comes from what it trained with (training.json's params)."""
    from pipeline.dvcgraph import StageSpec
    from pipeline.stagerun import run_facts

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "training.json").write_text(json.dumps({"world_size": 1, "params": {"precision": "bf16"}}))
    spec = StageSpec("finetune@demo-pair-1", "", (), ("model",), (), (), (), ("finetune.precision",
                     "evaluate.precision"), ())
    params = {"finetune.precision": "bf16", "evaluate.precision": "fp32"}
    assert run_facts(tmp_path, spec, params)["precision"] == "bf16"
