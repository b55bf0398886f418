"""prefect.yaml: a local `prefect server`, a process work pool with a worker, `prefect deploy`, a deployment run.

Everything listens on 127.0.0.1 and lives under a temporary PREFECT_HOME; the server and the worker are
stopped (their whole process groups) at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.flow import kill_group
from test_tracking import (REPO_ROOT, all_runs, children, free_port, mlflow_client, pipeline_runs, stage_tags,
                           tiny_model, tiny_project, tool_env)  # noqa: F401 (tiny_model: a fixture)

POOL = "bert-local"
PREFECT = [sys.executable, "-m", "prefect"]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "prefect server exited:\n" + log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("prefect server did not come up:\n" + log.read_text()[-3000:])


def prefect_cli(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(PREFECT + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def api_post(api: str, path: str, body: dict) -> list[dict]:
    """POST to Prefect's REST API (explicit limits: this server rejects a null one)."""
    request = urllib.request.Request(f"{api}/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def flow_runs_with_tasks(api: str) -> list[dict]:
    """Every flow run with its deployment, final state and task runs' states, read from the API."""
    out = []
    for run in api_post(api, "flow_runs/filter", {"limit": 50, "offset": 0, "sort": "EXPECTED_START_TIME_ASC"}):
        tasks = api_post(api, "task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200,
                                                    "offset": 0, "sort": "EXPECTED_START_TIME_ASC"})
        out.append({"id": run["id"], "deployment_id": run["deployment_id"], "state": run["state"]["type"],
                    "tasks": {t["name"]: t["state"]["type"] for t in tasks}})
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("prefect-deploy")
def test_deployment_on_a_process_pool_runs_to_completion(tmp_path, tiny_model):
    project = tiny_project(tmp_path / "repo", tiny_model)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api, PREFECT_UI_ENABLED="false",
                   PYTHONPATH=str(project))
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = subprocess.Popen(PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=open(server_log, "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = None
    try:
        wait_healthy(api, server, server_log)
        prefect_cli(["work-pool", "create", POOL, "--type", "process"], project, env)
        deploy = subprocess.run(PREFECT + ["--no-prompt", "deploy", "--name", "local"], cwd=project, env=env,
                                capture_output=True, text=True, timeout=300)
        output = deploy.stdout + deploy.stderr
        # prefect 3.8.8's CLI, after creating the deployment, lists the pool's workers with an explicit
        # "limit": null that this server's FastAPI rejects (422): only that last step may fail.
        assert deploy.returncode == 0 or ("Deployment 'bert-pipeline/local' successfully created" in output
                                          and "422 Unprocessable Entity" in output
                                          and "/work_pools/bert-local/workers/filter" in output), output[-4000:]
        worker = subprocess.Popen(PREFECT + ["worker", "start", "--pool", POOL, "--limit", "1"], cwd=tmp_path,
                                  env=env, stdout=open(worker_log, "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        # a real stage of the pipeline through the deployment (convert: the tiny model into models/)
        run = subprocess.run(PREFECT + ["deployment", "run", "bert-pipeline/local", "--params",
                                        json.dumps({"stages": ["convert"]}), "--watch", "--watch-timeout", "500"],
                             cwd=project, env=env, capture_output=True, text=True, timeout=560)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:] + worker_log.read_text()[-5000:]
        runs = flow_runs_with_tasks(api)
    finally:
        for proc in (worker, server):
            if proc is not None:
                kill_group(proc, grace_s=20)
    assert len(runs) == 1 and runs[0]["deployment_id"]
    assert runs[0]["state"] == "COMPLETED"
    assert runs[0]["tasks"] == {"convert": "COMPLETED"}
    assert (project / "models/pretrained/model.safetensors").is_file()  # the worker ran in the checkout
    assert server.poll() is not None and worker.poll() is not None
    mlruns = all_runs(mlflow_client(project))
    parent = pipeline_runs(mlruns)
    assert len(parent) == 1 and parent[0].data.tags["prefect.flow_run_id"] == runs[0]["id"]
    assert stage_tags(parent[0]) == {"stage/convert": "FINISHED"} and children(mlruns, parent[0]) == {}


# ---------------------------------------------------------------------------------------------
# The Kubernetes pool


def kubernetes_base_template() -> dict:
    """The shape of Prefect's default Kubernetes base job template (prefect-kubernetes), cut down."""
    return {
        "job_configuration": {
            "command": "{{ command }}", "env": "{{ env }}", "namespace": "{{ namespace }}",
            "job_manifest": {
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"namespace": "{{ namespace }}", "generateName": "{{ name }}-"},
                "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "prefect-job", "env": "{{ env }}", "image": "{{ image }}",
                                    "args": "{{ command }}"}]}}},
            },
        },
        "variables": {"type": "object", "properties": {
            "image": {"type": "string"}, "env": {"type": "object"}, "namespace": {"type": "string"},
            "name": {"type": "string"}, "command": {"type": "string"}}},
    }


def test_kubernetes_template_requests_gpus():
    from prefect.utilities.templating import apply_values

    from pipeline.k8s_pool import gpu_job_template

    base = kubernetes_base_template()
    template = gpu_job_template(base)
    assert base == kubernetes_base_template()  # not changed in place
    deploy = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    k8s = next(d for d in deploy["deployments"] if d["name"] == "k8s-gpu")
    job_variables = k8s["work_pool"]["job_variables"]
    assert set(job_variables) <= set(template["variables"]["properties"])  # the pool accepts each of them
    values = {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}
    values.update({k: v for k, v in job_variables.items() if k not in ("image", "env")},
                  image="registry.example/bert:1", env={})
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == resources["requests"] == {"nvidia.com/gpu": 8, "cpu": "64", "memory": "512Gi"}
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert k8s["parameters"]["params"]["finetune.nproc"] == job_variables["gpus"]  # a process per GPU
    with pytest.raises(ValueError, match="not a Kubernetes base job template"):
        gpu_job_template({"job_configuration": {}, "variables": {}})


def test_prefect_yaml_deployments_point_at_the_flow():
    deploy = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert {d["name"]: d["work_pool"]["name"] for d in deploy["deployments"]} == \
        {"local": POOL, "k8s-gpu": "bert-k8s-gpu"}
    for d in deploy["deployments"]:
        path, _, name = d["entrypoint"].partition(":")
        assert (REPO_ROOT / path).is_file() and f"def {name}(" in (REPO_ROOT / path).read_text()
