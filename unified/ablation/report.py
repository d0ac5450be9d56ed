"""The report of a study from whatever of its runs have finished: ``ablation.csv`` (per variant and metric:
mean, standard deviation, paired difference from the reference with its interval), ``ablation-runs.csv``
(every run's values), ``ablation.md`` (the tables) and ``ablation.png`` (per headline metric, each variant's
mean with its standard deviation and the runs' values)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unified.ablation.runner import RESULT
from unified.ablation.stats import PairedDifference, Summary, paired_difference, summarize
from unified.ablation.studies import Study

#: The splits a run is scored on, in the order the report shows them: the world made with an unseen seed
#: first (what the study is about), then the training world's own validation split.
SPLITS = {
    "unseen": "the validation split of a world made with an unseen seed",
    "val": "the training world's validation split",
}


@dataclass(frozen=True)
class RunResult:
    """One finished run: its variant, seed, budget and metrics per split, task and metric name."""

    variant: str
    seed: int
    epochs: int
    img_size: int
    unseen_seed: int | None
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True)
class Row:
    """One variant's metric on one split: its summary over seeds and its difference from the reference."""

    split: str
    variant: str
    reference: str | None
    task: str
    metric: str
    summary: Summary
    difference: PairedDifference | None


def collect_results(out: Path, study: Study) -> list[RunResult]:
    """The finished runs of the study's variants under ``out/runs`` (folders of other names are ignored)."""
    results = []
    for variant in study.variants:
        for path in sorted((out / "runs" / variant.name).glob(f"seed*/{RESULT}")):
            data = json.loads(path.read_text())
            metrics = {
                split: {task: _scalars(values) for task, values in tasks.items()}
                for split, tasks in (data.get("metrics") or {}).items()
            }
            results.append(
                RunResult(
                    variant.name,
                    int(data["seed"]),
                    int(data["epochs"]),
                    int(data["img_size"]),
                    data.get("unseen_seed"),
                    metrics,
                )
            )
    return results


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The per-task scalar metrics (``null`` as nan); per-class breakdowns (``AP/person``) left out."""
    kept = {}
    for name, value in values.items():
        if "/" in name or isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            continue
        kept[name] = math.nan if value is None else float(value)
    return kept


def summarize_study(study: Study, results: Sequence[RunResult], confidence: float = 0.95) -> list[Row]:
    """Every (split, variant, task, metric) with a finished run, in the study's variant order."""
    by_variant: dict[str, list[RunResult]] = {}
    for result in results:
        by_variant.setdefault(result.variant, []).append(result)
    rows = []
    for split in SPLITS:
        keys = _metric_keys(results, split)
        for variant in study.variants:
            runs = by_variant.get(variant.name, [])
            reference = study.reference_of(variant)
            for task, metric in keys:
                values = _by_seed(runs, split, task, metric)
                if not values:
                    continue
                difference = None
                if reference is not None:
                    base = _by_seed(by_variant.get(reference, []), split, task, metric)
                    difference = paired_difference(values, base, confidence) if base else None
                rows.append(
                    Row(split, variant.name, reference, task, metric, summarize(values.values()), difference)
                )
    return rows


def _metric_keys(results: Sequence[RunResult], split: str) -> list[tuple[str, str]]:
    keys: dict[tuple[str, str], None] = {}
    for result in results:
        for task, values in result.metrics.get(split, {}).items():
            keys.update(dict.fromkeys((task, metric) for metric in values))
    return list(keys)


def _by_seed(runs: Sequence[RunResult], split: str, task: str, metric: str) -> dict[int, float]:
    return {
        r.seed: r.metrics[split][task][metric]
        for r in runs
        if metric in r.metrics.get(split, {}).get(task, {})
    }


def headline_metrics(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """The metrics the tables and the plot show: each task's ``Task.summary_metrics`` (the ones its
    per-epoch line shows), or its first three for a task that names none; ``ablation.csv`` has them all."""
    from unified.task import TASKS

    present: dict[str, list[str]] = {}
    for row in rows:
        names = present.setdefault(row.task, [])
        if row.metric not in names:
            names.append(row.metric)
    chosen = []
    for task, names in present.items():
        wanted = TASKS.get(task).summary_metrics if task in TASKS else ()
        chosen += [(task, m) for m in (wanted or names[:3]) if m in names]
    return chosen


def _label(task: str, metric: str) -> str:
    from unified.evaluation.plots import metric_label

    return f"{task} {metric_label(metric)}"


def write_csv(path: Path, rows: Sequence[Row]) -> Path:
    """``ablation.csv``: one line per split, variant and metric (numbers unrounded; nan left empty)."""
    header = [
        "split", "variant", "reference", "task", "metric", "n", "mean", "std",
        "diff_n", "diff_mean", "diff_std", "ci_low", "ci_high", "confidence",
    ]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in rows:
            d = r.difference
            diff = [d.n, d.mean, d.std, d.low, d.high, d.confidence] if d is not None else [""] * 6
            writer.writerow(
                _plain(
                    [
                        r.split,
                        r.variant,
                        r.reference or "",
                        r.task,
                        r.metric,
                        r.summary.n,
                        r.summary.mean,
                        r.summary.std,
                        *diff,
                    ]
                )
            )
    return path


def write_runs_csv(path: Path, results: Sequence[RunResult]) -> Path:
    """``ablation-runs.csv``: every finished run's every scalar metric, one line each."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "variant", "seed", "epochs", "img_size", "task", "metric", "value"])
        for r in results:
            for split, tasks in r.metrics.items():
                for task, values in tasks.items():
                    for metric, value in values.items():
                        writer.writerow(
                            _plain([split, r.variant, r.seed, r.epochs, r.img_size, task, metric, value])
                        )
    return path


def _plain(cells: Sequence[Any]) -> list[Any]:
    """A CSV line's cells with undefined numbers (nan) left empty, as spreadsheets and pandas read them."""
    return ["" if isinstance(c, float) and not math.isfinite(c) else c for c in cells]


def _number(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text.replace("-", "−")


def _mean_cell(s: Summary) -> str:
    return f"{_number(s.mean)} ± {_number(s.std)}" if s.n > 1 else _number(s.mean)


def _difference_cell(d: PairedDifference | None) -> str:
    if d is None or d.n == 0:
        return ""
    if d.n < 2:
        return f"{_number(d.mean, True)} (1 pair)"
    text = f"{_number(d.mean, True)} [{_number(d.low, True)}, {_number(d.high, True)}]"
    return f"**{text}**" if d.excludes_zero else text


def markdown(
    study: Study, results: Sequence[RunResult], rows: Sequence[Row], confidence: float = 0.95
) -> str:
    """``ablation.md``: per split, a table of means ± standard deviations and one of paired differences."""
    lines = [f"# Ablation study `{study.name}`", "", study.description, ""]
    if not results:
        return "\n".join([*lines, "No run of this study has finished yet.", ""])
    budgets = sorted({(r.epochs, r.img_size) for r in results})
    seeds = {v.name: sorted(r.seed for r in results if r.variant == v.name) for v in study.variants}
    lines += [
        "Budget per run: "
        + "; ".join(f"{e} epoch{'s' if e != 1 else ''} at {i}²" for e, i in budgets)
        + f". Finished runs: {len(results)} (seeds per variant: "
        + ", ".join(f"{name} {len(s)}" for name, s in seeds.items() if s)
        + ").",
        "",
        "Cells: mean ± sample standard deviation over seeds. Differences: variant − reference, paired by "
        f"seed, with the {confidence * 100:g} % t interval; **bold** where the interval excludes zero.",
        "",
    ]
    headline = headline_metrics(rows)
    for split, meaning in SPLITS.items():
        here = {(r.variant, r.task, r.metric): r for r in rows if r.split == split}
        if not here:
            continue
        unseen = sorted({r.unseen_seed for r in results if r.unseen_seed is not None})
        title = meaning + (f" (seed {', '.join(map(str, unseen))})" if split == "unseen" and unseen else "")
        lines += [f"## On {title}", ""]
        columns = [k for k in headline if any((v.name, *k) in here for v in study.variants)]
        lines += _table(
            ["variant", "runs", *(_label(*k) for k in columns)],
            [
                [v.name, str(len(seeds[v.name])), *(_cell(here, v.name, k, _mean) for k in columns)]
                for v in study.variants
                if seeds[v.name]
            ],
        )
        compared = [v for v in study.variants if seeds[v.name] and study.reference_of(v) is not None]
        if compared:
            lines += ["", "Difference from the reference:", ""]
            lines += _table(
                ["variant", "reference", *(_label(*k) for k in columns)],
                [
                    [v.name, study.reference_of(v) or "", *(_cell(here, v.name, k, _diff) for k in columns)]
                    for v in compared
                ],
            )
        lines.append("")
    return "\n".join(lines)


def _diff(row: Row) -> str:
    return _difference_cell(row.difference)


def _mean(row: Row) -> str:
    return _mean_cell(row.summary)


def _cell(
    here: Mapping[tuple[str, str, str], Row], variant: str, key: tuple[str, str], show: Callable[[Row], str]
) -> str:
    row = here.get((variant, *key))
    if row is None:
        return ""
    return show(row)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in body),
    ]


def plot(path: Path, study: Study, results: Sequence[RunResult], rows: Sequence[Row]) -> Path | None:
    """``ablation.png``: per headline metric of the first split with results, each variant's mean with its
    standard deviation as error bar, every run's value as a dot and the baseline's mean as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    split = next((s for s in SPLITS if any(r.split == s for r in rows)), None)
    if split is None:
        return None
    # A metric undefined in every run (a FAR the pairs cannot resolve) has nothing to draw.
    headline = [
        key
        for key in headline_metrics([r for r in rows if r.split == split])
        if any((r.task, r.metric) == key and math.isfinite(r.summary.mean) for r in rows if r.split == split)
    ]
    if not headline:
        return None
    variants = [v.name for v in study.variants if any(r.variant == v.name for r in results)]
    columns = min(3, len(headline))
    lines = math.ceil(len(headline) / columns)
    figure = Figure(figsize=(4.2 * columns, (0.32 * len(variants) + 1.2) * lines), layout="constrained")
    here = {(r.variant, r.task, r.metric): r for r in rows if r.split == split}
    for i, (task, metric) in enumerate(headline):
        axes = figure.add_subplot(lines, columns, i + 1)
        ys = list(range(len(variants)))[::-1]
        for y, name in zip(ys, variants):
            row = here.get((name, task, metric))
            if row is None:
                continue
            std = row.summary.std if math.isfinite(row.summary.std) else 0.0
            axes.errorbar(row.summary.mean, y, xerr=std, fmt="o", color="C0", capsize=3)
            values = [r.metrics[split][task][metric] for r in results if r.variant == name
                      and metric in r.metrics.get(split, {}).get(task, {})]  # fmt: skip
            axes.plot(values, [y] * len(values), ".", color="C1", alpha=0.6)
        base = here.get((study.baseline, task, metric))
        if base is not None and math.isfinite(base.summary.mean):
            axes.axvline(base.summary.mean, color="grey", linestyle="--", linewidth=1)
        axes.set_yticks(ys, variants if i % columns == 0 else [""] * len(variants))
        axes.set_title(_label(task, metric), fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{study.name}: mean ± std over seeds, on {SPLITS[split]}", fontsize=10)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def write_report(out: Path, study: Study, confidence: float = 0.95) -> list[Path]:
    """Collect the finished runs under ``out`` and write the report files there; returns their paths."""
    results = collect_results(out, study)
    rows = summarize_study(study, results, confidence)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / "ablation.csv", rows), write_runs_csv(out / "ablation-runs.csv", results)]
    (out / "ablation.md").write_text(markdown(study, results, rows, confidence))
    written.append(out / "ablation.md")
    picture = plot(out / "ablation.png", study, results, rows) if rows else None
    if picture is not None:
        written.append(picture)
    return written


__all__ = [
    "SPLITS",
    "Row",
    "RunResult",
    "collect_results",
    "headline_metrics",
    "markdown",
    "plot",
    "summarize_study",
    "write_csv",
    "write_report",
    "write_runs_csv",
]
