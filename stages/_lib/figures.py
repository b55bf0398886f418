"""The report's PNGs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from bert.io.fileio import atomic_path  # noqa: E402


def training_curves(path: Path, task: str, histories: dict[str, list[dict]]) -> None:
    """Loss and learning rate against the optimizer step, one line per trial (its label: "lr5e-05 seed 1")."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, points in histories.items():
        steps = [p["step"] for p in points]
        ax_loss.plot(steps, [p["loss"] for p in points], marker=".", label=name)
        ax_lr.plot(steps, [p["learning_rate"] for p in points], label=name)
    ax_loss.set(title=f"{task}: training loss", xlabel="optimizer step", ylabel="loss")
    ax_lr.set(title=f"{task}: learning rate", xlabel="optimizer step", ylabel="learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def dev_curves(path: Path, task: str, metric: str, histories: dict[int, list[dict]], selected: dict[int, int]) -> None:
    """The dev metric evaluated during training against the optimizer step, one line per seed; the step whose
    weights each run kept (`selected`: seed -> step) circled."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for seed, points in sorted(histories.items()):
        dev = [(p["step"], p[metric]) for p in points if metric in p]
        (line,) = ax.plot([s for s, _ in dev], [v for _, v in dev], marker=".", label=f"seed {seed}")
        kept = [v for s, v in dev if s == selected.get(seed)]
        if kept:
            ax.plot([selected[seed]], kept, "o", markersize=10, fillstyle="none", color=line.get_color())
    ax.set(title=f"{task}: {metric} during training (circled: kept)", xlabel="optimizer step", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def confusion_matrix(path: Path, task: str, counts: Sequence[Sequence[int]], labels: Sequence[str], note: str) -> None:
    """A heat map of gold (rows) against predicted (columns) counts, each cell annotated."""
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.4, 1.0 * k + 1.8))
    image = ax.imshow(counts, cmap="Blues")
    top = max(max(row) for row in counts) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i][j]), ha="center", va="center",
                    color="white" if counts[i][j] > top / 2 else "black")
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted", ylabel="gold", title=f"{task}: confusion ({note})")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    """Write a figure atomically (its format from the name: the temporary's name ends in .tmp)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
