"""Evaluation plots as PNG files: precision-recall curves and per-class AP bars.

Matplotlib runs on the Agg backend through its object API (no pyplot global state), so plotting works
on machines without a display and from worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def plot_pr_curve(
    recall: np.ndarray,
    precision: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "Precision-recall (IoU 0.5)",
    max_legend: int = 10,
) -> Path:
    """Draw one precision-recall curve per class and their mean.

    Args:
        recall: ``(R,)`` recall values.
        precision: ``(R, K)`` precision per recall value and class; ``nan`` columns (classes without
            ground truth) are skipped.
        class_names: ``K`` names.
        path: Output PNG.
        title: Figure title.
        max_legend: Above this many classes the per-class curves are drawn thin and unlabelled.

    Returns:
        The written path.
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(len(recall), -1)
    if precision.shape[1] != len(class_names):
        raise ValueError(
            f"precision has {precision.shape[1]} classes but {len(class_names)} names were given"
        )
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    defined = ~np.isnan(precision).all(axis=0)
    labelled = defined.sum() <= max_legend
    for k in np.flatnonzero(defined):
        ap = float(np.nanmean(precision[:, k]))
        label = f"{class_names[k]} ({ap:.3f})" if labelled else None
        axes.plot(recall, precision[:, k], linewidth=1.0 if labelled else 0.5, label=label)
    if defined.any():
        mean_curve = np.nanmean(precision[:, defined], axis=1)
        mean_ap = float(np.nanmean(mean_curve))
        axes.plot(recall, mean_curve, color="black", linewidth=2.5, label=f"all classes ({mean_ap:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    if defined.any():
        axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_per_class_ap(
    per_class_ap: Mapping[int, float] | Sequence[float],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "AP per class",
) -> Path:
    """Draw a horizontal bar per class with its AP (classes without ground truth are marked n/a).

    Args:
        per_class_ap: AP per class index (a mapping or a sequence in class order).
        class_names: Names by class index.
        path: Output PNG.
        title: Figure title.

    Returns:
        The written path.
    """
    values = (
        [per_class_ap.get(k, float("nan")) for k in range(len(class_names))]
        if isinstance(per_class_ap, Mapping)
        else list(per_class_ap)
    )
    if len(values) != len(class_names):
        raise ValueError(f"{len(values)} AP values for {len(class_names)} class names")
    ap = np.asarray(values, dtype=np.float64)
    figure = Figure(figsize=(6, max(2.0, 0.3 * len(class_names) + 1)))
    axes = figure.add_subplot()
    positions = np.arange(len(class_names))
    axes.barh(positions, np.nan_to_num(ap, nan=0.0), color="tab:blue")
    for y, value in zip(positions, ap):
        axes.text(
            0.0 if np.isnan(value) else value, y, " n/a" if np.isnan(value) else f" {value:.3f}", va="center"
        )
    axes.set_yticks(positions, labels=list(class_names))
    axes.invert_yaxis()
    axes.set(xlabel="AP", xlim=(0, 1.1), title=title)
    figure.tight_layout()
    return _save(figure, path)


__all__ = ["plot_per_class_ap", "plot_pr_curve"]
