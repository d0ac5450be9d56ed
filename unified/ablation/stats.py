"""The statistics of a study: mean and standard deviation over seeds, and the paired difference from a
reference variant with its t confidence interval (paired by seed: the runs of one seed share their
initialisation noise and data order, so the difference of a pair has less noise than two means)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (``ddof=1``; nan for fewer than two values) of ``n`` values."""

    n: int
    mean: float
    std: float


@dataclass(frozen=True)
class PairedDifference:
    """``variant - reference`` over the seeds both have: mean, standard deviation and the t interval.

    Attributes:
        n: Pairs (seeds with a finite value in both).
        mean: Mean difference.
        std: Sample standard deviation of the differences.
        low: Lower end of the confidence interval (nan for fewer than two pairs).
        high: Upper end.
        confidence: The interval's confidence level.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies on one side of zero (the direction holds at this confidence)."""
        return self.low > 0 or self.high < 0


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean and standard deviation of the finite values (a metric that was undefined, nan or None, in a
    run is left out)."""
    kept = _finite(values)
    n = len(kept)
    mean = sum(kept) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n > 1 else math.nan
    return Summary(n, mean, std)


def paired_difference(
    variant: Mapping[int, float | None], reference: Mapping[int, float | None], confidence: float = 0.95
) -> PairedDifference:
    """The difference ``variant - reference``, paired by seed, with a two-sided t interval.

    Args:
        variant: Metric value by seed.
        reference: The reference variant's value by seed.
        confidence: Level of the interval, in (0, 1).

    Returns:
        Over the seeds where both values are finite: mean ± ``t(1 - (1 - confidence) / 2, n - 1) * s / √n``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pairs = [
        float(variant[s]) - float(reference[s])
        for s in sorted(set(variant) & set(reference))
        if _finite([variant[s]]) and _finite([reference[s]])
    ]
    summary = summarize(pairs)
    if summary.n < 2:
        return PairedDifference(summary.n, summary.mean, summary.std, math.nan, math.nan, confidence)
    half = stats.t.ppf(0.5 + confidence / 2, summary.n - 1) * summary.std / math.sqrt(summary.n)
    return PairedDifference(
        summary.n, summary.mean, summary.std, summary.mean - half, summary.mean + half, confidence
    )


__all__ = ["PairedDifference", "Summary", "paired_difference", "summarize"]
