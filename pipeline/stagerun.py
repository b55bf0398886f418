"""What one stage execution records in MLflow: pipeline.track runs the stage and feeds a StageRun.

Where a stage's record goes depends on the stage (read from its command):

- finetune (``-m stages.finetune --task T --seed S``): its trial run (pipeline.trials), found or created
  under the pipeline run: params, tags, the training curves (live, and from the history file at the end),
  device / precision / world size from its training.json, DVC's hashes of its data, model and code.
- evaluate of a fine-tuned model (``-m stages.evaluate`` without ``--untrained``): the trial run of the
  model it evaluated (found from the model folder's training.json): ``dev.<metric>``, its output files
  under ``eval/``, and the model as an MLflow Model (pipeline.models) with the dev metrics linked to it.
- every other stage (download, convert, tokenize, baseline, report, pre-training): folded into the
  pipeline run: a ``stage/<name>`` tag with its status, DVC's hashes of its data deps and outs, its
  history and declared metrics (the report's as one figure per task and metric), its outs that DVC does
  not cache (the report; report.html with its figures inlined, so that MLflow's preview shows them); after
  the report, each task's chosen trial is registered as the champion. With no pipeline run (a plain
  ``dvc repro``) such a stage is a top-level run of its own, tagged ``bert.pipeline_run=none``.

Outs that DVC caches (data, features, models) are recorded by their hashes: DVC's cache has them; the
fine-tuned model is also an MLflow Model whose files are DVC's cached files, linked, not copied.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from bert.io import jsonfile
from bert.io.fileio import scratch_folder
from pipeline.dvcgraph import StageSpec, load_pipeline, stage_hashes
from pipeline.tracking import (KIND_TAG, NO_PARENT_TAG, PARENT_ENV, STAGE_TAG, Tracker, git_facts, metric_key,
                               numeric_leaves, read_params)
from pipeline.trials import (FINETUNE_TAG, TRIAL_TAG, create_trial, find_trial, register_champion,
                             settings_hash, trial_params)
from stages._lib.search import SECTION, command_overrides, setting_id

SUMMARY_MAX_BYTES = 1 << 20
METRICS_NAME = "metrics.json"  # an evaluate out folder's metrics
TRAINING_NAME = "training.json"  # a fine-tuned model folder's record of its training (stages.finetune)
IMAGE = re.compile(r'(<img\s[^>]*src=")([^":]+\.png)(")')


def stage_key(name: str) -> str:
    """The pipeline run's tag for a stage: stage/finetune/demo-pair-1 (MLflow keys have no @)."""
    return metric_key(STAGE_TAG + name.replace("@", "/"))


def flag(cmd: list[str], name: str) -> Optional[str]:
    """The value after `name` in a command line (the first one), or None."""
    for i, token in enumerate(cmd[:-1]):
        if token == name:
            return cmd[i + 1]
    return None


def stage_kind(cmd: list[str]) -> str:
    """"trial" (finetune), "evaluation" (evaluate of a fine-tuned model) or "stage" (the others)."""
    modules = {cmd[i + 1] for i, token in enumerate(cmd[:-1]) if token == "-m"}
    if "stages.finetune" in modules and flag(cmd, "--task") and flag(cmd, "--seed"):
        return "trial"
    if "stages.evaluate" in modules and "--untrained" not in cmd and flag(cmd, "--model"):
        return "evaluation"
    return "stage"


def read_history_file(path: Path) -> Optional[list[dict]]:
    """A training history: a JSON list of {"step": int, ...} (or JSON lines of them); None if it is not one."""
    if not path.is_file() or path.suffix not in (".json", ".jsonl"):
        return None
    try:
        if path.suffix == ".json":
            records = jsonfile.read_json(path)
        else:
            records = [jsonfile.parse_json(x, str(path), first_line=n)
                       for n, x in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if x.strip()]
    except (OSError, ValueError):
        return None
    if isinstance(records, list) and records and all(isinstance(r, dict) and "step" in r for r in records):
        return records
    return None


def history_points(records: list[dict], logged: set[int]) -> list[tuple[str, float, int]]:
    """(key, value, step) for the numbers of each record whose step is not in `logged` (updated); the loss
    first: MLflow's compare page plots the first metric runs logged (the epoch would be a constant)."""
    points = []
    for record in records:
        step = record.get("step")
        if not isinstance(step, int) or step in logged:
            continue
        logged.add(step)
        keys = sorted(record, key=lambda k: k != "loss")  # stable: the rest in the record's order
        points.extend((key, float(record[key]), step) for key in keys
                      if key != "step" and isinstance(record[key], (int, float)) and not isinstance(record[key], bool))
    return points


def read_json(path: Path) -> Any:
    """A JSON file's value, or None when it is missing, too big or unreadable."""
    try:
        if path.stat().st_size > SUMMARY_MAX_BYTES:
            return None
        return jsonfile.read_json(path)
    except (OSError, ValueError):
        return None


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
        summary = read_json(path) if path.suffix == ".json" and path.is_file() else None
        if isinstance(summary, dict) and "world_size" in summary:
            facts["world_size"] = str(summary["world_size"])
            environment = summary.get("environment") or {}
            for key in ("device", "allocator"):  # the allocator: why two runs' speeds differ
                if environment.get(key):
                    facts[key] = str(environment[key])
            trained = summary.get("params")
            if isinstance(trained, dict) and "precision" in trained:  # not the evaluate.* keys finetune also lists
                facts["precision"] = str(trained["precision"])
            break
    return facts


def stage_params(values: dict[str, Any], spec: StageSpec) -> dict[str, Any]:
    """The params.yaml values (flattened) the stage declares (a section name brings the whole section)."""
    chosen = {}
    for key in spec.params:
        chosen.update({k: v for k, v in values.items() if k == key or k.startswith(key + ".")})
    return chosen


def upstream_params(values: dict[str, Any], spec: StageSpec, specs: list[StageSpec]) -> dict[str, Any]:
    """The params of every stage upstream of `spec` (model.name, tokenize.*, data.* for a finetune stage)."""
    by_name = {s.name: s for s in specs}
    seen, todo, params = set(), list(spec.upstream), {}
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        params.update(stage_params(values, by_name[name]))
        todo.extend(by_name[name].upstream)
    return params


def dvc_tags(root: Path, spec: StageSpec) -> dict[str, str]:
    """DVC's hashes of a stage's data deps and outs (dvc.<dep|out>/<path>), and one digest of its code deps."""
    try:
        hashes = stage_hashes(root, spec.name)
    except Exception as err:  # hashes are a record, not a reason to fail a stage that succeeded
        print(f"[mlflow {spec.name}] could not hash the stage's deps and outs: {err}", file=sys.stderr)
        return {}
    code = sorted((path, md5) for path, md5 in hashes.items() if path.startswith("dep/") and path.endswith(".py"))
    tags = {metric_key(f"dvc.{k}"): v for k, v in hashes.items()
            if (k, v) not in code and k[4:] not in spec.persist}
    if code:  # one digest per stage (dvc.code/finetune): the exact code, even uncommitted
        digest = hashlib.md5("".join(f"{p} {m}\n" for p, m in code).encode()).hexdigest()
        tags[metric_key(f"dvc.code/{spec.name.rpartition(':')[2].partition('@')[0]}")] = digest
    return tags


def report_metrics(summary: Any) -> dict[str, float]:
    """The report's metrics.json as one figure per task and metric: the mean over seeds, the primary's std,
    the untrained head's primary and the gain (not every seed's value: the trial runs hold those)."""
    if not isinstance(summary, dict):
        return {}
    out: dict[str, float] = {}
    for task, entry in summary.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("fine_tuned"), dict):
            return numeric_leaves(summary)  # not the report's: every number
        primary = entry.get("primary")
        for name, stats in entry["fine_tuned"].items():
            if isinstance(stats, dict) and isinstance(stats.get("mean"), (int, float)):
                out[f"{task}.{name}"] = stats["mean"]
                if name == primary and isinstance(stats.get("std"), (int, float)):
                    out[f"{task}.{name}.std"] = stats["std"]
        untrained = (entry.get("untrained") or {}).get(primary)
        if isinstance(untrained, (int, float)):
            out[f"{task}.untrained.{primary}"] = untrained
        if isinstance(entry.get("gain_over_untrained"), (int, float)):
            out[f"{task}.gain"] = entry["gain_over_untrained"]
    return out


def inline_images(page: str, folder: Path) -> str:
    """An HTML page with its relative .png images as data: URIs (MLflow previews an artifact alone)."""
    def embed(match: re.Match) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:image/png;base64,{data}{match.group(3)}"

    return IMAGE.sub(embed, page)


class StageRun:
    """The MLflow record of one stage execution (module docstring), fed while the stage runs and closed after."""

    def __init__(self, root: Path, name: str, under_dvc: bool, cmd: Optional[list[str]] = None):
        self.root, self.name, self.under_dvc, self.cmd = root, name, under_dvc, list(cmd or [])
        self.tracker = Tracker(root, label=f"mlflow {name}")
        self.parent: Optional[str] = None
        self.run_id: Optional[str] = None  # where history and results go: the trial, the pipeline or its own run
        self.own_run = False  # a run this stage created and ends (a stage with no pipeline run, or a trial)
        self.logged_steps: set[int] = set()
        self.spec: Optional[StageSpec] = None
        self.specs: list[StageSpec] = []
        self.values: dict[str, Any] = {}  # params.yaml, flattened
        self.kind = stage_kind(self.cmd)

    def start(self) -> None:
        """Connect, and open the stage's record (module docstring)."""
        try:
            if self.under_dvc or (self.root / "dvc.yaml").is_file():
                self.specs = load_pipeline(self.root)
            by_name = {s.name: s for s in self.specs}
            # DVC_STAGE names the file too when dvc ran in another folder
            self.spec = by_name.get(self.name) or by_name.get(self.name.rpartition(":")[2])
        except Exception as err:  # a broken dvc.yaml is DVC's to report; tracking goes on without the spec
            print(f"[{self.tracker.label}] could not read the stage from dvc.yaml: {err}", file=sys.stderr)
        if self.spec is None and self.under_dvc:
            print(f"[{self.tracker.label}] dvc.yaml has no stage {self.name!r}; only its history is logged",
                  file=sys.stderr)
        self.values = read_params(self.root)
        tracker = self.tracker
        tracker.connect()  # if it fails, the calls below only count what goes unlogged
        self.parent = os.environ.get(PARENT_ENV) or None  # set by what started the pipeline, if anything did
        if self.parent:
            tracker.set_tags(self.parent, {stage_key(self.name): "RUNNING"})
        if self.kind == "trial":
            self.run_id, self.own_run = self._open_trial(), True
        elif self.kind == "stage" and self.parent:
            self.run_id = self.parent
        elif self.kind == "stage":
            tags = {KIND_TAG: "stage", "dvc.stage": self.name, NO_PARENT_TAG: "none", "host": platform.node(),
                    **git_facts(self.root)}
            self.run_id, self.own_run = tracker.create_run(self.name, tags), True
            if self.spec is not None:
                tracker.log_params(self.run_id, stage_params(self.values, self.spec))
        if self.run_id or self.kind == "evaluation":
            where = (f"in pipeline run {self.parent}" if self.parent else
                     f"with no pipeline run ({NO_PARENT_TAG}=none; `make run` and the flow open one)")
            what = {"trial": f"trial run {self.run_id}", "evaluation": "into its trial's run",
                    "stage": f"run {self.run_id}" if self.own_run else "folded into the pipeline run"}[self.kind]
            print(f"[{tracker.label}] {what} {where} at {tracker.uri}", file=sys.stderr, flush=True)

    def _training_section(self) -> tuple[str, dict[str, Any]]:
        """The finetune stage's params section (name, {key: value}) as the stage reads it: params.yaml's, with the
        command's overrides (a trial of the search grid: ``--learning_rate 5e-05``) applied."""
        section = next((p for p in self.spec.params if "." not in p), "finetune") if self.spec else "finetune"
        values = {k[len(section) + 1:]: v for k, v in self.values.items() if k.startswith(section + ".")}
        return section, {**values, **command_overrides(self.cmd, values)}

    def _open_trial(self) -> Optional[str]:
        task, seed = flag(self.cmd, "--task"), int(flag(self.cmd, "--seed"))
        section_name, section = self._training_section()
        key = settings_hash(section)
        # a retry of this stage in this pipeline run (the flow's retries) continues its trial's run
        run_id = find_trial(self.tracker, self.parent, task, seed, key, stage=self.name)
        if run_id:
            self.tracker.set_status(run_id, "RUNNING")
            return run_id
        upstream = upstream_params(self.values, self.spec, self.specs) if self.spec else {}
        params = trial_params(task, seed, section_name, section, upstream)
        tags = {FINETUNE_TAG: self.name, "host": platform.node(), **git_facts(self.root)}
        return create_trial(self.tracker, self.parent, task, seed, key, params, tags, self._setting(section))

    def _setting(self, section: dict[str, Any]) -> dict[str, Any]:
        """A trial's cell of params.yaml's search grid: the searched keys' values in its training section."""
        keys = [k[len(SECTION) + 1:] for k in self.values if k.startswith(SECTION + ".")]
        return {key: section[key] for key in keys if key in section}

    def log_history(self, records: list[dict], run_id: Optional[str] = None) -> None:
        """Log the points of steps not logged yet."""
        points = history_points(records, self.logged_steps)
        if points:
            self.tracker.log_points(run_id or self.run_id, points)

    def finish(self, returncode: int, killed: bool = False) -> None:
        """Log what the stage produced (if it succeeded), its hashes and tags, and end what it opened."""
        ok = returncode == 0 and not killed
        status = "FINISHED" if ok else "KILLED" if killed or returncode < 0 else "FAILED"
        if self.kind == "evaluation":
            self._finish_evaluation(ok, status)
        elif self.spec is not None and ok:
            self._log_results()
        if self.parent:
            self.tracker.set_tags(self.parent, {stage_key(self.name): status,
                                                **({} if ok else {"failed_stage": self.name})})
        if self.own_run:
            self.tracker.set_tags(self.run_id, {"exit_code": returncode})
            self.tracker.set_status(self.run_id, status)
        line = self.tracker.summary()
        if line:
            print(line, file=sys.stderr, flush=True)

    def _log_results(self) -> None:
        """A trial's or a folded stage's results: history, metrics, files, facts, hashes; the report's champions."""
        spec, tracker, root = self.spec, self.tracker, self.root
        for rel in spec.plots + spec.outs:
            records = read_history_file(root / rel)
            if records:
                self.log_history(records)
        if self.kind == "trial":
            facts = run_facts(root, spec, stage_params(self.values, spec))
            tracker.set_tags(self.run_id, {**facts, **dvc_tags(root, spec)})
            training = read_json(root / (flag(self.cmd, "--out") or "") / TRAINING_NAME)
            if isinstance(training, dict) and isinstance(training.get("params"), dict):
                key = settings_hash(training["params"])  # the section the stage actually trained with
                if key != settings_hash(self._training_section()[1]):
                    print(f"[{tracker.label}] the stage trained with other settings than params.yaml's "
                          f"(training.json): trial {key}", file=sys.stderr)
                    tracker.set_tags(self.run_id, {TRIAL_TAG: key})
            return
        report = "stages.report" in self.cmd
        files = list(spec.metrics)
        if self.own_run:  # a run of its own: an out folder's metrics.json too (the baseline's)
            files += [rel + "/" + METRICS_NAME for rel in spec.outs if (root / rel / METRICS_NAME).is_file()]
        for rel in files:
            value = read_json(root / rel)
            tracker.log_metrics(self.run_id, report_metrics(value) if report else numeric_leaves(value))
        if os.environ.get("BERT_MLFLOW_ARTIFACTS", "on").lower() not in ("0", "off", "false"):
            for rel in dict.fromkeys(spec.metrics + spec.plots + spec.uncached):
                self._log_file(root / rel, self.run_id)
        facts = run_facts(root, spec, stage_params(self.values, spec)) if spec.plots or self.own_run else {}
        tracker.set_tags(self.run_id, {**facts, **dvc_tags(root, spec)})  # device etc.: of a training only
        summary = read_json(root / spec.metrics[0]) if report and spec.metrics else None
        if isinstance(summary, dict):
            self._register_champions(summary)

    def _log_file(self, path: Path, run_id: Optional[str], artifact_path: Optional[str] = None) -> None:
        """A file or folder as an artifact (under its folder in the repo, or `artifact_path`); an HTML page with its
        images inlined."""
        if artifact_path is None:
            parent = path.relative_to(self.root).parent.as_posix()
            artifact_path = None if parent == "." else parent
        if path.suffix == ".html" and path.is_file():
            with scratch_folder(Path(tempfile.gettempdir()) / "bert-html") as tmp:  # gone after a kill too
                page = Path(tmp) / path.name
                page.write_text(inline_images(path.read_text(encoding="utf-8"), path.parent), encoding="utf-8")
                self.tracker.log_artifact(run_id, page, artifact_path)
            return
        self.tracker.log_artifact(run_id, path, artifact_path)

    def _finish_evaluation(self, ok: bool, status: str) -> None:
        """Into the trial run of the evaluated model: dev metrics, the eval files, the model (module docstring)."""
        tracker, root, spec = self.tracker, self.root, self.spec
        task, model_rel, out_rel = flag(self.cmd, "--task"), flag(self.cmd, "--model"), flag(self.cmd, "--out")
        training = read_json(root / model_rel / TRAINING_NAME)
        if not (task and isinstance(training, dict) and isinstance(training.get("params"), dict)
                and isinstance(training.get("seed"), int)):
            print(f"[{tracker.label}] {model_rel}/{TRAINING_NAME} does not say how the model was trained: "
                  "no trial to log into", file=sys.stderr)
            return
        seed, key = training["seed"], settings_hash(training["params"])
        hashes = dvc_tags(root, spec) if spec is not None and ok else {}
        model_tag = metric_key(f"dvc.dep/{Path(model_rel).as_posix()}")
        model_hash = (model_tag.replace("dvc.dep/", "dvc.out/", 1), hashes[model_tag]) if model_tag in hashes else None
        run_id = find_trial(tracker, self.parent, task, seed, key, model_hash)
        if run_id is None:  # this pipeline run re-evaluated a model it did not train: the trial is made here
            run_id = self._trial_from_model(task, seed, key, training, model_rel, model_hash)
        self.run_id = run_id
        tracker.set_tags(run_id, {"dvc.stage.evaluate": self.name})
        if not ok:
            tracker.set_tags(run_id, {"failed_stage": self.name})
            tracker.set_status(run_id, status)
            return
        record = read_json(root / out_rel / METRICS_NAME) or {}
        dev = {f"dev.{k}": v for k, v in (record.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        eval_params = stage_params(self.values, spec) if spec is not None else {}
        precision = {"eval.precision": v for k, v in eval_params.items() if k.endswith(".precision")}
        tracker.set_tags(run_id, {**{k: v for k, v in hashes.items() if k != model_tag}, **precision})
        if os.environ.get("BERT_MLFLOW_ARTIFACTS", "on").lower() not in ("0", "off", "false"):
            for path in sorted((root / out_rel).glob("*")):
                self._log_file(path, run_id, "eval")
        from pipeline.models import log_trial_model

        name = "-".join(filter(None, (task, setting_id(self._setting(training["params"])), f"seed{seed}")))
        name = re.sub(r"[/:.%\"']", "_", name)  # MLflow refuses these in a model's name: demo-pair-lr0_0001-seed1
        model_id = log_trial_model(tracker, run_id, root / model_rel, name)
        tracker.log_metrics(run_id, dev, model_id=model_id)

    def _trial_from_model(self, task: str, seed: int, key: str, training: dict, model_rel: str,
                          model_hash: Optional[tuple[str, str]]) -> Optional[str]:
        """A trial run made from a trained model folder (its training.json) and its finetune stage's history."""
        finetune = next((s for s in self.specs if Path(model_rel).as_posix() in s.outs), None)
        section = next((p for p in finetune.params if "." not in p), "finetune") if finetune else "finetune"
        upstream = upstream_params(self.values, finetune, self.specs) if finetune else {}
        params = trial_params(task, seed, section, training["params"], upstream)
        environment = training.get("environment") or {}
        tags = {"host": platform.node(), **git_facts(self.root), "world_size": str(training.get("world_size", "")),
                "precision": str(training["params"].get("precision", "")),
                **{k: str(environment[k]) for k in ("device", "allocator") if environment.get(k)},
                **({model_hash[0]: model_hash[1]} if model_hash else {}),
                **({FINETUNE_TAG: finetune.name} if finetune else {})}
        run_id = create_trial(self.tracker, self.parent, task, seed, key, params, tags,
                              self._setting(training["params"]))
        for rel in (finetune.plots + finetune.outs) if finetune else ():
            records = read_history_file(self.root / rel)
            if records:
                self.log_history(records, run_id)
        self.tracker.set_status(run_id, "FINISHED")
        return run_id

    def _register_champions(self, summary: dict) -> None:
        """The report's chosen trial of each task (``chosen``: its eval folder) registered as the champion."""
        for task, entry in summary.items():
            chosen = entry.get("chosen") if isinstance(entry, dict) else None
            if not isinstance(chosen, dict) or not chosen.get("eval"):
                continue
            record = read_json(self.root / chosen["eval"] / METRICS_NAME) or {}
            training = record.get("training") or {}
            if not isinstance(training.get("params"), dict) or "seed" not in training:
                continue
            key = settings_hash(training["params"])
            run_id = find_trial(self.tracker, self.parent, task, training["seed"], key)
            if run_id is None:  # the report alone re-ran: the newest trial of that setting
                run_id = find_trial(self.tracker, self.parent, task, training["seed"], key, anywhere=True)
            if run_id is None:
                print(f"[{self.tracker.label}] no trial run for the chosen {task} trial ({chosen['eval']}): "
                      "no champion", file=sys.stderr)
                continue
            why = {k: v for k, v in chosen.items() if k != "eval"} | {"pipeline_run": self.parent or "none"}
            version = register_champion(self.tracker, run_id, task, why)
            if version and self.run_id:
                self.tracker.set_tags(self.run_id, {f"champion.{task}": f"bert-{task} version {version}"})
