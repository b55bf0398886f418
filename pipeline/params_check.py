"""params.yaml checked whole before DVC reads it: what `make run`, `make pretrain` and the flow do first.

    python -m pipeline.params_check [--root DIR]     # exit 0, or 1 and one line naming the file and the key

DVC expands dvc.yaml's foreach and matrix from params.yaml before any stage runs, and some mistakes only it
meets, in its own words: ``seeds: 42`` is "unexpected error - 'Value' object is not iterable", two unknown
keys of different types (``1:`` and ``foo:``) a TypeError, an alias bomb a hang; a repeated task was refused
only by the report, after all the training. Here each pipeline's params file is read as its stages read
it (stages._lib.params: YAML 1.2, repeated keys, aliases bounded), every section by its stage's dataclass,
no top-level key unknown, your own datasets (their keys, kinds, files under datasets/), the matrix (lists,
tasks built in or defined in datasets, no repeats, seeds in range) and the training
sections against this machine (processes, and a global batch they can share), before anything runs.

This runs in a process of its own (pipeline.track starts it): it imports every stage, and what pipeline.track
imports is in every stage's dvc.yaml deps.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Optional

logger = logging.getLogger("pipeline.params_check")

# Each pipeline's params file (relative to the repo root, beside its dvc.yaml) -> section -> (stage module, class).
# tests/test_reliability_pipeline_params.py checks that it covers every section dvc.yaml declares.
PIPELINES = {
    "params.yaml": {
        "model": ("stages.convert", "ModelParams"),
        "data": ("stages.download", "DataParams"),
        "datasets": ("stages._lib.datasets", "check_datasets"),  # your own tasks: a mapping of entries
        "tokenize": ("stages.tokenize", "TokenizeParams"),
        "finetune": ("stages.finetune", "FinetuneParams"),
        "evaluate": ("stages.evaluate", "EvaluateParams"),
        "report": ("stages.report", "ReportParams"),
        "predict": ("stages.predict", "PredictParams"),
    },
    "pretrain/params.yaml": {
        "model": ("stages.convert", "ModelParams"),
        "corpus": ("stages.builtin_corpus", "CorpusParams"),
        "instances": ("stages.pretrain_data", "InstancesParams"),
        "pretrain": ("stages.pretrain", "PretrainParams"),
    },
}
MATRIX_FILE = "params.yaml"  # the file whose tasks x seeds dvc.yaml's foreach and matrix expand
MATRIX_KEYS = ("tasks", "seeds", "search")  # search: the grid of finetune settings crossed with them
TRAINING_SECTIONS = ("finetune", "pretrain")  # checked against this machine too (stages._lib.training.check_launch)
SEARCHED = "finetune"  # the section params.yaml's search grid overrides


def check_params_file(path: Path, sections: dict[str, tuple[str, str]], matrix: bool) -> None:
    """Check one pipeline's params file.

    Raises:
        ParamsError: the first problem, one line naming the file and the dotted key.
    """
    from stages._lib.datasets import SECTION as DATASETS, check_datasets, check_files_exist
    from stages._lib.params import ParamsError, build, load_matrix, read_params_file
    from stages._lib.tasks import builtin_tasks, get_task
    from stages._lib.training import check_launch
    from pipeline.matrix import problems

    values = read_params_file(path)
    known = [*sections, *(MATRIX_KEYS if matrix else ())]
    unknown = sorted((key for key in values if key not in known), key=str)
    if unknown:
        raise ParamsError(f"{path}: unknown key {unknown[0]} (known keys of the top level: {', '.join(known)})")
    if matrix:
        if "search" not in values:  # the report's params dep: DVC refuses a missing one, after all the training
            raise ParamsError(f"{path}: key search is missing (the report stage depends on it): write `search: {{}}` "
                              "to train finetune's values once per task and seed")
        if DATASETS not in values:  # DVC refuses a params dependency that is not there, in its own words
            raise ParamsError(f"{path}: section {DATASETS!r} is missing (write {DATASETS}: {{}} when you have none)")
        datasets = check_datasets(values[DATASETS], path, builtin_tasks())
        for i, task in enumerate(load_matrix(path).tasks):
            try:
                get_task(task, path)
            except ValueError as err:
                raise ParamsError(f"{path}: tasks[{i}]: {err}") from None
            if task in datasets:  # DVC would start, and download would stop at the missing file
                check_files_exist(datasets[task], path.parent, path)
    for section, (module, name) in sections.items():
        if section == DATASETS:
            continue  # checked above, whole (its entries are tasks, not one dataclass)
        if section not in values:
            raise ParamsError(f"{path}: section {section!r} is missing")
        params = build(getattr(importlib.import_module(module), name), values[section], section, path)
        if section in TRAINING_SECTIONS:
            check_launch(section, params, params.nproc, path)
        if matrix and section == "predict" and params.seed is not None and params.seed not in load_matrix(path).seeds:
            raise ParamsError(f"{path}: predict.model: {params.model} names no model: seed {params.seed} is not "
                              f"one of seeds {load_matrix(path).seeds}")
        if matrix and section == SEARCHED:
            check_search(path, values, params)
    if matrix:
        for line in problems(path.parent):
            raise ParamsError(line)


def check_search(path: Path, values: dict, base: object) -> None:
    """params.yaml's search grid: its keys the finetune section's, each cell a finetune section the stage accepts
    (built with the cell's overrides, checked against this machine)."""
    from stages._lib.params import ParamsError, section_keys
    from stages._lib.search import SECTION, read_search, settings
    from stages._lib.training import check_launch, with_overrides

    search = read_search(values, path, section_keys(type(base)))
    for key, options in search.items():  # one value at a time first: the message names the value's place
        for i, option in enumerate(options):
            try:
                with_overrides(base, {key: option}, SEARCHED, path)
            except ParamsError as err:
                raise ParamsError(f"{path}: {SECTION}.{key}[{i}]: {str(err).partition(': ')[2]}") from None
    for cell in settings(search):
        try:
            params = with_overrides(base, cell, SEARCHED, path)
        except ParamsError as err:
            raise ParamsError(f"{err} ({SECTION} cell {cell})") from None
        check_launch(SEARCHED, params, params.nproc, path)


def check_project(root: Path) -> None:
    """Check the params file of every pipeline of this project under `root`.

    DVC reads every dvc.yaml of a repo whichever it reproduces, so every pipeline's params are checked: those
    whose dvc.yaml runs this project's stages (another project's pipeline, or none, is left to DVC).
    """
    for rel, sections in PIPELINES.items():
        path = root / rel
        dvcfile = path.parent / "dvc.yaml"
        if dvcfile.is_file() and "-m stages." in dvcfile.read_text(encoding="utf-8", errors="replace"):
            check_params_file(path, sections, matrix=rel == MATRIX_FILE)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status (0: every params file is fine)."""
    from stages._lib.common import setup_logging

    parser = argparse.ArgumentParser(prog="python -m pipeline.params_check", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repo root (default: here)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        check_project(args.root)
    except ValueError as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
