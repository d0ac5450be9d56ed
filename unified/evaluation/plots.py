"""The pictures of a run and of an evaluation, as PNG/JPEG files.

Evaluators draw theirs in ``save_plots`` (precision-recall, F1 and TPR-FAR curves, confusion matrix, per
class bars); a run adds ``results.png`` (its ``results.csv`` over epochs) and ``labels.jpg`` (statistics of
its training boxes). Every title names the metric it shows (AP50 is AP at IoU 0.5, AP50-95 the COCO mean
over IoU 0.5-0.95).

Matplotlib runs on the Agg backend through its object API (no pyplot global state), so plotting works
on machines without a display and from worker threads.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from unified.drawing import color

#: Classes above which per-class curves are drawn thin and without a legend entry.
MAX_LEGEND = 10
#: Metrics every COCO-style evaluator calls ``AP`` (the mean over IoU 0.5-0.95), named for people.
METRIC_LABELS = {"AP": "AP50-95"}


def metric_label(name: str) -> str:
    """How a metric is called where people read it, in pictures and logs (``AP`` is COCO's AP50-95)."""
    return METRIC_LABELS.get(name, name)


def _save(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    figure.savefig(path, dpi=dpi, **({"pil_kwargs": {"quality": 92}} if jpeg else {}))
    return path


def _per_class_lines(
    axes: Any, x: np.ndarray, curves: np.ndarray, class_names: Sequence[str], label: Any
) -> np.ndarray:
    """One line per class with a defined curve (``label(k)`` names it, or none above :data:`MAX_LEGEND`)."""
    defined = ~np.isnan(curves).all(axis=0)
    labelled = defined.sum() <= MAX_LEGEND
    for k in np.flatnonzero(defined):
        axes.plot(x, curves[:, k], linewidth=1.0 if labelled else 0.5, label=label(k) if labelled else None)
    return defined


def _outside_legend(axes: Any) -> None:
    """The legend right of the axes, where it hides no curve."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", borderaxespad=0.0)


def plot_pr_curve(
    recall: np.ndarray,
    precision: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "Precision-recall at IoU 0.5",
    metric: str = "AP50",
) -> Path:
    """Draw one precision-recall curve per class and their mean; the legend gives each area (``metric``).

    Args:
        recall: ``(R,)`` recall values.
        precision: ``(R, K)`` precision per recall value and class; ``nan`` columns (classes without
            ground truth) are skipped.
        class_names: ``K`` names.
        path: Output PNG.
        title: Figure title.
        metric: What the area under a curve is called (``AP50`` for curves at IoU or OKS 0.5).

    Returns:
        The written path.
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(len(recall), -1)
    if precision.shape[1] != len(class_names):
        raise ValueError(
            f"precision has {precision.shape[1]} classes but {len(class_names)} names were given"
        )
    figure = Figure(figsize=(8.5, 5))
    axes = figure.add_subplot()

    def name(k: int) -> str:
        return f"{class_names[k]} {metric} {np.nanmean(precision[:, k]):.3f}"

    defined = _per_class_lines(axes, recall, precision, class_names, name)
    if defined.any():
        mean_curve = np.nanmean(precision[:, defined], axis=1)
        label = f"all classes m{metric} {np.nanmean(mean_curve):.3f}"
        axes.plot(recall, mean_curve, color="black", linewidth=2.5, label=label)
        _outside_legend(axes)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_f1_curve(
    confidence: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "F1 against confidence at IoU 0.5",
) -> Path:
    """F1 of the detections scoring at least each confidence, per class and for their mean.

    Args:
        confidence: ``(C,)`` confidence thresholds.
        precision: ``(C, K)`` precision at each threshold per class (``nan``: class without ground truth).
        recall: ``(C, K)`` recall likewise.
        class_names: ``K`` names.
        path: Output PNG.
        title: Figure title.
    """
    precision, recall = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    if precision.shape != recall.shape or precision.shape[1:] != (len(class_names),):
        raise ValueError(
            f"precision {precision.shape} and recall {recall.shape} must be (C, {len(class_names)})"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1[np.isnan(precision)] = np.nan
    figure = Figure(figsize=(8.5, 5))
    axes = figure.add_subplot()
    defined = _per_class_lines(axes, confidence, f1, class_names, lambda k: class_names[k])
    if defined.any():
        mean = np.nanmean(f1[:, defined], axis=1)
        best = int(np.nanargmax(mean))
        label = f"all classes\n(best F1 {mean[best]:.2f} at confidence {confidence[best]:.3f})"
        axes.plot(confidence, mean, color="black", linewidth=2.5, label=label)
        _outside_legend(axes)
    axes.set(xlabel="confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """The confusion matrix, each true class's column normalised to 1, counts written in the cells.

    Args:
        matrix: ``(K + 1, K + 1)`` counts, rows predicted, columns true; the last row and column are the
            background (missed objects, false detections).
        class_names: ``K`` names.
        path: Output PNG.
        title: Figure title (say the confidence and IoU the matches used).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    names = [*class_names, "background"]
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"a {matrix.shape} matrix for {len(class_names)} classes (expected {len(names)}²)")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = matrix / matrix.sum(axis=0, keepdims=True)
    side = min(4 + 0.45 * len(names), 20)
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    image = axes.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if len(names) <= 30:
        for (row, col), value in np.ndenumerate(matrix):
            if value:
                dark = np.nan_to_num(share[row, col]) > 0.5
                axes.text(col, row, f"{int(value)}", ha="center", va="center", fontsize="small",
                          color="white" if dark else "black")  # fmt: skip
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, labels=names, rotation=90 if len(names) > 8 else 0)
    axes.set_yticks(ticks, labels=names)
    axes.set(xlabel="true", ylabel="predicted", title=title)
    figure.tight_layout()
    return _save(figure, path)


def plot_class_bars(
    series: Mapping[str, Sequence[float] | Mapping[int, float]],
    class_names: Sequence[str],
    path: str | Path,
    title: str,
    xlabel: str = "",
) -> Path:
    """Horizontal bars per class, one colour per series (e.g. AP50 and AP50-95); ``nan`` is marked n/a.

    Args:
        series: Values per class index, by the name of what they are (the legend).
        class_names: Names by class index.
        path: Output PNG.
        title: Figure title.
        xlabel: The horizontal axis' label.

    Returns:
        The written path.
    """
    values = {name: _by_class(v, len(class_names), name) for name, v in series.items()}
    count = len(values)
    height = 0.8 / max(count, 1)
    figure = Figure(figsize=(6.5, max(2.2, (0.22 + 0.16 * count) * len(class_names) + 1.2)))
    axes = figure.add_subplot()
    positions = np.arange(len(class_names))
    for i, (name, ap) in enumerate(values.items()):
        y = positions - 0.4 + height * (i + 0.5)
        axes.barh(y, np.nan_to_num(ap, nan=0.0), height=height, label=name)
        for yi, value in zip(y, ap):
            text = " n/a" if np.isnan(value) else f" {value:.3f}"
            axes.text(0.0 if np.isnan(value) else value, yi, text, va="center", fontsize="small")
    axes.set_yticks(positions, labels=list(class_names))
    axes.invert_yaxis()
    axes.set(xlabel=xlabel, xlim=(0, 1.15), title=title)
    if count > 1:
        axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def _by_class(values: Sequence[float] | Mapping[int, float], count: int, name: str) -> np.ndarray:
    if isinstance(values, Mapping):
        values = [values.get(k, float("nan")) for k in range(count)]
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} values for {count} class names")
    return np.asarray(values, dtype=np.float64)


def plot_tpr_far(
    fars: np.ndarray,
    tprs: np.ndarray,
    path: str | Path,
    title: str = "Embeddings: TPR against FAR",
    marks: Mapping[float, float] | None = None,
    label: str = "TPR",
) -> Path:
    """The share of same-identity pairs accepted (TPR) against that of other-identity pairs (FAR), log FAR.

    Args:
        fars: FARs of the curve.
        tprs: TPR at each.
        path: Output PNG.
        title: Figure title.
        marks: Reported points ``{far: tpr}`` (the evaluator's TPR@FAR metrics), labelled on the curve.
        label: The curve's legend entry (say how many pairs it comes from).
    """
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    if len(fars):
        axes.plot(fars, tprs, color="tab:blue", linewidth=2, label=label)
        axes.set_xscale("log")
        axes.legend(loc="lower right", fontsize="small")
    for far, tpr in (marks or {}).items():
        if math.isfinite(tpr):
            axes.plot([far], [tpr], "o", color="tab:red")
            axes.annotate(f"TPR@FAR={far:g}: {tpr:.3f}", (far, tpr), textcoords="offset points", xytext=(6, -12),
                          fontsize="small")  # fmt: skip
    if not len(fars):
        axes.text(
            0.5, 0.5, "no pair of embeddings to compare", ha="center", va="center", transform=axes.transAxes
        )
    axes.set(xlabel="false accept rate (other-identity pairs accepted)",
             ylabel="true accept rate (same-identity pairs accepted)", ylim=(0, 1.02), title=title)  # fmt: skip
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------ runs


def read_results(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``results.csv`` as numbers (an empty cell, a metric not measured that epoch, is
    ``nan``)."""
    with Path(path).open(newline="") as handle:
        return [{k: _number(v) for k, v in row.items() if k} for row in csv.DictReader(handle)]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def plot_results(
    rows: Sequence[Mapping[str, float]],
    path: str | Path,
    metrics: Mapping[str, Sequence[str]] | None = None,
    max_metrics: int = 4,
) -> Path:
    """``results.png``: per task its loss terms (top) and validation metrics (bottom) over the epochs, with
    the total loss and the learning rate in the first column.

    Args:
        rows: :func:`read_results` of ``results.csv`` (``loss/<task>/<term>``, ``<task>/<metric>``, ``lr``).
        path: Output PNG.
        metrics: Metrics to show per task (others, and tasks not named, show their first ``max_metrics``
            metrics in ``[0, 1]`` whose names hold no ``/``).
        max_metrics: See ``metrics``.

    Raises:
        ValueError: when there is no row.
    """
    if not rows:
        raise ValueError("no epoch to plot: results.csv has no row")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(rows)])
    tasks = list(
        dict.fromkeys(c.split("/")[1] for c in columns if c.startswith("loss/") and c.count("/") == 2)
    )
    figure = Figure(figsize=(3.3 * (len(tasks) + 1), 6.4))
    grid = figure.subplots(2, len(tasks) + 1, squeeze=False)

    def series(axes: Any, keys: Sequence[str], label: Any = lambda k: k.rpartition("/")[2]) -> None:
        for key in keys:
            values = np.array([row.get(key, np.nan) for row in rows], dtype=np.float64)
            shown = ~np.isnan(values)
            if shown.any():
                axes.plot(epochs[shown], values[shown], marker="o" if len(epochs) <= 30 else None,
                          markersize=3, linewidth=1.2, label=label(key))  # fmt: skip
        axes.grid(alpha=0.3)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))

    series(grid[0][0], [c for c in ("loss/total",) if c in columns])
    grid[0][0].set_title("total loss (balanced)")
    series(grid[1][0], [c for c in ("lr",) if c in columns])
    grid[1][0].set_title("learning rate")
    for column, task in enumerate(tasks, start=1):
        terms = [c for c in columns if c.startswith(f"loss/{task}/")]
        if len(terms) == 2:  # one term and its total: the same line twice
            terms = [c for c in terms if not c.endswith("/total")]
        series(grid[0][column], terms)
        grid[0][column].set_title(f"{task}: loss terms (mean per step)")
        shown = _metric_columns(rows, columns, task, (metrics or {}).get(task), max_metrics)
        series(grid[1][column], shown, lambda k: metric_label(k.partition("/")[2]))
        grid[1][column].set_title(f"{task}: validation metrics")
        if not shown:
            grid[1][column].text(0.5, 0.5, "not evaluated", ha="center", va="center",
                                 transform=grid[1][column].transAxes)  # fmt: skip
        else:
            grid[1][column].set_ylim(-0.02, 1.02)
    for axes in grid.flat:
        if axes.get_legend_handles_labels()[0] and len(axes.get_legend_handles_labels()[0]) > 1:
            axes.legend(fontsize="x-small")
    figure.tight_layout()
    return _save(figure, path)


def _metric_columns(
    rows: Sequence[Mapping[str, float]],
    columns: Sequence[str],
    task: str,
    wanted: Sequence[str] | None,
    limit: int,
) -> list[str]:
    """The ``<task>/<metric>`` columns to draw: those wanted, else fractions without a ``/`` in their name."""
    present = [c for c in columns if c.startswith(f"{task}/") and c.count("/") == 1]
    if wanted:
        return [f"{task}/{m}" for m in wanted if f"{task}/{m}" in present]

    def fraction(column: str) -> bool:
        values = np.array([row.get(column, np.nan) for row in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        return bool(values.size) and bool(((values >= 0) & (values <= 1)).all())

    return [c for c in present if fraction(c)][:limit]


def label_statistics(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Every box of ``records`` (their ``boxes`` labels) as ``(N, 4)`` centre-size fractions of its image,
    their ``(N,)`` classes, and how many images carry boxes."""
    rows, classes, images = [], [], 0
    for record in records:
        boxes = record.labels.get("boxes")
        if boxes is None:
            continue
        images += 1
        if not len(boxes):
            continue
        xyxy = np.asarray(boxes.xyxy, np.float64) / [record.width, record.height, record.width, record.height]
        rows.append(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1))
        classes.append(np.asarray(boxes.classes, np.int64))
    if not rows:
        return np.zeros((0, 4)), np.zeros(0, np.int64), images
    return np.concatenate(rows), np.concatenate(classes), images


def plot_labels(records: Sequence[Any], class_names: Sequence[str], path: str | Path) -> Path | None:
    """``labels.jpg``: boxes per class, their shapes (drawn centred), and 2-D histograms of the centres and
    sizes as fractions of the image; None when no record carries boxes.

    Args:
        records: The training images (:class:`~unified.data.records.ImageRecord`).
        class_names: Names by class index.
        path: Output JPEG.
    """
    xywh, classes, images = label_statistics(records)
    if images == 0:
        return None
    figure = Figure(figsize=(10, 9))
    (bars, shapes), (centres, sizes) = figure.subplots(2, 2)
    counts = np.bincount(classes, minlength=len(class_names))[: len(class_names)]
    colours = [_colour(k) for k in range(len(class_names))]
    bars.bar(np.arange(len(class_names)), counts, color=colours)
    bars.set_xticks(
        np.arange(len(class_names)), labels=class_names, rotation=90 if len(class_names) > 8 else 0
    )
    bars.set(ylabel="boxes", title=f"boxes per class ({len(classes)} boxes in {images} images)")
    pick = np.random.default_rng(0).permutation(len(xywh))[:1000]  # enough to see the shapes
    for (_, _, w, h), k in zip(xywh[pick], classes[pick]):
        shapes.add_patch(_rectangle(w, h, _colour(int(k))))
    shapes.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title="box shapes, drawn centred",
               xlabel="fraction of the image width", ylabel="fraction of the image height")  # fmt: skip
    _histogram(
        centres,
        xywh[:, 0],
        xywh[:, 1],
        "box centres",
        "x (fraction of the width)",
        "y (fraction of the height)",
    )
    centres.invert_yaxis()  # as in the image: y grows downwards
    _histogram(
        sizes,
        xywh[:, 2],
        xywh[:, 3],
        "box sizes",
        "width (fraction of the image)",
        "height (fraction of the image)",
    )
    figure.tight_layout()
    return _save(figure, path)


def _colour(index: int) -> tuple[float, float, float]:
    return tuple(c / 255 for c in color(index))  # type: ignore[return-value]


def _rectangle(width: float, height: float, colour: tuple[float, float, float]) -> Rectangle:
    return Rectangle((0.5 - width / 2, 0.5 - height / 2), width, height, fill=False, edgecolor=colour,
                     linewidth=0.6, alpha=0.5)  # fmt: skip


def _histogram(axes: Any, x: np.ndarray, y: np.ndarray, title: str, xlabel: str, ylabel: str) -> None:
    bins = int(np.clip(np.sqrt(len(x)) / 1.5, 10, 50))  # coarse enough that a small dataset shows a pattern
    counts, _, _ = np.histogram2d(x, y, bins=bins, range=[[0, 1], [0, 1]])
    image = axes.imshow(counts.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="equal")
    bar = axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="boxes")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)


__all__ = [
    "METRIC_LABELS",
    "label_statistics",
    "metric_label",
    "plot_class_bars",
    "plot_confusion_matrix",
    "plot_f1_curve",
    "plot_labels",
    "plot_pr_curve",
    "plot_results",
    "plot_tpr_far",
    "read_results",
]


def save_curve_and_results(
    recall: np.ndarray,
    precision: np.ndarray,
    class_names: Sequence[str],
    directory: str | Path,
    task: str,
    title: str,
    results: list[dict],
) -> list[Path]:
    """A COCO-style task's evaluation files: ``{task}_PR_curve.png`` (per-class precision against recall)
    and ``{task}_predictions.json`` (its COCO results list, JSON-ready)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    curve = plot_pr_curve(recall, precision, class_names, directory / f"{task}_PR_curve.png", title=title)
    written = directory / f"{task}_predictions.json"
    written.write_text(json.dumps(results))
    return [curve, written]
