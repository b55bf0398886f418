"""Run one pipeline stage with its MLflow record (the wrapper dvc.yaml's commands go through), or the
whole pipeline under the run its stages' records go into (what `make run` calls).

    python -m pipeline.track -- torchrun --nproc_per_node 1 -m stages.finetune --task demo-pair ...
    python -m pipeline.track --stage finetune@demo-pair-1 -- python -m stages.finetune ...   # by hand
    python -m pipeline.track --pipeline -- dvc repro                                       # make run

A stage runs as a child process and never imports this package (imports point pipeline -> stages).
Its record belongs to the pipeline run ``$MLFLOW_PARENT_RUN_ID``, set by what started the pipeline;
without it (a plain ``dvc repro``) the stage's run is a top-level run, tagged ``bert.pipeline_run=none``.
The stage's name is DVC's (``$DVC_STAGE``, set by DVC for every command); its deps, outs, metrics,
plots and params come from dvc.yaml through DVC. While the stage runs, the wrapper tails the training
history the stage streams to ``$BERT_HISTORY_STREAM`` (JSON lines, rank 0 only) and logs each point
as MLflow metrics at its step. What the record holds, and where it goes (a fine-tuning trial's run,
or the pipeline run itself for the stages that prepare data or summarise), is pipeline.stagerun's.
``BERT_MLFLOW_ARTIFACTS=off`` logs no files.

The exit status is the stage's. ``BERT_TRACKING=off`` runs the stage untracked. A stage command's
``python`` is this interpreter (dvc.yaml starts the wrapper with bin/python: the project's, whatever PATH says).

With ``--pipeline`` the params files are checked first (pipeline.params_check, in a process of its own: a
problem is one line, exit 1, and nothing runs); then the command (``dvc repro`` and its arguments) runs under
one pipeline run (pipeline.tracking.PipelineRun), created before it starts and handed to its stages in
``MLFLOW_PARENT_RUN_ID``; it ends FINISHED when the command exits 0, FAILED otherwise. The command runs
in a process group of its own, and SIGINT, SIGTERM or SIGHUP sent to this process go to that whole
group, as a terminal's Ctrl-C would: DVC alone would not stop the stage (it ignores SIGINT while a
stage runs, and SIGTERM kills DVC but not the stage). What still runs ``STOP_GRACE_S`` later is killed,
and a run left unended is marked KILLED, so nothing is left RUNNING. The exit status is the
command's, 128 + N when signal N interrupted it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import scratch_folder
from pipeline.stagerun import StageRun
from pipeline.tracking import PipelineRun, project_root, tracking_off

HISTORY_ENV = "BERT_HISTORY_STREAM"
POLL_SECONDS = 2.0
STOP_GRACE_S = 30.0  # after a signal, how long the pipeline's processes get to end (and end their runs)

logger = logging.getLogger("pipeline.track")


class HistoryTail:
    """Reads the JSON lines appended to a file since the last read (a partial last line waits)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.buffer = path, 0, b""

    def read(self) -> list[dict]:
        """The complete new records (lines that are not JSON objects are skipped)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        self.offset += len(chunk)
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def run(cmd: list[str], stage: str, root: Path, under_dvc: bool) -> int:
    """Run `cmd` tracked as stage `stage`; returns its exit status (negative: killed by that signal)."""
    with scratch_folder(Path(tempfile.gettempdir()) / "bert-track") as scratch:  # gone after a kill too
        return _run_tracked(cmd, stage, root, under_dvc, scratch / "history.jsonl")


def _run_tracked(cmd: list[str], stage: str, root: Path, under_dvc: bool, stream: Path) -> int:
    env = {**os.environ, HISTORY_ENV: str(stream)}
    child = subprocess.Popen(cmd, env=env)  # first, so MLflow's start-up overlaps the stage's

    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    tracked = StageRun(root, stage, under_dvc, cmd)
    try:
        tracked.start()
        tail = HistoryTail(stream)
        while True:
            tracked.log_history(tail.read())
            try:
                child.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
        tracked.log_history(tail.read())
    except Exception as err:  # a tracking bug must not orphan or fail the stage
        print(f"[mlflow {stage}] tracking stopped: {type(err).__name__}: {err}", file=sys.stderr)
    returncode = child.wait()
    try:
        tracked.finish(returncode, killed=bool(received) or returncode < 0)
    except Exception as err:
        print(f"[mlflow {stage}] tracking could not finish: {type(err).__name__}: {err}", file=sys.stderr)
    return returncode


class _GroupSignals:
    """A signal handler passing each signal this process receives on to one process group, once it exists."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.pgid: Optional[int] = None
        self.sent = 0

    def __call__(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        self.forward()

    def forward(self) -> None:
        """Send the signals not sent yet (those that came before the group existed, too)."""
        while self.pgid is not None and self.sent < len(self.received):
            signum = self.received[self.sent]
            self.sent += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie no one has reaped yet does not)."""
    import psutil  # a dependency of DVC

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _stop_group(pgid: int, grace_s: float) -> None:
    """Wait up to `grace_s` for process group `pgid` to end, then SIGKILL what is left of it."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            print(f"[mlflow pipeline] the pipeline's processes still ran {grace_s:g} s later: killed", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)


def run_pipeline(cmd: list[str], root: Path) -> int:
    """Run `cmd` (e.g. `dvc repro`) as one pipeline run that its stages nest under (see the module docstring).

    Args:
        cmd: the command that runs the pipeline.
        root: the repo root (where the tracking store is).
    Returns:
        The command's exit status; 128 + N when signal N interrupted it.
    """
    # params.yaml first, whole: DVC meets some mistakes only in its own words (pipeline.params_check)
    checked = subprocess.run([sys.executable, "-m", "pipeline.params_check"], cwd=root, stdin=subprocess.DEVNULL)
    if checked.returncode != 0:  # it said what is wrong in one line; nothing ran
        return checked.returncode
    signals = _GroupSignals()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signals)
    owner = PipelineRun(root, "mlflow pipeline", tags={"command": shlex.join(cmd)})
    status = 1
    try:
        env = {**os.environ, **owner.open()}
        if owner.run_id:
            print(f"[mlflow pipeline] pipeline run {owner.run_id} at {owner.tracker.uri}", file=sys.stderr, flush=True)
        if not signals.received:
            # its own process group, for the signals; no terminal input: a prompt must not stop the pipeline
            child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, process_group=0)
            signals.pgid = child.pid
            signals.forward()  # what came while it started
            status = child.wait()
            if not signals.received and _group_alive(child.pid):  # DVC is gone: what it started must not outlive it
                os.killpg(child.pid, signal.SIGTERM)
            _stop_group(child.pid, STOP_GRACE_S)
    except OSError as err:  # the command could not start
        print(f"[mlflow pipeline] {shlex.join(cmd)}: {err}", file=sys.stderr)
        status = 127
    finally:
        if signals.received:
            status = 128 + signals.received[0]
        elif status < 0:
            status = 128 - status  # as a shell reports a signal
        tags = {"exit_code": status}
        if signals.received:
            tags["interrupted_by"] = signal.Signals(signals.received[0]).name
        line = owner.close(status == 0, tags)
        if line:
            print(line, file=sys.stderr, flush=True)
    return status


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the command's exit status (128 + N when a signal N killed it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m pipeline.track [--stage NAME | --pipeline] -- COMMAND ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m pipeline.track", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stage", help="the stage's name in dvc.yaml (default: $DVC_STAGE, set by DVC)")
    which.add_argument("--pipeline", action="store_true",
                       help="COMMAND runs the pipeline (dvc repro): open the run its stages nest under")
    args = parser.parse_args(argv[:split])
    cmd = argv[split + 1:]
    if not cmd:
        parser.error("no command after --")
    if args.pipeline:
        return run_pipeline(cmd, project_root())
    if cmd[0] in ("python", "python3"):  # the stage runs on this interpreter, the one bin/python chose
        cmd[0] = sys.executable
    stage = args.stage or os.environ.get("DVC_STAGE")
    if tracking_off() or not stage:
        if not stage:
            print("[mlflow] no stage name (--stage or $DVC_STAGE): running untracked", file=sys.stderr)
        returncode = subprocess.call(cmd)
    else:
        returncode = run(cmd, stage, project_root(), under_dvc="DVC_STAGE" in os.environ)
    return 128 - returncode if returncode < 0 else returncode  # as a shell reports a signal


if __name__ == "__main__":
    raise SystemExit(main())
