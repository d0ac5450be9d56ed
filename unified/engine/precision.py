"""Whether bf16 autocast pays on this CPU, decided by a short measured probe rather than by CPU flags.

Flags do not tell: two hosts of the same kind, both AVX512-BF16 without AMX, measured a 3×3 convolution at
342 (fp32) vs 174 GFLOP/s (bf16) on one and 199 vs 383 on the other (docs/PERFORMANCE.md). So
``train.precision: auto`` on a CPU times the same convolution in fp32 and under bf16 autocast (a fraction of
a second), picks bf16 only when it runs at least :data:`BF16_MARGIN` times the fp32 rate, and caches the
measurement per machine (CPU model, torch version, thread count) in ``~/.cache/unified/precision.json``
(``$XDG_CACHE_HOME/unified`` when set) so later runs do not measure again.

Tests inject the rates through the ``measure`` argument of :func:`choose_cpu_precision`: the decision and
the cache never depend on how fast the test host is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

#: bf16 must beat fp32 by this factor on the probe: the casts around the convolutions (BatchNorm, SiLU,
#: the losses in fp32) cost ~10 % of a training step that the probe does not see.
BF16_MARGIN = 1.15

#: The probe's convolution: 3×3, 128 → 128 channels on a 40×40 map, channels-last, batch 2 — a mid-network
#: layer of the YOLOR models (yolor-p6's 320² training runs 3×3 convs of 128–256 channels on 20–80² maps).
PROBE_SHAPE = (2, 128, 40, 40)


@dataclass(frozen=True)
class ProbeRates:
    """Measured GFLOP/s of the probe convolution.

    Attributes:
        fp32: In full precision.
        bf16: Under ``torch.autocast("cpu", torch.bfloat16)``.
    """

    fp32: float
    bf16: float

    @property
    def speedup(self) -> float:
        return self.bf16 / self.fp32 if self.fp32 > 0 else 0.0


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` picked on this CPU and why.

    Attributes:
        dtype: ``torch.bfloat16`` or None (fp32).
        rates: The probe's measurement.
        cached: True when the rates came from the cache file, not a fresh measurement.
        key: The machine key the cache files them under.
    """

    dtype: torch.dtype | None
    rates: ProbeRates
    cached: bool
    key: str

    def describe(self) -> str:
        """The log line: what was chosen, the measured rates, where they came from."""
        chosen = "bf16 autocast" if self.dtype is torch.bfloat16 else "fp32"
        source = "cached probe" if self.cached else "probe"
        return (
            f"train.precision auto -> {chosen} on this CPU ({source}: 3x3 conv fp32 {self.rates.fp32:.0f} "
            f"GFLOP/s, bf16 {self.rates.bf16:.0f} GFLOP/s, {self.rates.speedup:.2f}x; bf16 needs "
            f">= {BF16_MARGIN:.2f}x)"
        )


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``unknown`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_key(threads: int | None = None) -> str:
    """What a probe result is valid for: the CPU model, the torch version and the thread count."""
    threads = torch.get_num_threads() if threads is None else threads
    return f"{cpu_model()} | torch {torch.__version__} | {threads} threads"


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/unified/precision.json``, by default under ``~/.cache``."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "unified" / "precision.json"


def measure_conv_rates(repeats: int = 8) -> ProbeRates:
    """Time the probe convolution in fp32 and under bf16 autocast, in turns (so that whatever else the
    machine runs slows both alike), best of ``repeats`` each after a warm-up; about 0.2–0.5 s on 2 cores."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*PROBE_SHAPE, generator=generator).to(memory_format=torch.channels_last)
    channels = PROBE_SHAPE[1]
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(memory_format=torch.channels_last)
    flops = 2.0 * PROBE_SHAPE[0] * channels * channels * 9 * PROBE_SHAPE[2] * PROBE_SHAPE[3]

    def seconds(bf16: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            F.conv2d(x, weight, padding=1)
            return time.perf_counter() - start

    best = {False: float("inf"), True: float("inf")}
    for i in range(repeats + 2):
        for bf16 in (False, True):
            elapsed = seconds(bf16)
            if i >= 2:  # the first calls pick and prepare oneDNN's kernels
                best[bf16] = min(best[bf16], elapsed)
    return ProbeRates(fp32=flops / best[False] / 1e9, bf16=flops / best[True] / 1e9)


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, dict[str, float]]) -> None:
    # A cache that cannot be written (read-only home) only costs a measurement next time.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        temporary.replace(path)
    except OSError:
        pass


def choose_cpu_precision(
    measure: Callable[[], ProbeRates] = measure_conv_rates,
    cache: Path | None = None,
    key: str | None = None,
    refresh: bool = False,
) -> PrecisionChoice:
    """bf16 or fp32 for autocast on this CPU, from the cached probe of this machine or a fresh one.

    Args:
        measure: Returns the probe's rates (the seam tests inject rates through).
        cache: The cache file (default :func:`cache_path`).
        key: The machine key (default :func:`machine_key`).
        refresh: Measure again even when the cache has this machine.
    """
    cache = cache_path() if cache is None else cache
    key = machine_key() if key is None else key
    entries = _read_cache(cache)
    stored = entries.get(key)
    rates: ProbeRates | None = None
    if not refresh and isinstance(stored, dict):
        try:
            rates = ProbeRates(fp32=float(stored["fp32"]), bf16=float(stored["bf16"]))
        except (KeyError, TypeError, ValueError):
            rates = None
    cached = rates is not None
    if rates is None:
        rates = measure()
        entries[key] = asdict(rates)
        _write_cache(cache, entries)
    dtype = torch.bfloat16 if rates.speedup >= BF16_MARGIN else None
    return PrecisionChoice(dtype, rates, cached, key)


_announced: PrecisionChoice | None = None


def auto_cpu_dtype() -> torch.dtype | None:
    """:func:`choose_cpu_precision` once per process, printing its log line the first time.

    In a process group (CPU DDP under torchrun) rank 0's choice is broadcast, so that no two ranks train in
    different precisions when their probes land on either side of the margin.
    """
    global _announced
    if _announced is None:
        _announced = choose_cpu_precision()
        print(_announced.describe())
    dtype = _announced.dtype
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([1.0 if dtype is torch.bfloat16 else 0.0])
        torch.distributed.broadcast(flag, src=0)
        dtype = torch.bfloat16 if float(flag) > 0 else None
    return dtype


__all__ = [
    "BF16_MARGIN",
    "PROBE_SHAPE",
    "PrecisionChoice",
    "ProbeRates",
    "auto_cpu_dtype",
    "cache_path",
    "choose_cpu_precision",
    "cpu_model",
    "machine_key",
    "measure_conv_rates",
]
