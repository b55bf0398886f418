"""DVC experiments with the real `dvc`, as a user runs them from a shell that has no venv activated.

The tiny project of tests/test_dvc_pipeline.py (a random-initialised BERT, one demo task, one seed, 32
examples, two steps), committed in a fresh git repo, driven by `dvc exp run` with a PATH whose only entry
ahead of the system's is a folder holding `dvc`: no venv python on it, so each stage runs through bin/python.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_dvc_pipeline import BIN, tiny_project

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]

SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="module")
def project(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("dvcexp")
    repo = tiny_project(root, minilm_dir)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=repo, check=True)
    tools = root / "tools"  # `dvc` alone: DVC's queue starts its workers as `dvc` from PATH
    tools.mkdir()
    (tools / "dvc").symlink_to(BIN / "dvc")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{tools}{os.pathsep}{SYSTEM_PATH}", OMP_NUM_THREADS="1", BERT_TRACKING="off",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@example.com")
    return repo, env


def _dvc(project, *args: str, timeout: float = 600) -> str:
    repo, env = project
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _experiments(project) -> dict[str, dict]:
    """`dvc exp show --json`: {experiment name: its data (params, metrics)}."""
    shown = json.loads(_dvc(project, "exp", "show", "--json", "--no-fetch"))
    return {rev["name"]: rev["data"] for baseline in shown for exp in baseline.get("experiments") or []
            for rev in exp["revs"]}


def _trial(data: dict) -> tuple[float, float, float]:
    """(learning rate, dev accuracy, training seconds) of an experiment of the tiny project."""
    metrics = data["metrics"]["reports/metrics.json"]["data"]["demo-pair"]
    return (data["params"]["params.yaml"]["data"]["finetune"]["learning_rate"],
            metrics["fine_tuned"]["acc"]["per_seed"]["7"], metrics["train_seconds"])


def test_the_system_path_has_no_python_with_the_project():
    """What the tests below rely on: without bin/python, `python3` on their PATH could not run a stage."""
    found = subprocess.run(["sh", "-c", "command -v python3 python"], env={"PATH": SYSTEM_PATH},
                           capture_output=True, text=True, check=False).stdout.split()
    for python in found:
        has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False).returncode == 0
        assert not has_torch, f"{python} has torch: this test would not show what bin/python does"


def test_exp_run_set_param_shows_each_experiment_and_restores_from_run_cache(project):
    ran = _dvc(project, "exp", "run", "-n", "lr-a")
    assert "Running stage 'finetune@demo-pair-7'" in ran
    ran = _dvc(project, "exp", "run", "-n", "lr-b", "-S", "finetune.learning_rate=3e-4")
    assert "Running stage 'finetune@demo-pair-7'" in ran

    # back to A: its trained model comes back from DVC's run cache; nothing trains
    ran = _dvc(project, "exp", "run", "-n", "lr-a-again", "-S", "finetune.learning_rate=1e-4")
    assert "Stage 'finetune@demo-pair-7' is cached - skipping run, checking out outputs" in ran
    assert "Running stage 'finetune" not in ran

    shown = _experiments(project)
    assert {"lr-a", "lr-b", "lr-a-again"} <= set(shown)
    a, b, again = (_trial(shown[name]) for name in ("lr-a", "lr-b", "lr-a-again"))
    assert (a[0], b[0], again[0]) == (1e-4, 3e-4, 1e-4)
    for lr, acc, seconds in (a, b, again):
        assert isinstance(acc, float) and 0.0 <= acc <= 100.0 and seconds > 0
    assert again[2] == a[2]  # the very run of A (its training.json's wall time), not a second one
    assert b[2] != a[2]


def test_exp_run_queue_runs_each_queued_experiment(project):
    for name, lr in (("q-2e-4", "2e-4"), ("q-5e-4", "5e-4")):
        assert f"Queued experiment '{name}'" in _dvc(project, "exp", "run", "--queue", "-n", name,
                                                     "-S", f"finetune.learning_rate={lr}")
    try:
        _dvc(project, "exp", "run", "--run-all")  # starts a queue worker and follows the runs to their end
        status = _dvc(project, "queue", "status")
        assert re.search(r"q-2e-4\s.*Success", status) and re.search(r"q-5e-4\s.*Success", status), status
    finally:
        _stop_queue_worker(project)
    shown = _experiments(project)
    assert _trial(shown["q-2e-4"])[0] == 2e-4 and _trial(shown["q-5e-4"])[0] == 5e-4
    for name in ("q-2e-4", "q-5e-4"):
        lr, acc, seconds = _trial(shown[name])
        assert 0.0 <= acc <= 100.0 and seconds > 0


def test_an_interrupted_finetune_resumes_from_its_checkpoint_under_dvc(project):
    """The checkpoints (--work) are no DVC out: DVC leaves them alone, and the next run resumes from them."""
    repo, env = project
    longer = ["-S", "data.builtin.train_examples=512", "-S", "finetune.epochs=4", "-S", "finetune.checkpoint_every=2"]
    checkpoints = repo / "models" / "checkpoints" / "demo-pair" / "seed7" / "checkpoints"
    with open(repo.parent / "interrupted.log", "w") as log:
        run = subprocess.Popen(["dvc", "exp", "run", *longer], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not list(checkpoints.glob("step-*.pt")) and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(checkpoints.glob("step-*.pt")), (repo.parent / "interrupted.log").read_text()[-3000:]
        finally:
            os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: the stage keeps its checkpoint and exits 130
            run.wait(timeout=120)
    assert run.returncode != 0
    kept = int(max(checkpoints.glob("step-*.pt")).stem.split("-")[1])
    ran = _dvc(project, "exp", "run", *longer)
    assert re.search(rf"resumed from \S+step-0*{kept}\.pt at step {kept} of 128", ran), ran[-3000:]
    assert not checkpoints.exists()  # dropped once the run completed


def _stop_queue_worker(project) -> None:
    """`dvc queue stop`, then wait for the worker DVC started (its pid file) to exit; killed past 30 s."""
    repo, _ = project
    _dvc(project, "queue", "stop")
    for pid_file in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        pid = int(pid_file.read_text().strip() or 0)
        deadline = time.monotonic() + 30
        while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)
