"""Fine-tuning trials in MLflow: one run per (task, seed, training settings), and the champion of each task.

    trial run        params  task, seed, finetune.* (the training section actually used), and the params of
                             the stages upstream of it (model.name, tokenize.*, data.*): the keys that define it
                     tags    task, seed, bert.trial (a hash of the training section), setting (its cell of
                             params.yaml's search grid, when there is one), git commit, device,
                             precision, world size, DVC's hashes (its data, its model, one digest of its code)
                     metrics the training curves (loss, learning_rate, ... at their steps), dev.<metric>
                     model   the fine-tuned model as an MLflow Model (pipeline.models), logged with the dev metrics

The finetune stage's wrapper finds or creates the trial run under the pipeline run (``find_trial`` then
``create_trial``), keyed by (pipeline run, task, seed, settings hash); the evaluate stage's wrapper computes
the same key from the model folder's training.json (the section the stage actually trained with) and logs
into that run, or creates it there with the history file's curves when the pipeline run re-evaluated a model
it did not train. A trial is named for its task, its cell of the search grid and its seed, then what sets it apart from the last
trial of those (``demo-pair lr5e-05 seed1 | finetune.warmup_proportion=0.2``), as pipeline runs are.

The champion of a task: whichever trial the report chose (its rule is the report's: stages/report.py writes
``chosen`` per task in reports/metrics.json); ``register_champion`` takes that trial, whatever chose it,
registers its model as a new version of ``bert-<task>`` (or finds the version it already is) and points the
alias ``champion`` at it: ``mlflow models serve -m models:/bert-<task>@champion``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from pipeline.tracking import KIND_TAG, NO_PARENT_TAG, PARENT_TAG, Tracker, changed_params, param_value
from stages._lib.search import label, setting_id

TRIAL_TAG = "bert.trial"  # the hash of the training section: one value per setting
SETTING_TAG = "setting"  # a trial's cell of params.yaml's search grid, e.g. learning_rate=5e-05
FINETUNE_TAG = "dvc.stage.finetune"  # the DVC stage that trained it (dvc.stage.evaluate: the one that evaluated it)
MODEL_PREFIX = "bert-"  # registered models are bert-<task>
CHAMPION = "champion"
NAMED_CHANGES = 3


def settings_hash(section: dict[str, Any]) -> str:
    """A short, stable hash of a training section ({key: value}, keys without the section's name).

    Numbers hash by value (2 and 2.0 alike: YAML writes either), so params.yaml's section and the
    stage's training.json record of it agree.
    """
    def plain(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return value

    text = json.dumps({k: plain(v) for k, v in section.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def trial_params(task: str, seed: int, section_name: str, section: dict[str, Any],
                 upstream: dict[str, Any]) -> dict[str, Any]:
    """The params a trial run holds: task, seed, the training section (dotted) and the upstream stages' params."""
    return {"task": task, "seed": seed, **upstream, **{f"{section_name}.{k}": v for k, v in section.items()}}


def trial_name(task: str, seed: int, changes: Optional[dict[str, str]], setting: str = "") -> str:
    """`demo-pair seed1` (`demo-pair lr5e-05 seed1`: a cell of the search grid, its setting id), then what differs
    from the last trial of this task, setting and seed, if there was one."""
    base = f"{task} {setting} seed{seed}" if setting else f"{task} seed{seed}"
    if changes is None:
        return base
    shown = ", ".join(f"{k}={v}" for k, v in list(changes.items())[:NAMED_CHANGES]) or "same params"
    if len(changes) > NAMED_CHANGES:
        shown += f" +{len(changes) - NAMED_CHANGES} more"
    return f"{base} | {shown}"


def _query(task: str, seed: int, extra: dict[str, str]) -> str:
    clauses = {KIND_TAG: "trial", "task": task, "seed": str(seed), **extra}
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in clauses.items())


def find_trial(tracker: Tracker, parent: Optional[str], task: str, seed: int, key: str,
               model_hash: Optional[tuple[str, str]] = None, anywhere: bool = False,
               stage: Optional[str] = None) -> Optional[str]:
    """The newest trial run of (pipeline run, task, seed, settings hash), or None.

    Args:
        parent: the pipeline run (None: a trial no pipeline run holds).
        model_hash: (tag, value): also require the model's DVC hash, e.g. ("dvc.out/models/...", "<md5>.dir").
        anywhere: under any pipeline run or none, and only a trial with a logged model.
        stage: also require the finetune stage's DVC name (two items of a matrix are two trials, even before
            their training.json says how each differs).
    """
    extra = {TRIAL_TAG: key, **({FINETUNE_TAG: stage} if stage else {})}
    if not anywhere:
        extra.update({PARENT_TAG: parent} if parent else {NO_PARENT_TAG: "none"})
    if model_hash:
        extra[model_hash[0]] = model_hash[1]
    found = tracker.call("trial search", lambda: tracker.client.search_runs(
        [tracker.experiment_id], _query(task, seed, extra), max_results=20 if anywhere else 1,
        order_by=["attributes.start_time DESC"])) or []
    if anywhere:
        found = [run for run in found if logged_model_of(tracker, run.info.run_id)]
    return found[0].info.run_id if found else None


def create_trial(tracker: Tracker, parent: Optional[str], task: str, seed: int, key: str, params: dict[str, Any],
                 tags: dict[str, str], setting: Optional[dict[str, Any]] = None) -> Optional[str]:
    """A new trial run with its params and tags, named against the last trial of its task, setting and seed.

    Args:
        setting: its cell of params.yaml's search grid ({key: value}; None or {}: no grid), tagged ``setting``.
    """
    cell = {SETTING_TAG: label(setting)} if setting else {}
    last = tracker.call("last trial", lambda: tracker.client.search_runs(
        [tracker.experiment_id], _query(task, seed, cell), max_results=1, order_by=["attributes.start_time DESC"]))
    changes = None
    if last:
        changes = changed_params(last[0].data.params, params)
    tags = {KIND_TAG: "trial", "task": task, "seed": str(seed), TRIAL_TAG: key, **cell, **tags}
    if not parent:
        tags[NO_PARENT_TAG] = "none"
    run_id = tracker.create_run(trial_name(task, seed, changes, setting_id(setting or {})), tags, parent=parent)
    tracker.log_params(run_id, params)
    return run_id


def logged_model_of(tracker: Tracker, run_id: str) -> Optional[str]:
    """The id of the newest MLflow Model logged by a run (None if it logged none)."""
    run = tracker.call("trial", lambda: tracker.client.get_run(run_id))
    outputs = getattr(run, "outputs", None) if run else None
    models = list(getattr(outputs, "model_outputs", None) or [])
    return models[-1].model_id if models else None


def register_champion(tracker: Tracker, trial_run: str, task: str, why: dict[str, Any]) -> Optional[str]:
    """Register the model of a chosen trial as ``bert-<task>`` and point the alias ``champion`` at it.

    The rule that chose the trial is not this function's: it takes the trial whatever chose it.

    Args:
        trial_run: the chosen trial's run id (its model logged by pipeline.models).
        task: the task (the registered model is bert-<task>).
        why: what the choice rests on (metric, value, rule...), set as tags of the version.
    Returns:
        The champion's version, or None when the trial has no model or the registry is unavailable.
    """
    model_id = logged_model_of(tracker, trial_run)
    if model_id is None:
        print(f"[{tracker.label}] trial run {trial_run} has no logged model: no champion for {task}")
        return None
    client, name, source = tracker.client, MODEL_PREFIX + task, f"models:/{model_id}"
    import mlflow

    mlflow.set_tracking_uri(tracker.uri)  # MLflow's registry store reads the logged model through the global URI
    if tracker.call("registered model", lambda: client.search_registered_models(f"name = '{name}'")) == []:
        tracker.call("registered model", lambda: client.create_registered_model(
            name, description=f"Fine-tuned BERT for {task}; the alias {CHAMPION} is the report's choice."))
    versions = tracker.call("model versions", lambda: client.search_model_versions(f"name = '{name}'")) or []
    version = next((v.version for v in versions if v.source == source), None)  # registered already
    if version is None:
        created = tracker.call("model version", lambda: client.create_model_version(
            name, source, run_id=trial_run, model_id=model_id,
            tags={k: param_value(v) for k, v in why.items()}))
        version = created.version if created is not None else None
    if version is not None:
        tracker.call("alias", lambda: client.set_registered_model_alias(name, CHAMPION, version))
    return str(version) if version is not None else None
