"""Side-by-side timing: interleaved repeats, medians, and ratios of paired measurements.

Absolute times drift on shared machines (other processes, frequency scaling, thermal limits). Running
the variants being compared in turn, repeat after repeat, exposes each pair to the same conditions, and
the median of the per-repeat ratios is far steadier than the ratio of two separately taken medians.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timings:
    """Seconds per call of every variant, repeat by repeat (the same repeat index ran side by side).

    Attributes:
        seconds: Per variant the list of per-repeat durations.
        load_average: The 1-minute load average of the machine before and after (``nan`` if unknown),
            so a report can warn that other processes shared the cores.
    """

    seconds: dict[str, list[float]] = field(default_factory=dict)
    load_average: tuple[float, float] = (float("nan"), float("nan"))

    def median(self, name: str) -> float:
        """Median seconds per call of ``name``."""
        return statistics.median(self.seconds[name])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over repeats of ``time(numerator) / time(denominator)`` (> 1: numerator is slower)."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator])
        return statistics.median(a / b for a, b in pairs)

    def min_ratio(self, numerator: str, denominator: str) -> float:
        """``min time(numerator) / min time(denominator)``: a cross-check that ignores contended repeats
        (other processes only ever add time); far from :meth:`ratio`, it says the machine was busy."""
        return min(self.seconds[numerator]) / min(self.seconds[denominator])

    def spread(self, name: str) -> float:
        """Relative spread of ``name``: (max - min) / median, a quick noise indicator."""
        values = self.seconds[name]
        return (max(values) - min(values)) / statistics.median(values)


def load_average() -> float:
    """The 1-minute load average, or ``nan`` where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    inner: Mapping[str, int] | None = None,
) -> Timings:
    """Time every variant ``repeats`` times, taking turns in a rotating order, after ``warmup`` untimed calls.

    Args:
        variants: Name → a callable doing one unit of work (a training step, a forward pass).
        repeats: Timed calls per variant.
        warmup: Untimed calls per variant first (allocator, oneDNN primitive caches, lazy inits).
        device: Synchronised around every call.
        inner: Optional name → calls per timed sample (for very short work); the time is divided by it.

    Returns:
        Per-call seconds of every variant.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    inner = dict(inner or {})
    before = load_average()
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        # Each round starts one variant later, so no variant always runs right after the same other one.
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn = variants[name]
            calls = inner.get(name, 1)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / calls)
    return Timings(seconds, (before, load_average()))


def best_of(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    return interleaved({"fn": fn}, repeats, 1, device).median("fn")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


__all__ = ["Timings", "best_of", "interleaved", "load_average", "median", "synchronize"]
