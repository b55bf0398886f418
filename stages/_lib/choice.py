"""The report's rule for the setting and the run to ship (the paper's protocol), on evaluate records.

Per task: each run is flagged when it learned nothing (one predicted class for every dev example, or an
accuracy within ``report.majority_tolerance`` points of the majority class). Each cell of the search grid
gets the mean ± sample std of the primary dev metric over its seeds, flagged runs left out and said so.
The chosen setting is the cell with the best mean (not the cell of the best single run; ties: the first in
the grid's order); its best seed is the run to ship (stages.report.choose_run), which becomes the champion.
When every run of a task is flagged, the means take every run, and the choice says so.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

from stages._lib.search import Trial, label, setting_id


def run_flag(run: dict, majority: Optional[dict], tolerance: float) -> Optional[str]:
    """Why a run (its evaluate metrics.json) sits at the majority baseline, or None when it does not."""
    counts = run.get("predicted_counts")
    if counts is not None and sum(c > 0 for c in counts) == 1:
        return "predicts a single class for every dev example"
    if majority and "acc" in majority and run["metrics"]["acc"] <= majority["acc"] + tolerance:
        return (f"accuracy {run['metrics']['acc']:.2f} is within {tolerance} points of the majority class "
                f"({majority['acc']:.2f})")
    return None


def grid_cells(runs: dict[Trial, dict], primary: str, flags: dict[Trial, str]) -> list[dict[str, Any]]:
    """One entry per setting of a task's runs, in the grid's order.

    Args:
        runs: the task's trials -> their evaluate records.
        primary: the task's primary metric.
        flags: the flagged trials -> why.
    Returns:
        [{"setting", "id", "label", "per_seed": {seed: value}, "left_out": {seed: why}, "n", "mean", "std"}];
        mean and std over the seeds not left out (None when none is left; std None under two).
    """
    cells: dict[str, dict[str, Any]] = {}
    for trial, run in runs.items():
        cell = cells.setdefault(setting_id(trial.setting), {
            "setting": dict(trial.setting), "id": setting_id(trial.setting), "label": label(trial.setting),
            "per_seed": {}, "left_out": {}})
        cell["per_seed"][str(trial.seed)] = run["metrics"][primary]
        if trial in flags:
            cell["left_out"][str(trial.seed)] = flags[trial]
    for cell in cells.values():
        used = [v for seed, v in cell["per_seed"].items() if seed not in cell["left_out"]]
        cell.update(n=len(used), mean=statistics.fmean(used) if used else None,
                    std=statistics.stdev(used) if len(used) > 1 else None)
    return list(cells.values())


def choose_setting(cells: list[dict[str, Any]]) -> tuple[int, bool]:
    """(the index of the cell with the best mean, whether every run was flagged so that all were counted).

    A cell with no run left has no mean and is not a candidate; ties go to the first cell in the grid's order.
    When no cell has a run left, every cell's mean is recomputed over all its runs (marked in the cells).
    """
    if not any(cell["n"] for cell in cells):
        for cell in cells:
            values = list(cell["per_seed"].values())
            cell.update(n=len(values), mean=statistics.fmean(values),
                        std=statistics.stdev(values) if len(values) > 1 else None, all_flagged=True)
        every = True
    else:
        every = False
    candidates = [i for i, cell in enumerate(cells) if cell["mean"] is not None]
    return max(candidates, key=lambda i: (cells[i]["mean"], -i)), every
