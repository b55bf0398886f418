"""Run one pipeline stage as a nested MLflow run (the wrapper dvc.yaml's commands go through), or the
whole pipeline under the run its stages nest in (what `make run` calls).

    python -m pipeline.track -- torchrun --nproc_per_node 1 -m stages.finetune --task demo-pair ...
    python -m pipeline.track --stage finetune@demo-pair-1 -- python -m stages.finetune ...   # by hand
    python -m pipeline.track --pipeline -- dvc repro                                       # make run

A stage runs as a child process and never imports this package (imports point pipeline -> stages).
Its run nests under ``$MLFLOW_PARENT_RUN_ID``, set by what started the pipeline; without it (a plain
``dvc repro``) the stage's run is a top-level run, tagged ``bert.pipeline_run=none``. The stage's name
is DVC's (``$DVC_STAGE``, set by DVC for every command); its deps, outs, metrics, plots and params come
from dvc.yaml through DVC. While the stage runs, the wrapper tails the training history the stage
streams to ``$BERT_HISTORY_STREAM`` (JSON lines, rank 0 only) and logs each point as MLflow metrics at
its step. When the stage ends the wrapper logs, in its run:

- params: the params.yaml keys the stage declares in dvc.yaml;
- metrics: every history point not yet logged (from the stage's history file: a plots/outs JSON list
  of {"step", "loss", ...}), and the numbers of the stage's metrics files (declared in dvc.yaml, or a
  metrics.json at the top of an out folder); a stage that is not a foreach/matrix item, the report,
  also gives them to the parent run;
- artifacts: metrics and plots files, and the outs of the stages that produce results (metrics or
  plots) and of those downstream of them: the fine-tuned model, predictions, the report. The stages
  that prepare inputs (download, convert, tokenize) are recorded by their hashes only: DVC's cache has
  their data. Persistent outs (checkpoints) are not archived. ``BERT_MLFLOW_ARTIFACTS=off`` logs none;
- tags: git commit, DVC's hashes of the stage's deps and outs (as dvc.lock records them), host,
  device, world size and precision (from the stage's summary JSON and params).

The exit status is the stage's. ``BERT_TRACKING=off`` runs the stage untracked.

With ``--pipeline`` the command (``dvc repro`` and its arguments) runs under one pipeline run
(pipeline.tracking.PipelineRun), created before it starts and handed to its stages in
``MLFLOW_PARENT_RUN_ID``; it ends FINISHED when the command exits 0, FAILED otherwise. The command runs
in a process group of its own, and SIGINT, SIGTERM or SIGHUP sent to this process go to that whole
group, as a terminal's Ctrl-C would: DVC alone would not stop the stage (it ignores SIGINT while a
stage runs, and SIGTERM kills DVC but not the stage). What still runs ``STOP_GRACE_S`` later is killed,
and a stage run left unended is marked KILLED, so nothing is left RUNNING. The exit status is the
command's, 128 + N when signal N interrupted it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.dvcgraph import StageSpec, load_pipeline, result_stages, stage_hashes
from pipeline.tracking import (KIND_TAG, NO_PARENT_TAG, PARENT_ENV, PipelineRun, Tracker, git_facts, metric_key,
                               numeric_leaves, project_root, read_params, tracking_off)

HISTORY_ENV = "BERT_HISTORY_STREAM"
POLL_SECONDS = 2.0
STOP_GRACE_S = 30.0  # after a signal, how long the pipeline's processes get to end (and end their runs)
SUMMARY_MAX_BYTES = 1 << 20
METRICS_NAME = "metrics.json"  # JSON files read for device / world size facts

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


def read_history_file(path: Path) -> Optional[list[dict]]:
    """A training history: a JSON list of {"step": int, ...} (or JSON lines of them); None if it is not one."""
    if not path.is_file() or path.suffix not in (".json", ".jsonl"):
        return None
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            records = json.loads(text)
        else:
            records = [json.loads(x) for x in text.splitlines() if x.strip()]
    except (OSError, ValueError):
        return None
    if isinstance(records, list) and records and all(isinstance(r, dict) and "step" in r for r in records):
        return records
    return None


def history_points(records: list[dict], logged: set[int]) -> list[tuple[str, float, int]]:
    """(key, value, step) for the numbers of each record whose step is not in `logged` (updated)."""
    points = []
    for record in records:
        step = record.get("step")
        if not isinstance(step, int) or step in logged:
            continue
        logged.add(step)
        points.extend((key, float(value), step) for key, value in record.items()
                      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool))
    return points


def run_facts(root: Path, spec: StageSpec, params: dict[str, Any]) -> dict[str, str]:
    """Device, allocator, world size and precision of a stage: its summary JSON if it wrote one, else its params."""
    facts: dict[str, str] = {}
    for key, value in params.items():
        if key.endswith(".precision"):
            facts["precision"] = str(value)
        elif key.endswith(".nproc"):
            facts["world_size"] = str(value)
    candidates: list[Path] = []
    for rel in spec.outs:
        path = root / rel
        candidates.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    for path in candidates:
        if path.suffix != ".json" or not path.is_file() or path.stat().st_size > SUMMARY_MAX_BYTES:
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and "world_size" in summary:
            facts["world_size"] = str(summary["world_size"])
            environment = summary.get("environment") or {}
            for key in ("device", "allocator"):  # the allocator: why two runs' speeds differ
                if environment.get(key):
                    facts[key] = str(environment[key])
            break
    return facts


def metrics_files(root: Path, spec: StageSpec) -> list[Path]:
    """The metrics files dvc.yaml declares, and a metrics.json at the top of an out folder (evaluate's)."""
    found = [root / rel for rel in spec.metrics]
    found += [root / rel / METRICS_NAME for rel in spec.outs if (root / rel / METRICS_NAME).is_file()]
    return found


def stage_params(root: Path, spec: StageSpec) -> dict[str, Any]:
    """The params.yaml values the stage declares (a section name brings the whole section)."""
    values = read_params(root)
    chosen = {}
    for key in spec.params:
        chosen.update({k: v for k, v in values.items() if k == key or k.startswith(key + ".")})
    return chosen


class StageRun:
    """The nested MLflow run of one stage execution, fed while the stage runs and closed after it."""

    def __init__(self, root: Path, name: str, under_dvc: bool):
        self.root, self.name = root, name
        self.tracker = Tracker(root, label=f"mlflow {name}")
        self.parent: Optional[str] = None
        self.run_id: Optional[str] = None
        self.logged_steps: set[int] = set()
        self.spec: Optional[StageSpec] = None
        self.archive = False  # whether the stage's outs are results to keep as artifacts
        self.params: dict[str, Any] = {}
        self.under_dvc = under_dvc

    def start(self) -> None:
        """Connect, and open this stage's run (under $MLFLOW_PARENT_RUN_ID if set) with params and tags."""
        try:
            specs = load_pipeline(self.root) if self.under_dvc or (self.root / "dvc.yaml").is_file() else []
            by_name = {s.name: s for s in specs}
            # DVC_STAGE names the file too when dvc ran in another folder
            self.spec = by_name.get(self.name) or by_name.get(self.name.rpartition(":")[2])
            self.archive = self.spec is not None and self.spec.name in result_stages(specs)
        except Exception as err:  # a broken dvc.yaml is DVC's to report; tracking goes on without the spec
            print(f"[{self.tracker.label}] could not read the stage from dvc.yaml: {err}", file=sys.stderr)
        if self.spec is None and self.under_dvc:
            print(f"[{self.tracker.label}] dvc.yaml has no stage {self.name!r}; only its history is logged",
                  file=sys.stderr)
        self.tracker.connect()  # if it fails, the calls below only count what goes unlogged
        self.parent = os.environ.get(PARENT_ENV) or None  # set by what started the pipeline, if anything did
        tags = {KIND_TAG: "stage", "dvc.stage": self.name, "host": platform.node(), **git_facts(self.root)}
        if not self.parent:
            tags[NO_PARENT_TAG] = "none"
        self.run_id = self.tracker.create_run(self.name, tags, parent=self.parent)
        if self.spec is not None:
            self.params = stage_params(self.root, self.spec)
            self.tracker.log_params(self.run_id, self.params)
        if self.run_id:
            where = (f"in pipeline run {self.parent}" if self.parent else
                     f"with no pipeline run ({NO_PARENT_TAG}=none; `make run` and the flow open one)")
            print(f"[{self.tracker.label}] run {self.run_id} {where} at {self.tracker.uri}",
                  file=sys.stderr, flush=True)

    def log_history(self, records: list[dict]) -> None:
        """Log the points of steps not logged yet."""
        points = history_points(records, self.logged_steps)
        if points:
            self.tracker.log_points(self.run_id, points)

    def finish(self, returncode: int, killed: bool = False) -> None:
        """Log what the stage produced (if it succeeded), its hashes and tags, and end the runs."""
        spec, tracker = self.spec, self.tracker
        ok = returncode == 0 and not killed
        if spec is not None and ok:
            for rel in spec.plots + spec.outs:
                records = read_history_file(self.root / rel)
                if records:
                    self.log_history(records)
            metrics = {}
            for path in metrics_files(self.root, spec):
                try:
                    metrics.update(numeric_leaves(json.loads(path.read_text(encoding="utf-8"))))
                except (OSError, ValueError) as err:
                    print(f"[{tracker.label}] metrics file {path} unreadable: {err}", file=sys.stderr)
            if metrics:
                tracker.log_metrics(self.run_id, metrics)
                if "@" not in spec.name and self.parent:  # the pipeline's own summary (the report's)
                    tracker.log_metrics(self.parent, metrics)
            files = list(spec.metrics + spec.plots)
            if self.archive:
                files += [rel for rel in spec.outs if rel not in spec.persist]
            if os.environ.get("BERT_MLFLOW_ARTIFACTS", "on").lower() not in ("0", "off", "false"):
                for rel in files:
                    parent = str(Path(rel).parent.as_posix())
                    tracker.log_artifact(self.run_id, self.root / rel, None if parent == "." else parent)
            facts = run_facts(self.root, spec, self.params)
            if facts:
                tracker.set_tags(self.run_id, facts)
                if self.parent:
                    tracker.set_tags(self.parent, facts)
            try:
                hashes = {metric_key(f"dvc.{k}"): v for k, v in stage_hashes(self.root, spec.name).items()}
            except Exception as err:  # hashes are a record, not a reason to fail a stage that succeeded
                print(f"[{tracker.label}] could not hash the stage's deps and outs: {err}", file=sys.stderr)
                hashes = {}
            tracker.set_tags(self.run_id, hashes)
        status = "FINISHED" if ok else "KILLED" if killed or returncode < 0 else "FAILED"
        tracker.set_tags(self.run_id, {"exit_code": returncode})
        tracker.set_status(self.run_id, status)
        line = tracker.summary()
        if line:
            print(line, file=sys.stderr, flush=True)


def run(cmd: list[str], stage: str, root: Path, under_dvc: bool) -> int:
    """Run `cmd` tracked as stage `stage`; returns its exit status (negative: killed by that signal)."""
    scratch = Path(tempfile.mkdtemp(prefix="bert-track-"))
    stream = scratch / "history.jsonl"
    env = {**os.environ, HISTORY_ENV: str(stream)}
    child = subprocess.Popen(cmd, env=env)  # first, so MLflow's start-up overlaps the stage's

    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    tracked = StageRun(root, stage, under_dvc)
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
    shutil.rmtree(scratch, ignore_errors=True)
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
