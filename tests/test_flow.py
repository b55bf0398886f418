"""The Prefect flow over dvc.yaml: end to end on an ephemeral API, a no-op re-run, retries, overrides, timeouts.

The flow runs in a subprocess (its own PREFECT_HOME and temporary Prefect server) over a tiny copy of
the repo (see test_tracking.tiny_project); the states asserted are read back from Prefect's API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_tracking import (all_runs, children, lock_stages, mlflow_client, pipeline_runs, stage_key,  # noqa: F401
                           stage_tags, tiny_model, tiny_project, tool_env)

DRIVER = textwrap.dedent("""
    # Runs pipeline_flow once per step of a plan, then reads each flow run's task runs from the API.
    import json, sys, time
    from pathlib import Path
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort
    from pipeline.flow import pipeline_flow, torchrun_node

    flows = {"pipeline": pipeline_flow, "node": torchrun_node}

    results = []
    for step in json.loads(Path(sys.argv[1]).read_text()):
        for rel, text in step.get("write", {}).items():
            Path(rel).write_text(text)
        started, start = time.time(), time.perf_counter()
        state = flows[step.get("flow", "pipeline")](**step["kwargs"], return_state=True)
        seconds = time.perf_counter() - start
        flow_run_id = state.state_details.flow_run_id
        # Task-run records (and their states) reach the API in the background: read until every record has
        # a state and two reads a second apart agree, for at most 60 s.
        with get_client(sync_client=True) as client:
            tasks, deadline = None, time.monotonic() + 60
            while True:
                latest = {r.name: {"state": r.state.type.value if r.state else None, "run_count": r.run_count}
                          for r in client.read_task_runs(
                              flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                              sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)}
                settled = latest == tasks and all(t["state"] is not None for t in latest.values())
                tasks = latest
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        results.append({
            "flow_run_id": str(flow_run_id), "state": state.type.value, "seconds": seconds, "started": started,
            "tasks": tasks,
            "outcomes": state.result() if state.is_completed() and step.get("flow") is None else None,
            "lock": Path("dvc.lock").read_text(),
        })
    print("RESULTS " + json.dumps(results))
""")
FAIL_ONCE = "(test -e .failed-once || (touch .failed-once && exit 1)) && "


def run_plan(project: Path, plan: list[dict], prefect_home: Path, timeout: float = 900) -> list[dict]:
    """Run the driver over `plan` in `project`; the per-step results."""
    (project / ".plan.json").write_text(json.dumps(plan))
    driver = project.parent / "driver.py"
    driver.write_text(DRIVER)
    env = tool_env(PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
                   PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PYTHONPATH=str(project))
    done = subprocess.run([sys.executable, str(driver), str(project / ".plan.json")], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stdout[-5000:] + done.stderr[-5000:]
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.fixture(scope="module")
def flow_runs(tmp_path_factory, tiny_model):
    """Flow runs over one fresh tiny project: fresh, unchanged, an override with a flaky report, a node flow."""
    root = tmp_path_factory.mktemp("flow")
    project = tiny_project(root / "repo", tiny_model)
    dvc_yaml = (project / "dvc.yaml").read_text()
    flaky = dvc_yaml.replace("python -m pipeline.track --\n      python -m stages.report",
                             FAIL_ONCE + "python -m pipeline.track --\n      python -m stages.report")
    assert flaky != dvc_yaml
    plan = [
        {"kwargs": {"retries": 0}},
        {"kwargs": {"retries": 0}},
        {"kwargs": {"params": {"report.majority_tolerance": 2.5}, "retries": 1, "retry_delay_s": 0},
         "write": {"dvc.yaml": flaky}},
        {"flow": "node", "kwargs": {"stage": "download@demo-pair"}},
    ]
    return project, run_plan(project, plan, root / "prefect-home")


@pytest.mark.slow
@pytest.mark.xdist_group("flow")
def test_flow_runs_the_demo_end_to_end_every_task_completed(flow_runs):
    project, results = flow_runs
    first = results[0]
    assert first["state"] == "COMPLETED"
    stages = set(lock_stages(project))
    assert set(first["tasks"]) == stages  # one task per stage and foreach/matrix item, from dvc.yaml
    assert {t["state"] for t in first["tasks"].values()} == {"COMPLETED"}
    assert [o["stage"] for o in first["outcomes"] if o["ran"]] and all(o["ran"] for o in first["outcomes"])
    order = [o["stage"] for o in first["outcomes"]]
    assert order.index("download@demo-pair") < order.index("tokenize@demo-pair") < \
        order.index("finetune@demo-pair-1") < order.index("evaluate@demo-pair-1") < order.index("report")
    # MLflow: the flow's pipeline run records every stage, and holds the trial's run
    runs = all_runs(mlflow_client(project))
    parent = [r for r in pipeline_runs(runs) if r.data.tags.get("prefect.flow_run_id") == first["flow_run_id"]]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert stage_tags(parent[0]) == {stage_key(name): "FINISHED" for name in stages}
    assert set(children(runs, parent[0])) == {"demo-pair seed1"}


@pytest.mark.slow
@pytest.mark.xdist_group("flow")
def test_second_flow_run_finds_nothing_to_do_and_is_quick(flow_runs):
    project, results = flow_runs
    first, second = results[0], results[1]
    assert second["state"] == "COMPLETED"
    assert {t["state"] for t in second["tasks"].values()} == {"COMPLETED"}
    assert set(second["tasks"]) == set(first["tasks"])
    assert not any(o["ran"] for o in second["outcomes"])
    assert second["seconds"] < 0.5 * first["seconds"], (second["seconds"], first["seconds"])
    runs = all_runs(mlflow_client(project))
    parent = [r for r in pipeline_runs(runs) if r.data.tags.get("prefect.flow_run_id") == second["flow_run_id"]]
    assert parent[0].data.tags["stages_run"] == "0" and children(runs, parent[0]) == {}
    assert second["lock"] == first["lock"]  # DVC re-ran and re-recorded nothing


@pytest.mark.slow
@pytest.mark.xdist_group("flow")
def test_failed_stage_is_retried_and_the_flow_completes_with_the_override(flow_runs):
    project, results = flow_runs
    third = results[2]
    assert third["state"] == "COMPLETED"
    assert third["tasks"]["report"] == {"state": "COMPLETED", "run_count": 2}  # failed once, then passed
    assert all(t["run_count"] == 1 for name, t in third["tasks"].items() if name != "report")
    ran = [o["stage"] for o in third["outcomes"] if o["ran"]]
    # only what reads the key, and predict when the report's metrics.json changed (its flags read the tolerance)
    assert ran in (["report"], ["report", "predict@demo-pair"]), ran
    assert (project / ".failed-once").exists()
    params = (project / "params.yaml").read_text()
    assert "majority_tolerance: 2.5" in params and "# points: a run this close" in params  # comments kept
    assert lock_stages(project)["report"]["params"]["params.yaml"]["report"]["majority_tolerance"] == 2.5


@pytest.mark.slow
@pytest.mark.xdist_group("flow")
def test_node_flow_runs_the_stage_command_outside_dvc_untracked(flow_runs):
    project, results = flow_runs
    node = results[3]
    assert node["state"] == "COMPLETED" and node["lock"] == results[2]["lock"]  # DVC recorded nothing
    written = project / "data/raw/demo-pair/train.tsv"
    assert written.stat().st_mtime >= node["started"]  # the stage's command ran
    runs = all_runs(mlflow_client(project))
    recorded = [r for r in pipeline_runs(runs) if stage_key("download@demo-pair") in stage_tags(r)]
    assert len(recorded) == 1 and recorded[0].data.tags["prefect.flow_run_id"] == results[0]["flow_run_id"]
    assert len(pipeline_runs(runs)) == 3  # the first three flows'; the node flow made none


# ---------------------------------------------------------------------------------------------
# Pieces of the flow


def test_overrides_keep_comments_and_reject_unknown_keys(tmp_path):
    from pipeline.overrides import apply_overrides, parse_assignment

    path = tmp_path / "params.yaml"
    path.write_text("tasks: [a, b]   # the tasks\nfinetune:\n  # why\n  learning_rate: 1.0e-4\n  epochs: 3.0\n")
    changed = apply_overrides(path, {"finetune.learning_rate": 5e-5, "finetune.epochs": 3.0, "tasks": ["c"]})
    assert changed == {"finetune.learning_rate": (1e-4, 5e-5), "tasks": (["a", "b"], ["c"])}
    text = path.read_text()
    assert "# the tasks" in text and "# why" in text
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(text) == {"tasks": ["c"], "finetune": {"learning_rate": 5e-5, "epochs": 3.0}}
    with pytest.raises(ValueError, match=r"params.yaml: override 'finetune.lr': no key 'lr' under finetune"):
        apply_overrides(path, {"finetune.lr": 1.0})
    with pytest.raises(ValueError, match="no key 'nope' under the top level"):
        apply_overrides(path, {"nope.x": 1})
    assert parse_assignment("finetune.learning_rate=5e-5") == ("finetune.learning_rate", 5e-5)
    assert parse_assignment("tasks=[mrpc, rte]") == ("tasks", ["mrpc", "rte"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignment("finetune.epochs")


def test_select_takes_a_stage_with_everything_upstream():
    from pipeline.dvcgraph import StageSpec
    from pipeline.flow import select

    def spec(name, *upstream):
        return StageSpec(name, "true", (), (), (), (), (), (), tuple(upstream))

    specs = [spec("download@a"), spec("download@b"), spec("convert"), spec("tokenize@a", "download@a", "convert"),
             spec("tokenize@b", "download@b", "convert"), spec("finetune@a-1", "tokenize@a"),
             spec("report", "finetune@a-1", "tokenize@b")]
    assert [s.name for s in select(specs, ["finetune@a-1"])] == ["download@a", "convert", "tokenize@a", "finetune@a-1"]
    assert [s.name for s in select(specs, ["tokenize"])] == ["download@a", "download@b", "convert", "tokenize@a",
                                                            "tokenize@b"]
    assert select(specs, None) == specs
    with pytest.raises(ValueError, match="no stage 'nope'"):
        select(specs, ["nope"])


def test_timeout_kills_the_whole_process_group(tmp_path):
    import psutil

    from pipeline.flow import StageFailed, run_streaming

    lines: list[str] = []
    script = "sleep 300 & echo $! > grandchild.pid; printf 'a\\rb\\n'; wait"
    start = time.monotonic()
    with pytest.raises(StageFailed, match="killed after 2 s"):
        run_streaming(["sh", "-c", script], tmp_path, tool_env(), 2.0, lines.append)
    assert time.monotonic() - start < 30
    assert lines == ["b"]  # a progress-bar redraw is logged as its last state
    pid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the stage's child outlived the timeout"
        time.sleep(0.1)


def test_stage_command_status_is_returned(tmp_path):
    from pipeline.flow import run_streaming

    lines: list[str] = []
    assert run_streaming(["sh", "-c", "echo one; echo two >&2; exit 4"], tmp_path, tool_env(), 60, lines.append) == 4
    assert lines == ["one", "two"]
