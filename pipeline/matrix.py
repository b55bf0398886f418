"""dvc.yaml's trial stages follow params.yaml's search grid: one matrix key per searched key.

    python -m pipeline.matrix check    # exit 1 (one line per stage) when dvc.yaml does not cross the grid's keys
    python -m pipeline.matrix write    # make it so (also done by `python -m pipeline.deps write`)

DVC crosses the keys a matrix lists, and it cannot take its list of keys from params.yaml, so the keys are
written here: a trial stage (a matrix over ``task: ${tasks}`` and ``seed: ${seeds}``: finetune, evaluate)
gets ``<key>: ${search.<key>}`` for each key of ``search``, and each of its paths
``${item.task}/seed${item.seed}`` becomes ``${item.task}/lr${item.learning_rate}/seed${item.seed}``
(stages._lib.search.trial_folder, the name the report and the pipeline compute). The values stay in
params.yaml: a new learning rate needs no rewrite (``dvc exp run -S 'search.learning_rate=[1e-4,3e-5]'``),
a new key does (`make run` refuses a dvc.yaml that lags, through pipeline.params_check). The finetune command
passes ``${item}``, which DVC unpacks into ``--task T --seed S --learning_rate V ...``: the trial's overrides.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import atomic_write_text
from stages._lib.params import read_params_file
from stages._lib.search import SECTION, SHORT, read_search

DVC_FILE = "dvc.yaml"
PARAMS_FILE = "params.yaml"
TRIAL_KEYS = {"task": "${tasks}", "seed": "${seeds}"}  # what makes a matrix stage a trial stage
FOLDER = re.compile(r"\$\{item\.task\}/(?:[^/\s\"']*/)?seed\$\{item\.seed\}")  # a trial's folder in a path


def _yaml() -> Any:
    from pipeline.deps import _yaml as round_trip

    return round_trip()


def folder_template(keys: list[str]) -> str:
    """``${item.task}/lr${item.learning_rate}/seed${item.seed}``: Trial.folder as DVC interpolates it."""
    setting = "-".join(f"{SHORT.get(key, key)}${{item.{key}}}" for key in keys)
    return "${item.task}/" + (setting + "/" if setting else "") + "seed${item.seed}"


def _retemplate(node: Any, folder: str) -> Any:
    """`node` (a YAML value) with every trial folder in its texts, mapping keys included, set to `folder`."""
    if isinstance(node, str):
        return _resub(node, folder)
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _retemplate(item, folder)
    elif isinstance(node, dict):
        for key in list(node):
            new = _retemplate(key, folder)
            value = _retemplate(node[key], folder)
            if new != key:  # same place, new name (ruamel's maps keep order; comments ride on the position)
                node.insert(list(node).index(key), new, value)
                del node[key]
            else:
                node[key] = value
    return node


def _resub(text: str, folder: str) -> str:
    """FOLDER replaced in a text; a folded block (``cmd: >-``) keeps its lines (a path never spans two)."""
    folds = list(getattr(text, "fold_pos", None) or [])
    if not folds:
        new = FOLDER.sub(lambda _: folder, text)
        return text if new == text else type(text)(new)
    bounds = [0, *(at + 1 for at in folds), len(text) + 1]  # each fold is the space that ends a line
    lines = [FOLDER.sub(lambda _: folder, text[a:b - 1]) for a, b in itertools.pairwise(bounds)]
    new = type(text)(" ".join(lines))
    new.fold_pos = [sum(len(line) + 1 for line in lines[:i + 1]) - 1 for i in range(len(lines) - 1)]
    return new


def sync(doc: Any, keys: list[str]) -> list[str]:
    """Set every trial stage of a dvc.yaml document to cross `keys`; returns the names of those changed."""
    changed = []
    for name, body in (doc.get("stages") or {}).items():
        matrix = body.get("matrix") if isinstance(body, dict) else None
        if not isinstance(matrix, dict) or any(matrix.get(k) != v for k, v in TRIAL_KEYS.items()):
            continue
        before = _dump(body)
        for key in [k for k in matrix if k not in TRIAL_KEYS]:
            del matrix[key]
        for key in keys:
            matrix[key] = f"${{{SECTION}.{key}}}"
        for key in [k for k in body if k != "matrix"]:
            body[key] = _retemplate(body[key], folder_template(keys))
        if _dump(body) != before:
            changed.append(name)
    return changed


def _dump(node: Any) -> str:
    out = io.StringIO()
    _yaml().dump({"x": node}, out)
    return out.getvalue()


def _load(root: Path) -> tuple[Any, Any, list[str]]:
    values = read_params_file(root / PARAMS_FILE)
    keys = list(read_search(values, root / PARAMS_FILE))
    yaml = _yaml()
    return yaml, yaml.load((root / DVC_FILE).read_text(encoding="utf-8")), keys


def problems(root: str | os.PathLike) -> list[str]:
    """One line per trial stage of dvc.yaml that does not cross params.yaml's search keys (none: in step)."""
    root = Path(root)
    if not (root / DVC_FILE).is_file():
        return []
    _, doc, keys = _load(root)
    shown = ", ".join(keys) or "none"
    return [f"{root / PARAMS_FILE}: {SECTION}: the keys ({shown}) are not those {DVC_FILE}'s stage {name} crosses; "
            "run `python -m pipeline.matrix write`" for name in sync(doc, keys)]


def write(root: str | os.PathLike) -> list[str]:
    """Rewrite dvc.yaml's trial stages to cross params.yaml's search keys (atomically); returns those changed."""
    root = Path(root)
    if not (root / DVC_FILE).is_file():
        return []
    yaml, doc, keys = _load(root)
    changed = sync(doc, keys)
    if changed:
        out = io.StringIO()
        yaml.dump(doc, out)
        atomic_write_text(root / DVC_FILE, out.getvalue())
    return changed


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "write"])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repo root (default: here)")
    args = parser.parse_args(argv)
    try:
        if args.action == "write":
            for name in write(args.root):
                print(f"wrote {DVC_FILE}: stage {name}")
        lines = problems(args.root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else f"{DVC_FILE}: the trial stages cross the search keys of {PARAMS_FILE}")
    return 1 if lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
