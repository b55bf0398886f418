"""The fine-tuning search grid (params.yaml's ``search``) and the one place trials are named.

    search:                            # any finetune key but nproc; a key not listed keeps finetune's value
      learning_rate: [5.0e-5, 3.0e-5, 2.0e-5]
      global_batch_size: [16, 32]

A *setting* is one cell of the grid ({"learning_rate": 3e-05, "global_batch_size": 32}: the product of the
lists, in the file's key order); a *trial* is (task, seed, setting). dvc.yaml's finetune and evaluate
matrices cross tasks, seeds and one key per searched key (written by ``python -m pipeline.matrix write``),
so DVC names a trial's stage ``finetune@<task>-<seed>-<value>-<value>`` and its folders
``<task>/<setting id>/seed<seed>`` (``mrpc/lr3e-05-bs32/seed42``); with no search, ``<task>/seed<seed>``.
Values are written as DVC writes them into names and paths (``str``; true/false), so the report, the
pipeline and DVC agree on every path. Light on purpose: the report imports it (no torch).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from stages._lib.params import DEFAULT_PARAMS, ParamsError

SECTION = "search"
SEARCHED = "finetune"  # the section whose keys the grid overrides
NOT_SEARCHED = ("nproc",)  # the launcher's process count: how a trial runs, not what it learns
SHORT = {"learning_rate": "lr", "global_batch_size": "bs", "epochs": "ep", "warmup_proportion": "warmup",
         "weight_decay": "wd", "max_grad_norm": "clip", "grad_accum_steps": "accum"}  # in setting ids
SAFE_TEXT = re.compile(r"[A-Za-z0-9_.+-]+")  # a text value becomes part of a path and a stage name


@dataclass(frozen=True)
class Trial:
    """One fine-tuning run of the pipeline: a task, a seed and a cell of the search grid."""

    task: str
    seed: int
    setting: dict[str, Any]  # the searched keys' values, in the grid's key order ({} with no search)

    def __hash__(self) -> int:  # a dict is not hashable; its items are (values are numbers, booleans, words)
        return hash((self.task, self.seed, tuple(self.setting.items())))

    @property
    def folder(self) -> str:
        """``<task>/<setting id>/seed<seed>`` (``<task>/seed<seed>`` with no search): under models/finetuned,
        reports/eval, ...; reports/history/<folder>.json."""
        return trial_folder(self.task, self.seed, self.setting)

    @property
    def stage_suffix(self) -> str:
        """What DVC puts after ``finetune@`` for this trial (its matrix key: plain ``str``, True not true)."""
        return "-".join([self.task, str(self.seed), *(str(v) for v in self.setting.values())])


def dvc_text(value: Any) -> str:
    """A value as DVC writes it into a stage name or an interpolated path (dvc.parsing.interpolate.to_str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def setting_id(setting: dict[str, Any]) -> str:
    """``lr3e-05-bs32`` ("" for the empty setting): the folder of a setting's trials, under their task."""
    return "-".join(f"{SHORT.get(key, key)}{dvc_text(value)}" for key, value in setting.items())


def trial_folder(task: str, seed: int, setting: dict[str, Any]) -> str:
    """The one place a trial's folder name is made (see Trial.folder)."""
    return f"{task}/{setting_folder(seed, setting)}"


def setting_folder(seed: int, setting: dict[str, Any]) -> str:
    """A trial's folder under its task's: ``lr5e-05/seed1`` (``seed1`` with no search)."""
    sid = setting_id(setting)
    return f"{sid}/seed{seed}" if sid else f"seed{seed}"


def label(setting: dict[str, Any]) -> str:
    """``learning_rate=3e-05, global_batch_size=32``; ``finetune's values`` for the empty setting."""
    return ", ".join(f"{k}={dvc_text(v)}" for k, v in setting.items()) or f"{SEARCHED}'s values"


def read_search(values: dict[str, Any], path: str | os.PathLike = DEFAULT_PARAMS,
                keys: Optional[Sequence[str]] = None) -> dict[str, list]:
    """The ``search`` section of a params file's values, checked ({} when absent or empty).

    Args:
        values: the params file's values (stages._lib.params.read_params_file).
        path: the file, for messages.
        keys: the keys that may be searched (the finetune section's); None: any.
    Raises:
        ParamsError: one line naming the file and the key: not a mapping, an unknown or unsearchable key, a value
            that is not a non-empty list of numbers, booleans or plain words, or a value listed twice.
    """
    search = values.get(SECTION)
    if search is None:
        return {}
    if not isinstance(search, dict):
        raise ParamsError(f"{path}: {SECTION}: expected a mapping of {SEARCHED} keys to lists of values, "
                          f"got {search!r}")
    for key, options in search.items():
        where = f"{path}: {SECTION}.{key}"
        if key in NOT_SEARCHED:
            raise ParamsError(f"{where}: not a search key ({SEARCHED}.{key} says how a trial runs; set it there)")
        if keys is not None and key not in keys:
            known = ", ".join(k for k in keys if k not in NOT_SEARCHED)
            raise ParamsError(f"{where}: unknown key (a search key is a key of {SEARCHED}: {known})")
        if not isinstance(options, list):
            raise ParamsError(f"{where}: expected a list of values, e.g. [{options!r}], got {options!r}")
        if not options:
            raise ParamsError(f"{where}: expected a non-empty list (remove the key to keep {SEARCHED}.{key})")
        for i, option in enumerate(options):
            if isinstance(option, (dict, list)) or option is None:
                raise ParamsError(f"{where}[{i}]: expected a number, true/false or a word, got {option!r}")
            if isinstance(option, str) and not SAFE_TEXT.fullmatch(option):
                raise ParamsError(f"{where}[{i}]: {option!r} names folders and stages: letters, digits, _.+- only")
        texts = [dvc_text(option) for option in options]
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise ParamsError(f"{where}: {', '.join(repeated)} listed twice (each value is one column of the grid)")
    return dict(search)


def settings(search: dict[str, list]) -> list[dict[str, Any]]:
    """The grid's cells, in DVC's matrix order (the first key varies slowest); [{}] with no search."""
    return [dict(zip(search, values)) for values in itertools.product(*search.values())]


def trials(tasks: Iterable[str], seeds: Iterable[int], search: dict[str, list]) -> list[Trial]:
    """Every trial of the pipeline, in DVC's order (task, then seed, then the grid)."""
    return [Trial(task, seed, setting) for task in tasks for seed in seeds for setting in settings(search)]


def command_overrides(cmd: Sequence[str], keys: Iterable[str]) -> dict[str, Any]:
    """The section keys a stage command overrides (``--learning_rate 3e-05``, ``--resume`` / ``--no-resume``),
    values read as YAML 1.2 as params.yaml's are; for the tracker, which sees the command, not its parse."""
    from ruamel.yaml import YAML

    yaml, found = YAML(typ="safe", pure=True), {}
    for key in keys:
        for i, token in enumerate(cmd):
            if token == f"--{key}" and i + 1 < len(cmd) and not cmd[i + 1].startswith("--"):
                found[key] = yaml.load(cmd[i + 1])
            elif token in (f"--{key}", f"--no-{key}"):
                found[key] = token == f"--{key}"
    return found
