"""MLflow glue: where runs go, the one pipeline run per execution, and logging that never stops a stage.

    tracking URI   $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db (artifacts in <repo>/mlartifacts/)
    experiment     $MLFLOW_EXPERIMENT_NAME, else "bert-pipeline"

One pipeline execution is one parent run, owned by what starts the pipeline: `make run`
(``python -m pipeline.track --pipeline -- dvc repro``) and the Prefect flow each open a ``PipelineRun``
before any stage runs, hand its id to the stages in ``MLFLOW_PARENT_RUN_ID``, and end it themselves:
FINISHED when the pipeline succeeded, FAILED when it failed or was interrupted. Every stage run nests
under the id its environment gives (tag ``mlflow.parentRunId``); a stage given none (a plain
``dvc repro`` or ``dvc exp run``) is a top-level run, tagged ``bert.pipeline_run=none``.

What goes where (pipeline.stagerun): the experiment is a classic ML experiment (tag
``mlflow.experimentKind``); under each pipeline run, one run per fine-tuning trial (pipeline.trials); the
stages that prepare data or summarise (download, convert, tokenize, baseline, report) are folded into the
pipeline run itself: a ``stage/<name>`` tag with their status, their DVC hashes, the report's metrics and files.

Tracking never stops a stage: the first failure to reach the tracking store is reported in one line,
the stage goes on untracked, and at the end one line says what could not be logged.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

DEFAULT_EXPERIMENT = "bert-pipeline"
PARENT_ENV = "MLFLOW_PARENT_RUN_ID"  # the pipeline run's id, set by what starts the pipeline
OFF_ENV = "BERT_TRACKING"  # 0 / off / false: no runs at all
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "bert.run_kind"  # "pipeline", "trial" or "stage" (a stage run that no pipeline run holds)
NO_PARENT_TAG = "bert.pipeline_run"  # "none" on a stage or trial run that no pipeline run holds
STAGE_TAG = "stage/"  # on a pipeline run: stage/<DVC name, @ as /> -> the status of each stage it ran
# MLflow 3's UI opens an experiment as GenAI or classic ML: the tag MLflow sets for the latter (3.17's UI also
# keeps a per-browser switch, which ?workflowType=machine_learning in the address sets: pipeline.tracking.ui_url).
EXPERIMENT_KIND_TAG, ML_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"
NAMED_CHANGES = 3  # params named in a pipeline run's name; more are counted
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_STAGE_RUNS = 10000  # the stage runs one pipeline run is searched for when it ends


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repo root: $DVC_ROOT (set by DVC for stage commands), else the nearest folder with .dvc/ or dvc.yaml."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / "dvc.yaml").is_file():
            return folder
    return here


def tracking_off() -> bool:
    """Whether $BERT_TRACKING turns tracking off."""
    return os.environ.get(OFF_ENV, "").lower() in ("0", "off", "false")


def tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite file (an absolute URI, so any cwd finds it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').as_posix()}"


def quiet_mlflow_env() -> None:
    """No telemetry, no progress bars, and a dead server fails within seconds instead of minutes of retries."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # logging a model: no bars in the log


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"finetune": {"epochs": 3}} -> {"finetune.epochs": 3}.

    Lists are kept whole (a list of tasks is one param); use `numeric_leaves` for metrics.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def numeric_leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value under a dotted key (list items by index); bools and text are left out."""
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: float(value)}
    else:
        return {}
    out: dict[str, float] = {}
    for key, item in items:
        out.update(numeric_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def metric_key(key: str) -> str:
    """A key MLflow accepts (letters, digits, _ - . / and space); anything else becomes _."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def param_value(value: Any) -> str:
    """A param as text: lists and mappings as JSON, cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def git_facts(root: Path) -> dict[str, str]:
    """The commit the code ran at (MLflow's standard tag) and whether the tree had changes."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


@dataclass
class Tracker:
    """MlflowClient calls that fail soft: after the first failure (said once) nothing more is tried.

    Every call that could not be made is counted under a short label, for the summary at the end.
    """

    root: Path
    uri: str = ""
    experiment_name: str = ""
    label: str = "mlflow"  # how the one-line messages start
    client: Any = None
    experiment_id: Optional[str] = None
    down: Optional[str] = None  # why tracking stopped
    unlogged: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.uri = self.uri or tracking_uri(self.root)
        self.experiment_name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT

    def _fail(self, what: str, err: BaseException) -> None:
        self.unlogged[what] = self.unlogged.get(what, 0) + 1
        if self.down is None:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            self.down = reason
            print(f"[{self.label}] MLflow tracking at {self.uri} is unavailable ({type(err).__name__}: {reason}); "
                  "the stage goes on untracked", file=sys.stderr, flush=True)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, count: int = 1, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), or None (counting `what` as not logged) once tracking is down."""
        if self.down is not None:
            self.unlogged[what] = self.unlogged.get(what, 0) + count
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # any failure of the store: tracking must not stop the stage
            self._fail(what, err)
            if count > 1:
                self.unlogged[what] += count - 1
            return None

    def connect(self) -> bool:
        """Open the store and the experiment (created on first use). Returns whether tracking is up."""
        def open_store() -> None:
            quiet_mlflow_env()
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = None
                if self.uri == tracking_uri(self.root) and not os.environ.get("MLFLOW_TRACKING_URI"):
                    location = (self.root / "mlartifacts").as_uri()  # the default store keeps files beside it
                try:
                    self.experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: ML_EXPERIMENT})
                except Exception:  # made meanwhile by another process
                    exp = self.client.get_experiment_by_name(self.experiment_name)
                    if exp is None:
                        raise
            if exp is not None:
                self.experiment_id = exp.experiment_id
                if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older version, or by hand
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT)

        self.call("connection", open_store)
        return self.down is None

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, name: str, tags: dict[str, str], parent: Optional[str] = None) -> Optional[str]:
        """A new run in the experiment (nested under `parent` if given); its id, or None."""
        if parent:
            tags = {**tags, PARENT_TAG: parent}
        run = self.call("run", lambda: self.client.create_run(self.experiment_id, run_name=name, tags=tags))
        return run.info.run_id if run is not None else None

    def log_params(self, run_id: Optional[str], params: dict[str, Any]) -> None:
        """Params (values as text, see `param_value`), in batches MLflow accepts."""
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            self.call("params", lambda: self.client.log_batch(run_id, params=chunk), count=len(chunk))

    def log_metrics(self, run_id: Optional[str], metrics: dict[str, float], step: int = 0,
                    timestamp: Optional[int] = None, model_id: Optional[str] = None) -> None:
        """One value per key at `step` (finite or not: MLflow stores NaN and inf), of an MLflow Model if given."""
        self.log_points(run_id, [(k, v, step) for k, v in metrics.items()], timestamp, model_id)

    def log_points(self, run_id: Optional[str], points: list[tuple[str, float, int]],
                   timestamp: Optional[int] = None, model_id: Optional[str] = None) -> None:
        """Metric points (key, value, step), batched."""
        from mlflow.entities import Metric

        stamp = timestamp or int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), stamp, int(s), model_id=model_id) for k, v, s in points]
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            self.call("metric points", lambda: self.client.log_batch(run_id, metrics=chunk), count=len(chunk))

    def set_tags(self, run_id: Optional[str], tags: dict[str, Any]) -> None:
        """Tags (values as text)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, param_value(v)) for k, v in tags.items() if v is not None]
        if items:
            self.call("tags", lambda: self.client.log_batch(run_id, tags=items), count=len(items))

    def log_artifact(self, run_id: Optional[str], path: Path, artifact_path: Optional[str] = None) -> None:
        """A file, or a folder's contents under the folder's name."""
        if path.is_dir():
            dest = f"{artifact_path}/{path.name}" if artifact_path else path.name
            self.call(f"artifact {path}", lambda: self.client.log_artifacts(run_id, str(path), dest))
        elif path.is_file():
            self.call(f"artifact {path}", lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def set_status(self, run_id: Optional[str], status: str) -> None:
        """RUNNING re-opens a run; FINISHED / FAILED / KILLED end it now."""
        if status == "RUNNING":
            self.call("status", lambda: self.client.update_run(run_id, status="RUNNING"))
        else:
            self.call("status", lambda: self.client.set_terminated(run_id, status=status))

    def summary(self) -> Optional[str]:
        """One line saying what could not be logged, or None when everything was."""
        if not self.unlogged:
            return None
        parts = ", ".join(f"{n} {what}" if n > 1 else what for what, n in self.unlogged.items())
        return f"[{self.label}] not logged to MLflow ({self.uri}): {parts}"


def read_params(root: Path) -> dict[str, Any]:
    """params.yaml flattened to dotted keys ({} when it is missing or unreadable: tracking is best effort).

    Read as the stages read it (YAML 1.2, as DVC; PyYAML reads 5e-5 as text), so that an alias bomb is refused
    rather than flattened into billions of keys.
    """
    from stages._lib.params import ParamsError, read_params_file

    try:
        return flatten(read_params_file(root / "params.yaml"))
    except ParamsError:
        return {}


def changed_params(previous: Optional[dict[str, str]], params: dict[str, Any]) -> Optional[dict[str, str]]:
    """The params whose value differs from the last pipeline run's (as MLflow keeps them: text); None: no last run.

    A key the last run had and this one has not maps to "(none)".
    """
    if previous is None:
        return None
    now = {k: param_value(v) for k, v in params.items()}
    changed = {k: v for k, v in now.items() if previous.get(k) != v}
    changed.update({k: "(none)" for k in previous if k not in now})
    return changed


def pipeline_name(params: dict[str, Any], changes: Optional[dict[str, str]], commit: Optional[str],
                  dirty: Optional[str]) -> str:
    """A pipeline run's name: what it ran, what changed since the last one, the code it ran.

        demo-pair,demo-qa | finetune.learning_rate=0.0003 | 1a2b3c4
        mrpc | first run | 1a2b3c4+dirty
    """
    tasks = params.get("tasks")
    what = ",".join(map(str, tasks)) if isinstance(tasks, list) and tasks else "pipeline"
    if changes is None:
        change = "first run"
    else:
        shown = {k: v for k, v in changes.items() if k != "tasks"}  # the name starts with them
        change = ", ".join(f"{k}={v}" for k, v in list(shown.items())[:NAMED_CHANGES]) or "same params"
        if len(shown) > NAMED_CHANGES:
            change += f" +{len(shown) - NAMED_CHANGES} more"
    code = (commit[:7] + ("+dirty" if dirty == "true" else "")) if commit else "no git"
    return f"{what} | {change} | {code}"


def pipeline_note(params: dict[str, Any], changes: Optional[dict[str, str]]) -> str:
    """The run's description (Markdown, shown at the top of its page): what changed, where the trials are."""
    if changes is None:
        changed = "the first pipeline run of this experiment"
    elif not changes:
        changed = "the same params as the last pipeline run"
    else:
        changed = "changed since the last pipeline run: " + ", ".join(f"`{k}` = {v}" for k, v in changes.items())
    return (f"Tasks {params.get('tasks')}, seeds {params.get('seeds')}; {changed}. One child run per fine-tuning "
            "trial (its params, curves, dev metrics and model); the report, its metrics and the stages' DVC "
            "hashes are on this run.")


def ui_url(base: str, experiment_id: str) -> str:
    """The experiment's page in the MLflow UI at `base`, opened as a classic ML experiment (runs, not traces)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


class PipelineRun:
    """The parent run of one pipeline execution, created and ended by what starts the pipeline.

        owner = PipelineRun(root, "mlflow pipeline", tags={"command": "dvc repro"})
        env = {**os.environ, **owner.open()}   # MLFLOW_PARENT_RUN_ID=<id> for the stages
        ...                                     # the stages run, each nesting its run under <id>
        owner.close(ok)                         # FINISHED or FAILED: never left RUNNING
    """

    def __init__(self, root: Path, label: str, tags: Optional[dict[str, str]] = None):
        self.tracker = Tracker(root, label=label)
        self.tags = tags or {}
        self.run_id: Optional[str] = None

    def open(self) -> dict[str, str]:
        """Create the run, named for what it runs (`pipeline_name`), with the flattened params.yaml, git commit
        and host tags.

        Returns:
            The variables to add to the stages' environment: {MLFLOW_PARENT_RUN_ID: id}; {BERT_TRACKING: "off"}
            when the store is unavailable (said once here, so the stages need not each say it again); {} when
            $BERT_TRACKING is off.
        """
        if tracking_off():
            return {}
        params = read_params(self.tracker.root)
        if self.tracker.connect():
            tracker = self.tracker
            last = tracker.call("last pipeline run", lambda: tracker.client.search_runs(
                [tracker.experiment_id], f"tags.`{KIND_TAG}` = 'pipeline'", max_results=1,
                order_by=["attributes.start_time DESC"]))
            previous = last[0].data.params if last else None
            facts = git_facts(tracker.root)
            changes = changed_params(previous, params)
            tags = {KIND_TAG: "pipeline", "host": platform.node(), **facts, **self.tags,
                    "bert.changed_params": json.dumps(changes) if changes is not None else "first run",
                    "mlflow.note.content": pipeline_note(params, changes)}
            name = pipeline_name(params, changes, facts.get("mlflow.source.git.commit"), facts.get("git.dirty"))
            self.run_id = tracker.create_run(name, tags)
        if not self.run_id:
            return {OFF_ENV: "off"}
        self.tracker.log_params(self.run_id, params)
        return {PARENT_ENV: self.run_id}

    def close(self, ok: bool, tags: Optional[dict[str, Any]] = None) -> Optional[str]:
        """End the run: FINISHED if `ok`, else FAILED; first, as KILLED, any run under it still RUNNING and any
        stage its tags still say is running (a stage killed outright cannot end its own record).

        Args:
            ok: whether the pipeline succeeded.
            tags: more tags for the run; ``stages_run`` (the number of stages that ran in it) is added.
        Returns:
            The tracker's line on what could not be logged, or None.
        """
        tracker, run_id = self.tracker, self.run_id
        if run_id:
            query = f"tags.`{PARENT_TAG}` = '{run_id}'"
            stages = tracker.call("stage runs", lambda: tracker.client.search_runs(
                [tracker.experiment_id], query, max_results=MAX_STAGE_RUNS))
            for run in stages or []:
                if run.info.status == "RUNNING":
                    tracker.set_status(run.info.run_id, "KILLED")
            mine = tracker.call("stage tags", lambda: tracker.client.get_run(run_id))
            stage_tags = {k: v for k, v in mine.data.tags.items() if k.startswith(STAGE_TAG)} if mine else {}
            killed = {k: "KILLED" for k, v in stage_tags.items() if v == "RUNNING"}  # its wrapper could not say
            counted = {"stages_run": len(stage_tags)} if mine else {}
            tracker.set_tags(run_id, {**killed, **counted, **(tags or {})})
            tracker.set_status(run_id, "FINISHED" if ok else "FAILED")
        return tracker.summary()


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m pipeline.tracking url [BASE]`: the experiment's address in the MLflow UI (what `make ui` prints)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "url":
        print("usage: python -m pipeline.tracking url [BASE]   (BASE: http://127.0.0.1:5000)", file=sys.stderr)
        return 2
    base = args[1] if len(args) > 1 else "http://127.0.0.1:5000"
    tracker = Tracker(project_root(), label="mlflow ui")
    experiment = None
    if (tracker.root / "mlflow.db").is_file() or os.environ.get("MLFLOW_TRACKING_URI"):
        quiet_mlflow_env()
        from mlflow.tracking import MlflowClient

        experiment = tracker.call("experiment", lambda: MlflowClient(tracker.uri).get_experiment_by_name(
            tracker.experiment_name))
    print(ui_url(base, experiment.experiment_id) if experiment else
          f"{base.rstrip('/')}/#/experiments?workflowType=machine_learning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
