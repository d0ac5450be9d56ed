"""train.precision auto on CPU: bf16 from a measured, cached probe (rates injected: no host speed assumed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unified.engine import precision
from unified.engine.precision import BF16_MARGIN, ProbeRates, choose_cpu_precision, machine_key
from unified.engine.trainer import resolve_precision


def counting(rates: ProbeRates) -> tuple[list[int], object]:
    calls: list[int] = []

    def measure() -> ProbeRates:
        calls.append(1)
        return rates

    return calls, measure


def test_bf16_only_when_the_probe_measures_it_faster(tmp_path: Path) -> None:
    fast = choose_cpu_precision(lambda: ProbeRates(120.0, 360.0), cache=tmp_path / "a.json", key="k")
    slow = choose_cpu_precision(lambda: ProbeRates(300.0, 140.0), cache=tmp_path / "b.json", key="k")
    even = choose_cpu_precision(
        lambda: ProbeRates(200.0, 200.0 * BF16_MARGIN * 0.99), cache=tmp_path / "c.json", key="k"
    )
    assert fast.dtype is torch.bfloat16 and slow.dtype is None and even.dtype is None
    line = fast.describe()
    assert "bf16 autocast" in line and "fp32 120 GFLOP/s" in line and "bf16 360 GFLOP/s" in line
    assert "-> fp32" in slow.describe()


def test_the_probe_is_cached_per_machine_key(tmp_path: Path) -> None:
    cache = tmp_path / "unified" / "precision.json"
    calls, measure = counting(ProbeRates(100.0, 300.0))
    first = choose_cpu_precision(measure, cache=cache, key="cpu A | torch 2 | 2 threads")
    again = choose_cpu_precision(measure, cache=cache, key="cpu A | torch 2 | 2 threads")
    assert len(calls) == 1 and not first.cached and again.cached and again.dtype is torch.bfloat16
    assert "cached probe" in again.describe()
    other = choose_cpu_precision(measure, cache=cache, key="cpu A | torch 2 | 4 threads")
    assert len(calls) == 2 and not other.cached
    stored = json.loads(cache.read_text())
    assert stored["cpu A | torch 2 | 2 threads"] == {"fp32": 100.0, "bf16": 300.0}
    choose_cpu_precision(measure, cache=cache, key="cpu A | torch 2 | 2 threads", refresh=True)
    assert len(calls) == 3


def test_a_damaged_cache_is_measured_again(tmp_path: Path) -> None:
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    calls, measure = counting(ProbeRates(300.0, 100.0))
    assert choose_cpu_precision(measure, cache=cache, key="k").dtype is None and calls
    cache.write_text(json.dumps({"k": {"fp32": "x"}}))
    assert not choose_cpu_precision(measure, cache=cache, key="k").cached


def test_machine_key_names_cpu_torch_and_threads() -> None:
    key = machine_key(3)
    assert torch.__version__ in key and key.endswith("3 threads")


def test_resolve_precision_auto_uses_the_probe_on_cpu(monkeypatch) -> None:
    fake = precision.PrecisionChoice(torch.bfloat16, ProbeRates(1.0, 2.0), True, "k")
    monkeypatch.setattr(precision, "_announced", fake)
    assert resolve_precision("auto", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(precision, "_announced", precision.PrecisionChoice(None, ProbeRates(2, 1), True, "k"))
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16


def test_the_real_probe_measures_both_rates() -> None:
    rates = precision.measure_conv_rates(repeats=1)
    assert rates.fp32 > 0 and rates.bf16 > 0


def test_in_a_process_group_rank_zero_decides(monkeypatch, tmp_path) -> None:
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(
            precision, "_announced", precision.PrecisionChoice(torch.bfloat16, ProbeRates(1, 3), True, "k")
        )
        assert precision.auto_cpu_dtype() is torch.bfloat16
    finally:
        dist.destroy_process_group()
