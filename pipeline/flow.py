"""The Prefect flow: dvc.yaml's stages as Prefect tasks, each one `dvc repro --single-item <stage>`.

    python -m pipeline.flow                                   # local, on an ephemeral Prefect API
    python -m pipeline.flow --set 'search.learning_rate=[5e-5]' --set 'tasks=[mrpc]' --retries 2
    prefect deploy --all && prefect deployment run bert-pipeline/local      # on a work pool (prefect.yaml)

The DAG is DVC's (pipeline.dvcgraph reads dvc.yaml through DVC): one task per stage and per
foreach/matrix item, named after the stage, run upstream first. DVC holds a repository lock for the
length of a `dvc repro`, so the tasks run one at a time; a stage's own parallelism is inside it
(torchrun). DVC decides what runs: one `dvc status` up front, and a stage that is up to date with no
upstream stage re-run completes without starting a process; every other stage runs through
`dvc repro --single-item`, which still skips it if nothing changed. So a second flow run over an
unchanged pipeline finishes in seconds and re-runs nothing.

Each task streams the command's output to the Prefect logs, is retried (``retries``, after
``retry_delay_s``), and is killed with its whole process group (DVC, the shell, torchrun and its
workers) when it runs past ``stage_timeout_s``.

Parameter overrides (``params``: dotted key -> value) are written into params.yaml before anything
runs, as `dvc exp run --set-param` does (see pipeline.overrides): params.yaml, dvc.lock and the outputs
then agree, and DVC re-runs exactly the stages that read a changed key.

MLflow: the flow owns the pipeline run, as `make run` does (pipeline.tracking.PipelineRun): it opens it
before any stage runs and hands its id to the stages (``MLFLOW_PARENT_RUN_ID``), so all the stages it
runs nest under one run, which it ends as FINISHED or FAILED.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

if "PREFECT_API_URL" not in os.environ:  # no server given: a local, temporary one (before prefect loads settings)
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from pipeline.dvcgraph import StageSpec, load_pipeline  # noqa: E402
from pipeline.overrides import apply_overrides, parse_assignment  # noqa: E402
from pipeline.params_check import check_project  # noqa: E402
from pipeline.tracking import PipelineRun  # noqa: E402

KILL_GRACE_S = 10.0


class StageFailed(RuntimeError):
    """A stage's `dvc repro` exited with an error, or ran past its time limit."""


@dataclass
class StageOutcome:
    """What one task did."""

    stage: str
    ran: bool  # False: DVC had it up to date, no process was started
    seconds: float


def kill_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL what is left after `grace_s`."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:  # the leader is gone; sweep any child still in the group
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_streaming(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float,
                  emit: Callable[[str], None]) -> int:
    """Run `cmd` in a new process group, passing each output line to `emit`.

    Args:
        cmd: the command.
        cwd: its working folder.
        env: its environment.
        timeout_s: wall-clock limit; past it the whole process group is killed.
        emit: called with each line of stdout and stderr (progress-bar redraws: the last one).
    Returns:
        The exit status.
    Raises:
        StageFailed: the command ran past `timeout_s` (it has been killed).
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n").split("\r")[-1].rstrip()
            if line:
                emit(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        reader.join(timeout=5)
        raise StageFailed(f"{' '.join(cmd)}: killed after {timeout_s:g} s (stage_timeout_s)") from None
    except BaseException:  # the flow was cancelled: leave no stage running behind it
        kill_group(proc)
        raise
    reader.join(timeout=30)
    return proc.returncode


def dvc_command(*args: str) -> list[str]:
    """`dvc ...` with this interpreter's DVC, whatever PATH says."""
    return [sys.executable, "-m", "dvc", *args]


def stage_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for stage commands: this interpreter's bin folder first (bin/python's last resort, python3)."""
    env = {**os.environ, **extra}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def changed_stages(root: Path, env: dict[str, str]) -> Optional[set[str]]:
    """The stages `dvc status` says must run (None if it could not tell: then every stage goes to DVC)."""
    done = subprocess.run(dvc_command("status", "--json"), cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    try:
        status = json.loads(done.stdout or "{}")
    except ValueError:
        return None
    return set(status) if isinstance(status, dict) else None


@task(name="dvc-stage", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)  # DVC is the cache
def run_stage(stage: str, root: str, timeout_s: float, extra_env: dict[str, str], must_run: bool) -> StageOutcome:
    """One stage: `dvc repro --single-item <stage>` (or nothing, when DVC has it up to date).

    Args:
        stage: the stage's name in dvc.yaml (with its foreach/matrix item).
        root: the repo root.
        timeout_s: the time limit of one attempt.
        extra_env: variables added to this process's environment for the command.
        must_run: False when `dvc status` found the stage up to date and nothing upstream re-ran.
    Returns:
        StageOutcome.
    Raises:
        StageFailed: the command failed or timed out (Prefect retries the task).
    """
    log = get_run_logger()
    if not must_run:
        log.info("%s: up to date (dvc status), nothing to run", stage)
        return StageOutcome(stage, False, 0.0)
    start = time.perf_counter()
    cmd = dvc_command("repro", "--single-item", stage)
    log.info("$ %s", " ".join(["dvc", *cmd[3:]]))
    code = run_streaming(cmd, Path(root), stage_env(extra_env), timeout_s, log.info)
    if code != 0:
        raise StageFailed(f"dvc repro --single-item {stage} exited with status {code}")
    return StageOutcome(stage, True, time.perf_counter() - start)


@flow(name="bert-pipeline")
def pipeline_flow(params: Optional[dict[str, Any]] = None, stages: Optional[list[str]] = None,
                  retries: int = 1, retry_delay_s: float = 10.0, stage_timeout_s: float = 6 * 3600.0,
                  project_dir: Optional[str] = None, track: bool = True) -> list[dict]:
    """Run the DVC pipeline stage by stage.

    Args:
        params: params.yaml overrides, dotted key -> value, e.g. {"finetune.learning_rate": 5e-5}.
        stages: run only these stages (names as in `dvc stage list`) and what they need; default all.
        retries: extra attempts of a failed stage.
        retry_delay_s: seconds between attempts.
        stage_timeout_s: time limit of one attempt of one stage.
        project_dir: the repo root (default: the working folder).
        track: open an MLflow pipeline run for the stages to nest under.
    Returns:
        One StageOutcome (as a dict) per stage, in the order they ran.
    """
    log = get_run_logger()
    root = Path(project_dir or os.getcwd()).resolve()
    changed = apply_overrides(root / "params.yaml", params or {})
    for key, (old, new) in changed.items():
        log.info("params.yaml: %s = %r (was %r)", key, new, old)
    check_project(root)  # before DVC reads it: one line naming the file and key (pipeline.params_check)
    specs = select(load_pipeline(root), stages)
    owner = PipelineRun(root, "mlflow flow", tags={"prefect.flow_run_id": str(flow_run.get_id() or "")})
    extra = owner.open() if track else {}
    if owner.run_id:
        log.info("MLflow pipeline run %s at %s", owner.run_id, owner.tracker.uri)
    todo = changed_stages(root, stage_env(extra))
    outcomes: list[StageOutcome] = []
    ran: set[str] = set()
    ok = False
    try:
        for spec in specs:
            must_run = todo is None or spec.name in todo or any(u in ran for u in spec.upstream)
            attempt = run_stage.with_options(task_run_name=spec.name, retries=retries,
                                             retry_delay_seconds=retry_delay_s)
            outcome = attempt(spec.name, str(root), stage_timeout_s, extra, must_run)
            outcomes.append(outcome)
            if outcome.ran:
                ran.add(spec.name)
        ok = True
    finally:
        line = owner.close(ok)
        if line:
            log.warning(line)
    log.info("%d of %d stages ran; the rest were up to date", len(ran), len(specs))
    return [asdict(o) for o in outcomes]


@flow(name="bert-torchrun-node")
def torchrun_node(stage: str, project_dir: Optional[str] = None, timeout_s: float = 6 * 3600.0) -> int:
    """One more node of a multi-node stage: the stage's command from dvc.yaml, outside DVC and untracked.

    The head node's pipeline flow runs the stage through DVC (which records its outputs) and MLflow;
    each other node runs this flow with the same stage at the same time. torchrun on every node takes
    its rendezvous from the environment (PET_NNODES, PET_RDZV_BACKEND, PET_RDZV_ENDPOINT, PET_RDZV_ID),
    and only global rank 0 writes outputs, so these nodes only compute.

    Args:
        stage: the stage's name, e.g. "finetune@mrpc-1".
        project_dir: the repo root (default: the working folder), with the stage's inputs in place.
        timeout_s: time limit; past it the command's process group is killed.
    Returns:
        0 (a failure raises StageFailed).
    """
    log = get_run_logger()
    root = Path(project_dir or os.getcwd()).resolve()
    spec = next((s for s in load_pipeline(root) if s.name == stage), None)
    if spec is None:
        raise ValueError(f"{root / 'dvc.yaml'}: no stage {stage!r}")
    log.info("$ %s", spec.cmd)
    code = run_streaming(["/bin/sh", "-c", spec.cmd], root, stage_env({"BERT_TRACKING": "off"}), timeout_s, log.info)
    if code != 0:
        raise StageFailed(f"{stage}: the command exited with status {code}")
    return 0


def select(specs: list[StageSpec], names: Optional[list[str]]) -> list[StageSpec]:
    """The named stages and everything upstream of them, in order (all stages when `names` is empty).

    Raises:
        ValueError: a name that dvc.yaml does not have.
    """
    if not names:
        return specs
    by_name = {s.name: s for s in specs}
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in by_name:
            # a foreach/matrix group name ("finetune") stands for all its items
            group = [s.name for s in specs if s.name.split("@")[0] == name]
            if not group:
                raise ValueError(f"dvc.yaml: no stage {name!r} (stages: {', '.join(by_name)})")
            stack.extend(group)
            continue
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].upstream)
    return [s for s in specs if s.name in wanted]


def main(argv: Optional[list[str]] = None) -> int:
    """CLI: run the flow once, here; 0 when every stage completed."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.flow", description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key (value read as YAML), e.g. finetune.epochs=1")
    parser.add_argument("--stage", dest="stages", action="append", help="run only this stage and its upstream")
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--retry-delay", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds per stage attempt")
    parser.add_argument("--no-track", action="store_true", help="no MLflow pipeline run")
    parser.add_argument("--project-dir", default=None)
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(a) for a in args.overrides)
    except ValueError as err:
        parser.error(str(err))
    state = pipeline_flow(params=overrides, stages=args.stages, retries=args.retries,
                          retry_delay_s=args.retry_delay, stage_timeout_s=args.timeout,
                          project_dir=args.project_dir, track=not args.no_track, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    raise SystemExit(main())
