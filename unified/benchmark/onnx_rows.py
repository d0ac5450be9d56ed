"""Inference in ONNX Runtime (fp32 and int8) beside PyTorch eager fp32 and the official fused forward, and
the host's fp32 and bf16 convolution rates (what ``train.precision: auto`` decides from).

For each model (the inference model of the profile, ``yolor-p6-paper`` 640² in the full run, and the demo
model at the demo's size with its tasks), at the profile's latency and throughput batches:

* ``pytorch_fp32``: the fused, channels-last eager forward as the inference tools run it;
* ``onnxruntime_fp32``: the same weights exported by :func:`unified.export.onnx.export_onnx` (decode
  inside), run by :class:`unified.inference.onnx_backend.OnnxModel`;
* ``onnxruntime_int8``: that graph quantised by :func:`unified.export.int8.quantize_int8` (QDQ, per-channel
  weights) on a few random images: the speed of the int8 kernels; the accuracy it costs is measured by
  ``unified export --int8`` on a dataset (docs/PERFORMANCE.md), not here;
* ``official``: the official fused eval forward, on the inference model only, when a checkout is given.

ONNX Runtime runs on the CPU here (the CPU execution provider): on another device the group is skipped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.benchmark import workloads as w
from unified.benchmark.profiles import Profile
from unified.benchmark.timing import interleaved

#: Random images the int8 graph of the benchmark is calibrated on (speed only; see the module docstring).
CALIBRATION_IMAGES = 4


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def precision_probe() -> dict[str, Any]:
    """A fresh measurement of the probe convolution (never the cache) and what ``auto`` would pick from it."""
    from unified.engine.precision import BF16_MARGIN, machine_key, measure_conv_rates

    rates = measure_conv_rates()
    return {
        "conv3x3_gflops": {"fp32": rates.fp32, "bf16": rates.bf16},
        "bf16_speedup": rates.speedup,
        "auto_picks": "bf16" if rates.speedup >= BF16_MARGIN else "fp32",
        "margin": BF16_MARGIN,
        "machine_key": machine_key(),
    }


def _models(profile: Profile) -> dict[str, dict[str, Any]]:
    demo = w.demo_experiment()
    return {
        "paper": {
            "model": profile.infer_model,
            "size": profile.infer_size,
            "tasks": ["detect"],
            "info": None,
        },
        "demo": {
            "model": demo.model,
            "size": profile.demo_size or demo.train.img_size,
            "tasks": list(demo.tasks),
            "info": w.demo_info(),
            "task_options": demo.task_options,
        },
    }


def _build(spec: dict[str, Any]) -> Any:
    from unified.model import build_model

    torch.manual_seed(0)
    if spec["info"] is None:
        return w.build_model_for_inference(spec["model"])
    options = {k: dict(v) for k, v in (spec.get("task_options") or {}).items()}
    return build_model(
        w.repo_path(spec["model"]), tasks=spec["tasks"], info=spec["info"], task_options=options
    ).eval()


def onnx_group(
    device: torch.device,
    profile: Profile,
    official_repo: Path | None = None,
    log: Any = lambda text: None,
) -> dict[str, Any]:
    """Latency (ms, small batch) and throughput (img/s, large batch) of every variant for each model, and
    the speed-ups over the official forward; ``{"skipped": why}`` where ONNX Runtime cannot run."""
    if device.type != "cpu":
        return {"skipped": f"ONNX Runtime rows run on the CPU only (device {device})"}
    if not onnxruntime_available():
        return {"skipped": "onnx/onnxruntime not installed (pip install 'unified[export]')"}
    from unified.benchmark.official import load_official, official_inference
    from unified.export.int8 import quantize_int8
    from unified.export.onnx import export_onnx
    from unified.inference.onnx_backend import OnnxModel

    small, large = profile.infer_batches
    out: dict[str, Any] = {"batches": [small, large], "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for role, spec in _models(profile).items():
            size = int(spec["size"])
            log(f"  onnx rows: {role} ({Path(str(spec['model'])).stem} {size}²)")
            model = _build(spec)
            reference = w.build_inference(
                spec["model"], device, batch=small, size=size, fused=True, model=model
            )
            fp32_path, _ = export_onnx(reference.model, Path(scratch) / f"{role}.onnx", (size, size))
            rng = np.random.default_rng(0)
            calibration = [
                rng.random((1, 3, size, size), dtype=np.float32) for _ in range(CALIBRATION_IMAGES)
            ]
            int8_path = quantize_int8(fp32_path, Path(scratch) / f"{role}-int8.onnx", calibration)
            sessions = {"onnxruntime_fp32": OnnxModel(fp32_path), "onnxruntime_int8": OnnxModel(int8_path)}
            row: dict[str, Any] = {
                "model": Path(str(spec["model"])).stem,
                "img_size": size,
                "tasks": spec["tasks"],
            }
            for batch, key, repeats in (
                (small, "latency_ms", profile.latency_repeats),
                (large, "images_per_s", profile.throughput_repeats),
            ):
                eager = w.build_inference(
                    spec["model"], device, batch=batch, size=size, fused=True, model=model
                )
                images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
                array = images.numpy()
                fns = {"pytorch_fp32": eager.forward}
                for name, session in sessions.items():
                    fns[name] = lambda s=session, a=array: s.run(a)
                if role == "paper" and official_repo is not None:
                    fns["official"] = official_inference(
                        load_official(official_repo), device, batch=batch, size=size
                    )
                timings = interleaved(fns, repeats, 1, device)
                if key == "latency_ms":
                    row[key] = {n: timings.median(n) * 1000 for n in fns}
                    if "official" in fns:
                        row["latency_speedup_vs_official"] = {
                            n: timings.ratio("official", n) for n in fns if n != "official"
                        }
                else:
                    row[key] = {n: batch / timings.median(n) for n in fns}
                    if "official" in fns:
                        row["throughput_speedup_vs_official"] = {
                            n: timings.ratio("official", n) for n in fns if n != "official"
                        }
            out["models"][role] = row
    return out


def onnx_table_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows of the headline table for the ONNX group and the precision probe."""
    rows: list[tuple[str, str, str]] = []
    probe = result.get("precision_probe")
    if probe:
        rates = probe["conv3x3_gflops"]
        rows.append(
            (
                "Host probe: 3×3 conv GFLOP/s (what precision auto decides from)",
                f"fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f} ({probe['bf16_speedup']:.2f}×; auto picks "
                f"{probe['auto_picks']})",
                "",
            )
        )
    group = result.get("onnx_inference") or {}
    if "skipped" in group:
        rows.append(("ONNX Runtime inference", f"skipped: {group['skipped']}", ""))
        return rows
    small, large = group.get("batches", [1, 8])
    for row in group.get("models", {}).values():
        name = f"{row['model']} {row['img_size']}²"
        rows.append(
            (
                f"Inference latency by backend, {name}, batch {small}",
                ", ".join(f"{k} {v:.1f} ms" for k, v in row["latency_ms"].items()),
                "",
            )
        )
        rows.append(
            (
                f"Inference throughput by backend, {name}, batch {large}",
                ", ".join(f"{k} {v:.2f} img/s" for k, v in row["images_per_s"].items()),
                "",
            )
        )
        if "latency_speedup_vs_official" in row:
            lat, thr = row["latency_speedup_vs_official"], row["throughput_speedup_vs_official"]
            rows.append(
                (
                    f"Speed-up vs official fused forward, {name} (batch {small}; batch {large})",
                    ", ".join(f"{k} {lat[k]:.2f}× ({thr[k]:.2f}×)" for k in lat),
                    "≥ 1.3× at batch 1",
                )
            )
    return rows


__all__ = ["CALIBRATION_IMAGES", "onnx_group", "onnx_table_rows", "onnxruntime_available", "precision_probe"]
