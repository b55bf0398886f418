"""A training run's lifetime: its workers, its work folder, its stop.

- the workers die with their launcher: torchrun starts them in sessions of their own, out of reach of a
  SIGKILL of the launcher's process group (a killed ``dvc repro``, a timed-out flow);
- a work folder is locked by the run using it: a second run is refused ("in use by PID n") instead of
  racing the first, and the lock of a killed run is taken over by the next;
- Ctrl-C stops a run in one line saying what was saved and how to resume, exit status 130;
- a work folder that is not the stage's (``--work .``, a typo naming a folder of results) is refused
  untouched, and in its own work folder the stage deletes only what it created.

Each run is a real child process (the finetune stage, slowed per batch so that it is caught mid-run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import (BAD_INPUT, FAULT, QUICK_TRAINING, REPO, TRACEBACK, assert_one_clear_error,
                                 assert_stage_failed, changed, child_env, error_lines, finetune_args, finetune_inputs,
                                 snapshot, tally, wait_for, write_params)

pytestmark = pytest.mark.xdist_group("reliability-kills")  # timing-sensitive: one at a time

# The finetune stage with a pause per batch; run as a script, a module (-m slow_finetune) or a worker.
SLOW_FINETUNE = """
import os, sys, time
import stages.finetune as stage
real = stage.pad_collate
def slow_collate(*args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_COLLATE_S", "0.25")))
    return real(*args, **kwargs)
stage.pad_collate = slow_collate
preflight = getattr(stage, "preflight", None)  # bert.engine.launch asks it first
if __name__ == "__main__":
    sys.exit(stage.main(sys.argv[1:]))
"""

LAUNCHERS = {  # how the stage is started: the program before the script's arguments
    "python": lambda script: [str(script)],
    "torchrun": lambda script: ["-m", "torch.distributed.run", "--nproc_per_node", "1", str(script)],
    "bert.engine.launch": lambda script: ["-m", "bert.engine.launch", "--nproc_per_node", "1", "-m", script.stem],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("runtime")
    paths = finetune_inputs(root, minilm_dir / "vocab.txt")
    paths["script"] = root / "slow_finetune.py"
    paths["script"].write_text(SLOW_FINETUNE)
    return paths


def _start(inputs, launcher: str, out: Path, work: Path) -> subprocess.Popen:
    """The slowed stage under `launcher`, in a session of its own (as DVC's command is to the test)."""
    args = [*LAUNCHERS[launcher](inputs["script"]), *finetune_args(inputs, out, work)]
    env = child_env(PYTHONPATH=f"{REPO}{os.pathsep}{inputs['script'].parent}")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _checkpoint_at_least(proc: subprocess.Popen, work: Path, step: int) -> bool:
    """Wait until the run has written the checkpoint of `step` or a later one (False: it ended first)."""
    from bert.engine.checkpoint import list_checkpoints

    wait_for(lambda: proc.poll() is not None or any(s >= step for s, _ in list_checkpoints(work)), timeout=180)
    return proc.poll() is None


def _descendants(pid: int) -> list:
    import psutil

    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    return err


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "bert.engine.launch"])
def test_workers_die_with_their_launcher(tmp_path, inputs, launcher):
    """[#19 H5] SIGKILL of the launcher's process group: no worker trains on, publishes a model or deletes
    checkpoints."""
    import psutil

    with tally(FAULT, f"SIGKILL of {launcher}'s process group mid-finetune: its workers die with it") as rec:
        out, work = tmp_path / "out" / "model", tmp_path / "work"
        proc = _start(inputs, launcher, out, work)
        workers = []
        try:
            assert _checkpoint_at_least(proc, work, 2), proc.communicate(timeout=60)[1][-3000:]
            workers = [p for p in _descendants(proc.pid) if "slow_finetune" in " ".join(p.cmdline())]
            assert workers, "no worker process found"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            gone = wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers),
                            timeout=15)
            checkpoints = snapshot(work / "checkpoints")
            time.sleep(3)  # what an orphan would do next: train on, write the model, drop the checkpoints
            rec["lost"] = int(out.exists()) + len(set(checkpoints.items()) ^ set(snapshot(work / "checkpoints").items()))
            assert gone, f"workers still running after their launcher was killed: {[p.pid for p in workers]}"
            assert rec["lost"] == 0, "the orphaned worker went on writing"
        finally:
            for p in workers:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            if proc.poll() is None:
                _stop(proc)


@pytest.mark.slow
def test_a_work_folder_is_locked_by_the_run_using_it(tmp_path, inputs, caplog):
    """[#19 H5] A second run of the same work folder is refused at once; once the first is killed, its lock is free."""
    from stages import finetune

    with tally(FAULT, "a second finetune on a work folder in use: refused ('in use by PID n'); the lock of a "
                      "killed run taken over") as rec:
        out, work = tmp_path / "out" / "model", tmp_path / "work"
        first = _start(inputs, "python", out, work)
        try:
            assert _checkpoint_at_least(first, work, 2), first.communicate(timeout=60)[1][-3000:]
            before = snapshot(work)
            with caplog.at_level("INFO"):
                rc = finetune.main(finetune_args(inputs, out, work))
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            # what the refused run did to the first one (which itself only rotates its checkpoints meanwhile)
            rec["lost"] = int(snapshot(work).get("fingerprint.json") != before["fingerprint.json"])
            rec["lost"] += int(first.poll() is not None)
            assert rc == 1 and len(errors) == 1, errors
            assert f"{work}: in use by PID {first.pid}" in errors[0], errors[0]
            assert first.poll() is None, "the first run was disturbed"
        finally:
            _stop(first)
        caplog.clear()
        with caplog.at_level("INFO"):
            assert finetune.main(finetune_args(inputs, out, work)) == 0  # the dead run's lock is released
        assert re.search(r"resumed from .* at step \d+ of 24", caplog.text)
        assert rec["lost"] == 0 and (out / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["python", "bert.engine.launch"])
def test_ctrl_c_says_what_was_saved_in_one_line(tmp_path, inputs, caplog, launcher):
    """[#19 M1] SIGINT to the run's process group (a terminal's Ctrl-C): exit 130, one line naming the checkpoint."""
    from stages import finetune

    with tally(FAULT, f"Ctrl-C during finetune ({launcher}): one line, what was saved, exit 130") as rec:
        out, work = tmp_path / "out" / "model", tmp_path / "work"
        proc = _start(inputs, launcher, out, work)
        try:
            assert _checkpoint_at_least(proc, work, 4), proc.communicate(timeout=60)[1][-3000:]
        finally:
            err = _stop(proc, signal.SIGINT)
        assert proc.returncode == 130, (proc.returncode, err[-3000:])
        assert TRACEBACK not in err, err[-3000:]
        lines = error_lines(err)
        assert len(lines) == 1, err[-3000:]
        found = re.search(r"interrupted by SIGINT: the checkpoint of step (\d+) is kept \(.*step-0+\1\.pt\); "
                          r"run the same command to resume from it", lines[0])
        assert found, lines[0]
        with caplog.at_level("INFO"):
            assert finetune.main(finetune_args(inputs, out, work)) == 0
        assert f"at step {found.group(1)} of 24" in caplog.text
        rec["lost"] = int(not (out / "model.safetensors").is_file())
        assert rec["lost"] == 0


# ----------------------------------------------------------------------------------------------
# The work folder: only what the stage created is ever deleted.


def _user_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("three years of work")
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / "table.csv").write_text("a,b\n1,2\n")
    return folder


@pytest.mark.parametrize("case", ["--work .", "a typo naming a folder of results", "a work folder of stage pretrain",
                                  "a damaged fingerprint.json"])
def test_work_folder_of_something_else_is_refused_untouched(tmp_path, inputs, caplog, monkeypatch, case):
    """[#19 H1] [#19 M13] --work naming something that is not a work folder of this stage is refused, nothing deleted (a
    damaged fingerprint.json is named)."""
    from stages import finetune

    with tally(BAD_INPUT, f"finetune --work: {case}") as rec:
        out = tmp_path / "out" / "model"
        if case == "--work .":
            work = Path(".")
            monkeypatch.chdir(_user_files(tmp_path / "project"))
            out = tmp_path / "out" / "model"
            fragments = ["--work must be an empty folder or a work folder of stage finetune", "no fingerprint.json",
                         "nothing was deleted"]
        elif case == "a typo naming a folder of results":
            work = _user_files(tmp_path / "reslts")
            fragments = [f"{work}: --work must be", "holds 2 entries (results, thesis.tex)"]
        elif case == "a work folder of stage pretrain":
            work = _user_files(tmp_path / "pretrain-work")
            (work / "fingerprint.json").write_text(json.dumps({"stage": "pretrain", "train_config": {}}))
            fragments = [f"{work}: --work must be", "is of stage pretrain"]
        else:
            work = _user_files(tmp_path / "work")
            (work / "fingerprint.json").write_text('{"stage": "finetune", ')
            fragments = [str(work / "fingerprint.json"), "not valid JSON"]
        root = Path.cwd() if case == "--work ." else work
        before = snapshot(root)
        rc = finetune.main(finetune_args(inputs, out, work))
        rec["lost"] = len(changed(before, snapshot(root)))
        assert_stage_failed(rc, caplog, *fragments)
        assert rec["lost"] == 0 and not out.exists()


def test_pretrain_work_folder_of_something_else_is_refused_untouched(tmp_path, caplog, monkeypatch):
    """[#19 H1] pretrain shares the training skeleton: --work . is refused before its inputs are even read."""
    from stages import pretrain

    with tally(BAD_INPUT, "pretrain --work . in a folder of the user's files") as rec:
        monkeypatch.chdir(_user_files(tmp_path / "project"))
        before = snapshot(Path.cwd())
        rc = pretrain.main(["--params", str(REPO / "pretrain" / "params.yaml"), "--model", str(tmp_path / "model"),
                            "--instances", str(tmp_path / "instances"), "--metrics", str(tmp_path / "m.json"),
                            "--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.json"), "--work", "."])
        rec["lost"] = len(changed(before, snapshot(Path.cwd())))
        assert_stage_failed(rc, caplog, ".: --work must be an empty folder or a work folder of stage pretrain",
                            "nothing was deleted")
        assert rec["lost"] == 0 and not (tmp_path / "out").exists()


def test_only_the_stages_own_files_are_dropped(tmp_path, inputs, caplog):
    """[#19 H1] A work folder of finetune left by another run: its checkpoints go, a file the user put there stays."""
    from stages import finetune

    with tally(BAD_INPUT, "finetune --work of another run with a user's file in it: only the stage's files dropped") \
            as rec:
        work = tmp_path / "work"
        (work / "checkpoints").mkdir(parents=True)
        (work / "checkpoints" / "step-00000002.pt").write_bytes(b"another run's")
        (work / "fingerprint.json").write_text(json.dumps({"stage": "finetune", "train_config": {"epochs": 9.0}}))
        (work / "notes.txt").write_text("mine")
        rc = finetune.main(finetune_args(inputs, tmp_path / "out" / "model", work))
        rec["lost"] = int(not (work / "notes.txt").is_file())
        assert rc == 0 and rec["lost"] == 0
        assert sorted(p.name for p in work.iterdir()) == ["fingerprint.json", "notes.txt"]


@pytest.mark.parametrize("stage, case", [("finetune", "--out ."), ("finetune", "--out naming a folder of results"),
                                         ("tokenize", "--out naming a folder of results")])
def test_output_folder_of_something_else_is_refused_untouched(tmp_path, inputs, caplog, monkeypatch, stage, case):
    """[#19 H1] --out naming a folder of results (or .) is refused untouched: H1's mistake in the outputs."""
    from stages import finetune, tokenize

    with tally(BAD_INPUT, f"{stage} {case}") as rec:
        if case == "--out .":
            out = Path(".")
            monkeypatch.chdir(_user_files(tmp_path / "project"))
        else:
            out = _user_files(tmp_path / "results")
        root = Path.cwd() if case == "--out ." else out
        before = snapshot(root)
        if stage == "finetune":
            rc = finetune.main(finetune_args(inputs, out, tmp_path / "work"))
        else:
            rc = tokenize.main(["--params", str(inputs["params"]), "--task", "demo-pair", "--data", str(inputs["raw"]),
                                "--model", str(inputs["model"]), "--out", str(out)])
        rec["lost"] = len(changed(before, snapshot(root)))
        assert_stage_failed(rc, caplog, f"{out}: the output folder exists and holds 2 entries this output would not "
                                        "bring back (results, thesis.tex)", "nothing was changed")
        assert rec["lost"] == 0


# ----------------------------------------------------------------------------------------------
# The launch: params checked before any worker starts.


def _launch_command(nproc: int) -> list[str]:
    """dvc.yaml's finetune command up to its stage module (after the tracking wrapper), as DVC runs it."""
    import shlex

    import yaml

    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["finetune"]["cmd"]
    tokens = shlex.split(cmd.replace("${finetune.nproc}", str(nproc)))
    tokens = tokens[tokens.index("--") + 1:tokens.index("stages.finetune") + 1]
    if tokens[0] == "python":
        tokens[0] = sys.executable
    elif tokens[0] == "torchrun":
        tokens[:1] = [sys.executable, "-m", "torch.distributed.run"]
    return tokens


@pytest.mark.parametrize("case", ["global batch not a multiple of accumulation x processes",
                                  "more processes than this machine has cores"])
def test_launch_checks_params_before_starting_workers(tmp_path, inputs, case):
    """[#19 M3] dvc.yaml's launch refuses a global batch the processes cannot share, or more processes than cores,
    before any worker starts."""
    from stages._lib.training import machine_capacity

    with tally(BAD_INPUT, f"finetune launch: {case}"):
        cores, _ = machine_capacity()
        if case.startswith("global"):  # 4 examples per step, 3 accumulation steps
            params = write_params(tmp_path / "params.yaml", **QUICK_TRAINING, **{"grad_accum_steps: 1": "grad_accum_steps: 3"})
            nproc, fragments = 1, ["finetune.global_batch_size", "4 is not a multiple of grad_accum_steps 3"]
        else:  # one process more than the cores (the 64 on 2 cores; the old launcher started them all)
            nproc = cores + 1
            params = write_params(tmp_path / "params.yaml", **{**QUICK_TRAINING, "nproc: 1 ": f"nproc: {nproc} ",
                                                               "global_batch_size: 32": f"global_batch_size: {4 * nproc}"})
            fragments = [f"finetune.nproc: {nproc} processes, but this machine has {cores}"]
        args = finetune_args({**inputs, "params": params}, tmp_path / "out" / "model", tmp_path / "work")
        proc = subprocess.run([*_launch_command(nproc), *args], cwd=REPO, env=child_env(), capture_output=True,
                              text=True, timeout=300)
        assert_one_clear_error(proc.returncode, proc.stderr, str(params), *fragments)
        assert "joined process group" not in proc.stderr and not (tmp_path / "work").exists()  # no worker ran


# ----------------------------------------------------------------------------------------------
# Resume: a checkpoint is resumed only by the run that wrote it, judged by its inputs' content.


def _leave_checkpoints(monkeypatch, args: list[str]) -> None:
    """A finetune that trains to the end, then fails writing its outputs: its checkpoints stay for a resume."""
    from stages import finetune
    from stages._lib import training

    def disk_full(*_args, **_kwargs):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(training, "write_outputs", disk_full)
        assert finetune.main(args) == 1


@pytest.mark.parametrize("case", ["another data.builtin.seed, the same counts", "corrected labels",
                                  "another start model of the same shape"])
def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path, inputs, caplog, monkeypatch, case):
    """[#19 H2] Other data with the same counts, corrected labels, another start model: a fresh run, never the old
    checkpoint."""
    from reliability_helpers import make_tiny_model
    from stages import download, finetune, tokenize
    from stages._lib.training import CHECKPOINTS

    with tally(BAD_INPUT, f"finetune resume after {case}: a fresh run, not the old checkpoint"):
        paths = dict(inputs)
        work, out = tmp_path / "work", tmp_path / "out" / "model"
        raw, features = tmp_path / "raw", tmp_path / "features"
        assert download.main(["--params", str(inputs["params"]), "--task", "demo-pair", "--out", str(raw)]) == 0
        tok = ["--params", str(inputs["params"]), "--task", "demo-pair", "--model", str(inputs["model"])]
        assert tokenize.main([*tok, "--data", str(raw), "--out", str(features)]) == 0
        paths["features"] = features
        _leave_checkpoints(monkeypatch, finetune_args(paths, out, work))
        assert any((work / CHECKPOINTS).iterdir())
        if case.startswith("another data"):  # the same 48/8 examples, generated from another seed
            params = write_params(tmp_path / "other.yaml", **{**QUICK_TRAINING, "seed: 0": "seed: 7"})
            assert download.main(["--params", str(params), "--task", "demo-pair", "--out", str(raw)]) == 0
        elif case == "corrected labels":  # MRPC's format: the label is the first column
            lines = (raw / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
            lines[1] = ("1" if lines[1][0] == "0" else "0") + lines[1][1:]
            (raw / "train.tsv").write_text("".join(lines), encoding="utf-8")
        if case.startswith("another start"):
            paths["model"] = make_tiny_model(tmp_path / "other-model", inputs["model"] / "vocab.txt", seed=5)
        else:
            assert tokenize.main([*tok, "--data", str(raw), "--out", str(features)]) == 0
        caplog.clear()
        with caplog.at_level("INFO"):
            assert finetune.main(finetune_args(paths, out, work)) == 0
        assert "resumed from" not in caplog.text, "a checkpoint of other inputs was resumed"


# ----------------------------------------------------------------------------------------------
# A run whose numbers stop being finite stops, naming the step; no NaN model is published.


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_diverging_run_stops_naming_the_step(tmp_path, inputs, caplog, precision):
    """[#19 H3] A non-finite loss stops training in one line naming the step and the likely causes; no NaN model is
    published."""
    from stages import finetune

    with tally(BAD_INPUT, f"finetune with learning_rate 1e30 ({precision}): stopped naming the step, no model"):
        params = write_params(tmp_path / "params.yaml", **{**QUICK_TRAINING, "learning_rate: 1.0e-4": "learning_rate: 1.0e+30",
                                                           "precision: fp32   ": f"precision: {precision}   "})
        out = tmp_path / "out" / "model"
        rc = finetune.main(finetune_args({**inputs, "params": params}, out, tmp_path / "work"))
        fragments = (["collapsed", "lower the learning rate"] if precision == "fp16" else
                     [r"the training loss was nan at step", "training stopped and the model was not written",
                      "a learning rate too high"])
        assert_stage_failed(rc, caplog, *fragments)
        assert not out.exists() and not Path(f"{out}.history.json").exists()
