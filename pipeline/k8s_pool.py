"""A Kubernetes work-pool template that asks for GPUs: Prefect's default job template plus resources.

    prefect work-pool get-default-base-job-template --type kubernetes > k8s-default.json
    python -m pipeline.k8s_pool k8s-default.json > k8s-gpu.json
    prefect work-pool create bert-k8s-gpu --type kubernetes --base-job-template k8s-gpu.json

Prefect's default Kubernetes template has no variables for resources; this adds ``gpus``
(``nvidia.com/gpu``), ``cpu`` and ``memory`` (requests and limits of the flow run's container), and
a memory-backed /dev/shm of ``shm_size`` (PyTorch's DataLoader workers and NCCL use shared memory;
a container's default is 64 MB). prefect.yaml's ``k8s-gpu`` deployment sets them.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any, Optional

from bert.io.jsonfile import parse_json, read_json

GPU_RESOURCE = "nvidia.com/gpu"
VARIABLES: dict[str, dict[str, Any]] = {
    "gpus": {"title": "GPUs", "description": "GPUs for the flow run's container (finetune.nproc should match)",
             "type": "integer", "default": 1, "minimum": 0},
    "cpu": {"title": "CPU", "description": "CPU request and limit, e.g. '8'", "type": "string", "default": "8"},
    "memory": {"title": "Memory", "description": "memory request and limit, e.g. '64Gi'", "type": "string",
               "default": "64Gi"},
    "shm_size": {"title": "Shared memory", "description": "size of the memory-backed /dev/shm", "type": "string",
                 "default": "16Gi"},
}


def gpu_job_template(base: dict[str, Any]) -> dict[str, Any]:
    """Add GPU, CPU and memory resources and a /dev/shm volume to a Kubernetes base job template.

    Args:
        base: Prefect's base job template for Kubernetes ({"job_configuration": {"job_manifest": ...},
            "variables": {"properties": ...}}).
    Returns:
        A new template; `base` is not changed.
    Raises:
        ValueError: `base` is not a Kubernetes job template (no job manifest with a container).
    """
    template = copy.deepcopy(base)
    try:
        pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        properties = template["variables"]["properties"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("not a Kubernetes base job template: expected job_configuration.job_manifest"
                         ".spec.template.spec.containers[0] and variables.properties") from None
    properties.update(copy.deepcopy(VARIABLES))
    # Prefect templates values, not keys: the device plugin's name is fixed here (AMD: amd.com/gpu)
    amounts = {GPU_RESOURCE: "{{ gpus }}", "cpu": "{{ cpu }}", "memory": "{{ memory }}"}
    container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    container.setdefault("volumeMounts", []).append({"name": "dshm", "mountPath": "/dev/shm"})
    pod.setdefault("volumes", []).append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "{{ shm_size }}"}})
    return template


def main(argv: Optional[list[str]] = None) -> int:
    """CLI: read the default template (a file, or stdin for "-"), print the GPU template."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        base = parse_json(sys.stdin.read(), "-", dict) if args[0] == "-" else read_json(args[0], dict)
        print(json.dumps(gpu_job_template(base), indent=2))
    except ValueError as err:
        print(err if str(err).startswith(args[0]) else f"{args[0]}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
