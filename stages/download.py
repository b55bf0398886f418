"""Stage download: one task's raw files into a folder, with a SOURCE.json saying where they came from.

    python -m stages.download --task demo-pair --out data/raw/demo-pair

Demo tasks are always generated (stages._lib.builtin_data). A dataset of params.yaml's ``datasets`` section
(your own files under datasets/) is read, checked row by row and normalised (stages._lib.datasets), whatever
``data.source`` says. For the other tasks ``data.source`` says:
``local`` copies the task's files from ``data.local_dir`` (the task's own folder, or a folder holding
one folder per task, e.g. ../shared/data/glue); ``download`` fetches the official files into the
download cache (resumable, verified) and builds the folder from them. Every file's sha256 is recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bert.io.download import sha256_of
from bert.io.fileio import scratch_folder
from bert.io.settings import at_least, one_of
from stages._lib import builtin_data, datasets
from stages._lib.common import atomic_outputs, run_stage, stage_parser, write_json
from stages._lib.params import DEFAULT_PARAMS, load_section
from stages._lib.sources import SOURCES, TaskSource, build_mrpc, git_blob_id, remote_url
from stages._lib.tasks import DEMO_FORMATS, get_task, is_builtin

logger = logging.getLogger("stages.download")
SOURCE_FILE = "SOURCE.json"
# Folder names a task's files commonly live under (GLUE's download script, SQuAD, SWAG).
FOLDER_NAMES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
    "mnli-mm": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "ax": "diagnostic",
    "squad1": "squad", "squad2": "squad", "swag": "swag",
}


@dataclass(frozen=True)
class BuiltinDataParams:
    """Section ``data.builtin``: the size of the generated offline datasets."""

    train_examples: int = field(metadata=at_least(1))
    dev_examples: int = field(metadata=at_least(1))
    seed: int


@dataclass(frozen=True)
class DataParams:
    """Section ``data``."""

    source: str = field(metadata=one_of("builtin", "download", "local"))
    local_dir: str  # for source local: a task's folder, or a folder holding one folder per task
    mirror: str  # for source download: "" for the official addresses, else a URL prefix serving <task>/<file>
    builtin: BuiltinDataParams


def task_files(task: str) -> dict[str, str]:
    """split -> file name the task's reader expects (train and dev are required, test optional)."""
    return dict(get_task(task).processor.files)


def download_cache_dir() -> Path:
    """Where fetched files are kept between runs ($BERT_TOOLKIT_CACHE/data or ~/.cache/bert-toolkit/data)."""
    root = os.environ.get("BERT_TOOLKIT_CACHE") or Path.home() / ".cache" / "bert-toolkit"
    return Path(root) / "data"


def find_local_folder(task: str, local_dir: str) -> Path:
    """The folder holding `task`'s files: local_dir itself, or its sub-folder for the task."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ValueError(f"data.local_dir: {root} is not a folder")
    required = [name for split, name in task_files(task).items() if split in ("train", "dev")]
    for candidate in (root, root / FOLDER_NAMES.get(task, task), root / task):
        if all((candidate / name).is_file() for name in required):
            return candidate
    raise ValueError(
        f"data.local_dir: {root} has no {' and '.join(required)} for task {task} "
        f"(looked in {root}, {root / FOLDER_NAMES.get(task, task)} and {root / task})"
    )


def copy_local(task: str, folder: Path, out: Path) -> dict[str, str]:
    """Copy the task's split files that exist in `folder` into `out`; split -> file name."""
    copied = {}
    for split, name in task_files(task).items():
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
            copied[split] = name
    return copied


def fetch(task: str, source: TaskSource, mirror: str, out: Path) -> dict[str, str]:
    """Fetch a task's official files (verified) and lay them out in `out`; split -> file name."""
    from bert.io.archive import safe_extract
    from bert.io.download import download

    cache = download_cache_dir() / ("mnli" if task == "mnli-mm" else task)  # one MNLI.zip for both
    fetched = []
    for remote in (*source.files, *source.also):
        url = remote_url(task, remote, mirror)
        path = download(url, cache / remote.name, sha256=remote.sha256)
        blob = git_blob_id(path) if remote.git_blob else None
        if blob != remote.git_blob:
            path.unlink()
            raise ValueError(f"{url}: git blob id {blob} is not the official {remote.git_blob}; "
                             "the file was removed: try again, or check the mirror")
        fetched.append(path)
    # A scratch folder of bert.io.fileio beside the output: the next run removes what a killed one left there.
    with scratch_folder(out.parent / f"{task}.download") as work:
        if source.zip_folder:
            safe_extract(fetched[0], work)
            src = work / source.zip_folder
        elif source.build == "mrpc":
            build_mrpc(cache, work)
            src = work
        else:
            src = cache
        files = copy_local(task, src, out)
    for remote in source.also:
        shutil.copyfile(cache / remote.name, out / remote.name)
        files[remote.name] = remote.name
    for name, digest in source.expected.items():
        if (out / name).is_file() and sha256_of(out / name) != digest:
            raise ValueError(f"{out / name}: sha256 {sha256_of(out / name)} is not the official {digest}")
    return files


def materialise(task: str, params: DataParams, out: Path, params_file: Path = DEFAULT_PARAMS) -> dict:
    """Write `task`'s raw files into `out` (an empty folder); returns the SOURCE.json record."""
    if not is_builtin(task):
        files, origin = datasets.materialise(datasets.load_datasets(params_file)[task], params_file, out)
    elif task in DEMO_FORMATS:
        b = params.builtin
        files = builtin_data.write_builtin(task, out, b.train_examples, b.dev_examples, b.seed)
        origin = {"source": "builtin", "train_examples": b.train_examples, "dev_examples": b.dev_examples,
                  "seed": b.seed, "format": DEMO_FORMATS[task]}
    elif params.source == "builtin":
        raise ValueError(f"data.source: builtin has data only for the demo tasks "
                         f"({', '.join(DEMO_FORMATS)}); for {task} set data.source to local or download")
    elif params.source == "local":
        folder = find_local_folder(task, params.local_dir)
        files = copy_local(task, folder, out)
        for name in (r.name for r in SOURCES[task].also) if task in SOURCES else ():
            # beside the task's files, or in the GLUE folder's diagnostic/ (download_glue_data.py's layout)
            found = [p for p in (folder / name, folder.parent / FOLDER_NAMES["ax"] / name) if p.is_file()]
            if found:
                shutil.copyfile(found[0], out / name)
                files[name] = name
        origin = {"source": "local", "folder": str(folder.resolve())}
    else:
        if task not in SOURCES:
            raise ValueError(f"data.source: download knows no official files for {task}")
        files = fetch(task, SOURCES[task], params.mirror, out)
        origin = {"source": "download", "urls": [remote_url(task, r, params.mirror) for r in SOURCES[task].files]}
    missing = [split for split in ("train", "dev") if split not in files]
    if missing:
        raise ValueError(f"{task}: no {' or '.join(missing)} file was found ({origin['source']} data)")
    origin["files"] = {split: {"name": name, "sha256": sha256_of(out / name), "bytes": (out / name).stat().st_size}
                       for split, name in files.items()}
    origin["task"] = task
    return origin


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("download", __doc__)
    parser.add_argument("--task", required=True, help="a task name of params.yaml's tasks list")
    parser.add_argument("--out", required=True, type=Path, help="the task's raw data folder to write")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("data", DataParams, args.params)
        get_task(args.task, args.params)  # an unknown task fails before anything is written
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            origin = materialise(args.task, params, tmp, args.params)
            write_json(tmp / SOURCE_FILE, origin)
        logger.info("%s: %s data in %s (%s)", args.task, origin["source"], args.out,
                    ", ".join(f"{s}={f['name']}" for s, f in origin["files"].items()))

    return run_stage("download", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
