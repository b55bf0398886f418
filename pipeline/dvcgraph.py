"""The pipeline's DAG as DVC itself resolves it from dvc.yaml (foreach/matrix items, ${...} from params.yaml).

    stages = load_pipeline(root)          # [StageSpec(name="finetune@demo-pair-1", deps=..., outs=...), ...]

The flow and the tracker read the stages through DVC's own parser, so there is no second copy of the
DAG and no second reading of its templating: the order is DVC's dependency graph (a stage's deps that
are another stage's outs), ties broken by the order in dvc.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    """One runnable stage of dvc.yaml (one foreach/matrix item), paths relative to the repo root."""

    name: str  # DVC's address, e.g. "finetune@demo-pair-1": what `dvc repro --single-item` takes
    cmd: str
    deps: tuple[str, ...]  # file and folder deps (params.yaml's keys are in `params`)
    outs: tuple[str, ...]  # plain outs (metrics and plots files are listed apart)
    persist: tuple[str, ...]  # outs DVC keeps between runs (e.g. resumable checkpoints), also in `outs`
    metrics: tuple[str, ...]
    plots: tuple[str, ...]
    params: tuple[str, ...]  # dotted params keys, e.g. "finetune.learning_rate"
    upstream: tuple[str, ...]  # names of the stages whose outs this stage reads
    uncached: tuple[str, ...] = ()  # outs, metrics and plots with `cache: false` (DVC's cache does not keep them)


def _rel(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def stage_name(stage: Any, root: Path) -> str:
    """A stage's address as `dvc repro` run at the repo root writes it (DVC's own depends on the cwd)."""
    dvcfile = _rel(stage.dvcfile.path, root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def _spec(stage: Any, root: Path, upstream: tuple[str, ...]) -> StageSpec:
    from dvc.dependency.param import ParamsDependency

    deps, params = [], []
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            params.extend(dep.params)
        else:
            deps.append(_rel(dep.fs_path, root))
    outs, metrics, plots, persist, uncached = [], [], [], [], []
    for out in stage.outs:
        (metrics if out.metric else plots if out.plot else outs).append(_rel(out.fs_path, root))
        if out.persist:
            persist.append(_rel(out.fs_path, root))
        if not out.use_cache:
            uncached.append(_rel(out.fs_path, root))
    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
    return StageSpec(stage_name(stage, root), cmd, tuple(deps), tuple(outs), tuple(persist), tuple(metrics),
                     tuple(plots), tuple(params), upstream, tuple(uncached))


def load_pipeline(root: str | os.PathLike) -> list[StageSpec]:
    """The runnable stages of the DVC project at `root`, upstream before downstream.

    Args:
        root: the repo root (holding .dvc/ and dvc.yaml).
    Returns:
        Every stage with a command (data stages from `dvc add` are not run), topologically sorted.
    Raises:
        ValueError: DVC cannot read the project (the message is DVC's, naming the file).
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    try:
        repo = Repo(str(root))
    except DvcException as err:
        raise ValueError(f"{root}: not a DVC project ({err})") from None
    try:
        stages = [s for s in repo.index.stages if s.cmd]
        graph = repo.index.graph  # edge (a, b): stage a depends on stage b
    except DvcException as err:
        raise ValueError(f"{root}: DVC could not read the pipeline: {err}") from None
    finally:
        repo.close()
    names = {id(s): stage_name(s, root) for s in stages}
    runnable = set(names)
    upstream = {id(s): tuple(names[id(d)] for d in graph.successors(s) if id(d) in runnable) for s in stages}
    # Kahn's algorithm over dvc.yaml order: deterministic, and the file's order where DVC leaves a choice.
    done: set[str] = set()
    ordered: list[StageSpec] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(u in done for u in upstream[id(s)])]
        if not ready:  # DVC rejects cycles when it builds the graph; this is a guard only
            raise ValueError(f"{root}: dvc.yaml has a dependency cycle among {[names[id(s)] for s in pending]}")
        for s in ready:
            ordered.append(_spec(s, root, upstream[id(s)]))
            done.add(names[id(s)])
        pending = [s for s in pending if names[id(s)] not in done]
    return ordered


def stage_hashes(root: str | os.PathLike, name: str) -> dict[str, str]:
    """DVC's own hashes of a stage's deps and outs as they are now, as dvc.lock will record them.

    Args:
        root: the repo root.
        name: the stage's address.
    Returns:
        {"dep/<path>": "<md5>", "out/<path>": ...} (a folder's md5 ends in ".dir", as in dvc.lock);
        paths that do not exist are left out.
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root).resolve()
    repo = Repo(str(root))
    try:
        stage = next((s for s in repo.index.stages if stage_name(s, root) == name), None)
        if stage is None:
            return {}
        hashes = {}
        for kind, items in (("dep", stage.deps), ("out", stage.outs)):
            for item in items:
                if isinstance(item, ParamsDependency) or not item.exists:
                    continue
                info = item.get_hash()
                if info and info.value:
                    hashes[f"{kind}/{_rel(item.fs_path, root)}"] = info.value
        return hashes
    finally:
        repo.close()


def cache_files(root: str | os.PathLike, md5s: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Where DVC's local cache keeps these file objects, and the link types its config allows (``cache.type``).

    Returns:
        ({md5: path} for the objects the cache holds, e.g. ["reflink", "hardlink", "symlink", "copy"]). The
        files are DVC's own, read-only; pipeline.models links the MLflow copy of a model to them.
    """
    from dvc.repo import Repo

    repo = Repo(str(Path(root).resolve()))
    try:
        odb = repo.cache.local
        found = {md5: Path(odb.oid_to_path(md5)) for md5 in md5s}
        types = list(odb.cache_types or ["reflink", "copy"])
    finally:
        repo.close()
    return {md5: path for md5, path in found.items() if path.is_file()}, types
