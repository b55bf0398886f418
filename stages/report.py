"""Stage report: the task x seed x setting results as reports/report.md, report.html, PNGs and metrics.json.

    python -m stages.report --runs "reports/eval/{trial}" --baseline "reports/baseline/{task}" \
        --history "reports/history/{trial}.json" --markdown reports/report.md \
        --html reports/report.html --figures reports/figures --metrics reports/metrics.json
        --chosen reports/chosen.json

{trial} is a trial's folder (stages._lib.search: ``demo-pair/lr5e-05/seed1``; ``demo-pair/seed1`` with no
search). The search grid: per task and setting, the primary dev metric's mean ± std over the seeds, runs at
the majority baseline left out and named; the chosen setting is the best mean (stages._lib.choice).
Per task, for the chosen setting: every metric's mean ± sample standard deviation over the seeds (points), beside the
untrained baseline (the pretrained encoder with a fresh, untrained head: stage ``baseline``), the
majority-class baseline for classification and multiple choice, and published figures where they
exist (stages._lib.references). Runs whose predictions collapse to one class, or whose accuracy is
within ``report.majority_tolerance`` points of the majority class, are flagged.

Each task's ``chosen`` run (metrics.json: its setting, seed, eval folder, metric, value and the rule) is the one
to ship: the chosen setting's best primary dev metric among its runs not flagged (among all, marked flagged, when
every run is). The MLflow glue registers that run's model as the task's champion (pipeline.trials), whatever the rule.
"""

from __future__ import annotations

import datetime
import logging
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import atomic_write_text
from bert.io.settings import at_least
from stages._lib import figures
from stages._lib.choice import choose_setting, grid_cells, run_flag
from stages._lib.common import atomic_outputs, read_json, run_stage, stage_parser, write_json
from stages._lib.params import load_matrix, load_section, read_params_file
from stages._lib.references import references_for
from stages._lib.render import Bullets, Code, Document, Heading, Image, Paragraph, Table, to_html, to_markdown
from stages._lib.search import Trial, read_search, setting_id, trials

logger = logging.getLogger("stages.report")


@dataclass(frozen=True)
class ReportParams:
    """Section ``report``."""

    majority_tolerance: float = field(metadata=at_least(0.0))  # points: a run this close to majority is flagged


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def _fmt(stats: Optional[dict]) -> str:
    if stats is None:
        return "—"
    if stats.get("std") is None:
        return f"{stats['mean']:.2f}"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def summarize_task(task: str, runs: dict[int, dict], baseline: dict, tolerance: float) -> dict:
    """The metrics.json entry of one task: per-metric mean/std over seeds, baselines, gain, flags."""
    first = next(iter(runs.values()))
    primary = first["primary"]
    names = [k for k, v in first["metrics"].items() if isinstance(v, (int, float))]
    fine_tuned = {}
    for name in names:
        per_seed = {str(seed): run["metrics"][name] for seed, run in runs.items()}
        fine_tuned[name] = {**_mean_std(list(per_seed.values())), "per_seed": per_seed}
    majority = (baseline.get("majority") or {}).get("metrics")
    flags = [{"seed": seed, "why": why} for seed, run in runs.items()
             if (why := run_flag(run, majority, tolerance)) is not None]
    trainings = [run["training"] for run in runs.values() if run.get("training")]
    return {
        "primary": primary,
        "fine_tuned": fine_tuned,
        "untrained": {k: v for k, v in baseline["metrics"].items() if isinstance(v, (int, float))},
        "majority": majority,
        "majority_class": (baseline.get("majority") or {}).get("class"),
        "gain_over_untrained": fine_tuned[primary]["mean"] - baseline["metrics"][primary],
        "flagged_runs": flags,
        "train_seconds": sum(t["seconds"] for t in trainings),
        "train_sequences_per_second":
            statistics.fmean(t["sequences_per_second"] for t in trainings) if trainings else None,
        "eval_seconds": sum(run["eval_seconds"] for run in runs.values()),
        "eval_sequences_per_second": statistics.fmean(run["eval_sequences_per_second"] for run in runs.values()),
        "dev_examples": first["dev_examples"],
    }


def choose_run(summary: dict, folders: dict[int, str]) -> dict[str, Any]:
    """The run to ship of a task (module docstring): {"seed", "eval", "metric", "value", "rule"[, "flagged"]}.

    Args:
        summary: the task's summarize_task entry.
        folders: seed -> the run's evaluate folder.
    """
    primary = summary["primary"]
    per_seed = {int(seed): value for seed, value in summary["fine_tuned"][primary]["per_seed"].items()}
    flagged = {int(f["seed"]) for f in summary["flagged_runs"]}
    candidates = [seed for seed in per_seed if seed not in flagged] or list(per_seed)
    seed = max(candidates, key=lambda s: (per_seed[s], -s))  # ties: the smaller seed
    chosen = {"seed": seed, "eval": folders[seed], "metric": primary, "value": per_seed[seed],
              "rule": f"best dev {primary} among the runs not flagged"}
    if seed in flagged:
        chosen["flagged"] = True
    return chosen


def summarize_search(task: str, runs: dict[Trial, dict], baseline: dict, tolerance: float,
                     folders: dict[Trial, str]) -> dict:
    """The metrics.json entry of a task over its grid: summarize_task's entry for the chosen setting
    (stages._lib.choice) plus ``grid`` (each setting's mean ± std over the seeds not flagged), ``flagged_trials``
    and ``chosen``.

    Args:
        runs: the task's trials -> their evaluate records.
        folders: the task's trials -> their evaluate folders.
    """
    primary = next(iter(runs.values()))["primary"]
    majority = (baseline.get("majority") or {}).get("metrics")
    flags = {trial: why for trial, run in runs.items() if (why := run_flag(run, majority, tolerance)) is not None}
    cells = grid_cells(runs, primary, flags)
    best, every = choose_setting(cells)
    mine = [trial for trial in runs if setting_id(trial.setting) == cells[best]["id"]]
    summary = summarize_task(task, {t.seed: runs[t] for t in mine}, baseline, tolerance)
    summary["grid"] = cells
    summary["flagged_trials"] = [{"setting": setting_id(t.setting), "seed": t.seed, "why": why}
                                 for t, why in flags.items()]
    chosen = choose_run(summary, {t.seed: folders[t] for t in mine})
    chosen.update(setting=cells[best]["setting"], setting_label=cells[best]["label"],
                  setting_mean=cells[best]["mean"], seeds_used=cells[best]["n"],
                  rule=f"the setting with the best mean dev {primary} over its seeds (runs at the majority baseline "
                       "left out), then its best seed" + ("; every run is flagged: all counted" if every else ""))
    summary["chosen"] = chosen
    return summary


def _grid_table(summaries: dict[str, dict]) -> Table:
    rows = []
    for task, s in summaries.items():
        chosen = s["chosen"]["setting_label"]
        for cell in s["grid"]:
            notes = [f"seed {seed} left out: {why}" for seed, why in cell["left_out"].items()]
            if cell.get("all_flagged"):
                notes.append("every run of the task is flagged: all counted")
            rows.append([task, f"**{cell['label']}**" if cell["label"] == chosen else cell["label"],
                         _fmt(None if cell["mean"] is None else cell),
                         f"{cell['n']} of {len(cell['per_seed'])}",
                         " / ".join(f"{seed}: {value:.2f}" for seed, value in cell["per_seed"].items()),
                         "; ".join(["chosen", *notes] if cell["label"] == chosen else notes) or "—"])
    return Table(["task", "setting", "primary dev metric (mean ± std over the seeds used)", "seeds used",
                  "per seed", "note"], rows)


def _results_table(summaries: dict[str, dict], seeds: list[int]) -> Table:
    rows = []
    for task, s in summaries.items():
        names = [s["primary"], *(n for n in s["fine_tuned"] if n != s["primary"])]  # the headline first
        for name in names:
            stats, is_primary = s["fine_tuned"][name], name == s["primary"]
            untrained = s["untrained"].get(name)
            majority = (s["majority"] or {}).get(name)
            refs = "; ".join(f"{fig} [{src}]" for fig, src in references_for(task)) if is_primary else ""
            rows.append([
                task if is_primary else "", f"**{name}**" if is_primary else name, _fmt(stats),
                " / ".join(f"{stats['per_seed'][str(seed)]:.2f}" for seed in seeds),
                "—" if untrained is None else f"{untrained:.2f}", "—" if majority is None else f"{majority:.2f}",
                f"{stats['mean'] - untrained:+.2f}" if untrained is not None else "—",
                refs or ("—" if is_primary else ""),
            ])
    plural = "s" if len(seeds) > 1 else ""
    header = ["task", "metric", f"fine-tuned (mean ± std, {len(seeds)} seed{plural})",
              "per seed (" + " / ".join(map(str, seeds)) + ")", "untrained head", "majority class",
              "gain vs untrained", "published (source)"]
    return Table(header, rows)


def draw_figures(folder: Path, rel: str, runs: dict[str, dict[int, dict]],
                 histories: dict[str, dict[str, list]], chosen_histories: dict[str, dict[int, list]]
                 ) -> dict[str, dict[str, str]]:
    """Training curves per task (one line per trial), dev curves where the chosen setting's runs evaluated during
    training (one line per seed: `chosen_histories`), and a confusion matrix (the chosen setting's runs, summed
    over seeds) where there is one.

    Returns:
        task -> {"curves": path, "dev": path, "confusion": path}, paths as the report links them (`rel`/name).
    """
    folder.mkdir()
    paths: dict[str, dict[str, str]] = {}
    for task, task_runs in runs.items():
        paths[task] = {"curves": f"{rel}/{task}-training.png"}
        figures.training_curves(folder / f"{task}-training.png", task, histories[task])
        selections = {seed: (r.get("training") or {}).get("selection") for seed, r in task_runs.items()}
        metric = next((s["metric"] for s in selections.values() if s), None)
        if metric and any(metric in p for points in chosen_histories[task].values() for p in points):
            kept = {seed: s["selected_step"] for seed, s in selections.items() if s}
            figures.dev_curves(folder / f"{task}-dev.png", task, metric, chosen_histories[task], kept)
            paths[task]["dev"] = f"{rel}/{task}-dev.png"
        with_confusion = [r for r in task_runs.values() if r.get("confusion")]
        if with_confusion:
            k = len(with_confusion[0]["confusion"])
            total = [[sum(r["confusion"][i][j] for r in with_confusion) for j in range(k)] for i in range(k)]
            seeds = f"summed over {len(with_confusion)} seed" + ("s" if len(with_confusion) > 1 else "")
            figures.confusion_matrix(folder / f"{task}-confusion.png", task, total, with_confusion[0]["labels"], seeds)
            paths[task]["confusion"] = f"{rel}/{task}-confusion.png"
    return paths


def build_document(summaries: dict[str, dict], runs: dict[str, dict[Trial, dict]], seeds: list[int],
                   figure_paths: dict[str, dict[str, str]]) -> Document:
    """The report's content (rendered to both Markdown and HTML)."""
    first_task = next(iter(runs))
    setting = summaries[first_task]["chosen"]["setting"]
    first_run = next(run for trial, run in runs[first_task].items() if trial.setting == setting)
    training = first_run.get("training") or {}
    env = training.get("environment", {})
    params = training.get("params", {})
    doc = Document("Fine-tuning report")
    doc.add(Paragraph(f"Generated {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} by "
                      f"`python -m stages.report`. Model: `{training.get('model', '?')}`. Tasks: "
                      f"{', '.join(summaries)}; seeds: {', '.join(map(str, seeds))}. All figures are points (0-100) "
                      "on the dev set."))
    doc.add(Heading("Search grid"), _grid_table(summaries))
    doc.add(Paragraph("Each setting trained once per seed; its mean ± sample std is over the seeds whose run did not "
                      "sit at the majority-class baseline (left out, and named in the note). The chosen setting "
                      "(bold) has the best mean, not the best single run; its best seed is the task's champion "
                      "(`models:/bert-<task>@champion` in MLflow)."))
    doc.add(Heading("Results"), Paragraph("The chosen setting of each task, every seed."),
            _results_table(summaries, seeds))
    doc.add(Paragraph("**untrained head**: the pretrained encoder with a freshly initialised (seeded), untrained "
                      "head, evaluated like the fine-tuned runs. **majority class**: always predicting the train set's "
                      "most frequent label (choice position for multiple choice). **gain**: fine-tuned mean minus "
                      "untrained head. The primary metric of each task is in bold."))
    flagged = [f"{task} {f['setting'] + ' ' if f['setting'] else ''}seed {f['seed']}: {f['why']}"
               for task, s in summaries.items() for f in s["flagged_trials"]]
    doc.add(Heading("Flagged runs", 3), Bullets(flagged or ["none: no run sits at the majority-class baseline"]))
    chosen = [f"{task}: {c['setting_label']} (mean {c['metric']} {c['setting_mean']:.2f} over {c['seeds_used']} "
              f"seed{'s' if c['seeds_used'] > 1 else ''}), seed {c['seed']} ({c['metric']} {c['value']:.2f}; "
              f"{c['rule']}{'; every run is flagged' if c.get('flagged') else ''})"
              for task, c in ((task, s["chosen"]) for task, s in summaries.items() if "chosen" in s)]
    if chosen:
        doc.add(Heading("Chosen runs", 3), Bullets(chosen))
    doc.add(Heading("Run time and throughput"))
    rows = []
    for task, task_runs in runs.items():
        for trial, run in task_runs.items():
            t = run.get("training") or {}
            rows.append([task, setting_id(trial.setting) or "—", str(trial.seed), str(t.get("train_examples", "—")),
                         str(t.get("global_steps", "—")),
                         f"{t.get('seconds', 0):.1f}", f"{t.get('sequences_per_second', 0):.1f}",
                         "—" if t.get("final_loss") is None else f"{t['final_loss']:.4f}",
                         f"{run['eval_seconds']:.1f}", f"{run['eval_sequences_per_second']:.1f}"])
    doc.add(Table(["task", "setting", "seed", "train examples", "steps", "train s", "train seq/s", "final loss",
                   "eval s", "eval seq/s"], rows))
    total = sum((run.get("training") or {}).get("seconds", 0) + run["eval_seconds"]
                for task_runs in runs.values() for run in task_runs.values())  # every trial, not the chosen ones
    doc.add(Paragraph(f"Training and evaluation took {total:.1f} s in all (stage start-up, tokenization and the "
                      "baselines not included)."))
    doc.add(Heading("Training curves"))
    for task, paths in figure_paths.items():
        doc.add(Image(paths["curves"], f"{task} training curves"))
        if "dev" in paths:
            doc.add(Image(paths["dev"], f"{task} dev metric during training"))
    kept = [selection_line(task, trial, s) for task, task_runs in runs.items() for trial, run in task_runs.items()
            if (s := (run.get("training") or {}).get("selection"))]
    if kept:
        doc.add(Heading("Evaluation during training", 3), Bullets(kept))
    confusions = [(task, p["confusion"]) for task, p in figure_paths.items() if "confusion" in p]
    if confusions:
        doc.add(Heading("Confusion matrices"))
        for task, path in confusions:
            doc.add(Image(path, f"{task} confusion matrix"))
    doc.add(Heading("Environment"))
    doc.add(Bullets([f"{k}: `{v}`" for k, v in env.items()] + [
        f"world size: `{training.get('world_size', '?')}`", f"precision: `{params.get('precision', '?')}`"]))
    doc.add(Heading("Training settings"), Paragraph(f"Those of {first_task}'s chosen setting."),
            Code("\n".join(f"{k}: {v}" for k, v in params.items())))
    return doc


def selection_line(task: str, trial: Trial, s: dict) -> str:
    """One run's evaluation during training (training.json's selection), for the report's list."""
    best = "—" if s.get("best_value") is None else f"{s['best_value']:.2f}"
    stopped = "; stopped early" if s.get("stopped_early") else ""
    name = " ".join(part for part in (task, setting_id(trial.setting), f"seed {trial.seed}") if part)
    return (f"{name}: {s['metric']} best {best} at step {s['best_step']} ({s['evaluations']} "
            f"evaluations); kept step {s['selected_step']} (select {s['select']}){stopped}")


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("report", __doc__)
    parser.add_argument("--runs", required=True, help="pattern of a run's evaluate folder, with {trial}")
    parser.add_argument("--baseline", required=True, help="pattern of a task's baseline folder, with {task}")
    parser.add_argument("--history", required=True, help="pattern of a run's training history, with {trial}")
    parser.add_argument("--markdown", required=True, type=Path)
    parser.add_argument("--html", required=True, type=Path)
    parser.add_argument("--figures", required=True, type=Path, help="folder for the PNGs")
    parser.add_argument("--metrics", required=True, type=Path, help="the aggregated metrics JSON")
    parser.add_argument("--chosen", type=Path, help="also write each task's chosen trial alone (metrics.json's "
                        "`chosen` entries, no timings): what the predict stage depends on, so that it re-runs only "
                        "when a choice changes")
    args = parser.parse_args(argv)

    def body() -> None:
        matrix = load_matrix(args.params)
        params: ReportParams = load_section("report", ReportParams, args.params)
        search = read_search(read_params_file(args.params), args.params)
        runs, summaries, histories, chosen_runs, chosen_histories = {}, {}, {}, {}, {}
        for task in matrix.tasks:
            mine = trials([task], matrix.seeds, search)
            folders = {t: Path(args.runs.format(trial=t.folder)).as_posix() for t in mine}
            runs[task] = {t: read_json(Path(folders[t]) / "metrics.json", "evaluate") for t in mine}
            by_trial = {t: read_json(args.history.format(trial=t.folder), "finetune") for t in mine}
            histories[task] = {f"{setting_id(t.setting)} seed {t.seed}".lstrip(): h for t, h in by_trial.items()}
            baseline = read_json(Path(args.baseline.format(task=task)) / "metrics.json", "baseline")
            summaries[task] = summarize_search(task, runs[task], baseline, params.majority_tolerance, folders)
            chosen = summaries[task]["chosen"]["setting"]
            chosen_runs[task] = {t.seed: run for t, run in runs[task].items() if t.setting == chosen}
            chosen_histories[task] = {t.seed: h for t, h in by_trial.items() if t.setting == chosen}
        rel = os.path.relpath(args.figures, args.markdown.parent)  # how the report links the PNGs
        outputs = [args.markdown, args.html, args.figures, args.metrics] + ([args.chosen] if args.chosen else [])
        with atomic_outputs(*outputs) as (md, page, fig_dir, metrics, *chosen_file):
            figure_paths = draw_figures(fig_dir, rel, chosen_runs, histories, chosen_histories)
            doc = build_document(summaries, runs, matrix.seeds, figure_paths)
            atomic_write_text(md, to_markdown(doc))
            atomic_write_text(page, to_html(doc))
            write_json(metrics, summaries)
            if chosen_file:
                write_json(chosen_file[0], {task: {"chosen": s["chosen"]} for task, s in summaries.items()})
        for task, s in summaries.items():
            logger.info("%s: %s %s (untrained %.2f, gain %+.2f)%s", task, s["primary"],
                        _fmt(s["fine_tuned"][s["primary"]]), s["untrained"][s["primary"]], s["gain_over_untrained"],
                        f", {len(s['flagged_runs'])} flagged" if s["flagged_runs"] else "")
        logger.info("report: %s and %s", args.markdown, args.html)

    return run_stage("report", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
