"""Run every measurement and assemble the JSON result and the markdown table of ``tools/benchmark.py``."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.benchmark import measures as m
from unified.benchmark import workloads as w
from unified.benchmark.onnx_rows import onnx_group, onnx_table_rows, precision_probe
from unified.benchmark.profiles import Profile
from unified.engine.trainer import cpu_supports_bf16

#: Top-level keys every result has (the ``*_vs_official`` ones only when the official code was timed).
REQUIRED_KEYS = (
    "train_step_images_per_s",
    "infer_latency_ms",
    "fused_implicit_overhead",
    "multitask_overhead",
    "flops_utilization",
    "data_vs_step_ratio",
    "tracker_fps",
    "peak_memory_mb",
)
OFFICIAL_KEYS = ("train_step_speedup_vs_official", "infer_speedup_vs_official")


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def versions() -> dict[str, str]:
    import torchvision

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }
    try:
        out["unified_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=w.REPO,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["unified_commit"] = ""
    return out


def _speedup(timings: Any, slower: str, faster: str) -> float:
    """``time(slower) / time(faster)``, median over interleaved repeats."""
    return timings.ratio(slower, faster)


def run_benchmark(
    profile: Profile,
    device: torch.device,
    official_repo: Path | None = None,
    log: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Measure everything ``profile`` asks for on ``device``; returns the JSON-ready result."""
    result: dict[str, Any] = {
        "profile": profile.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "machine": machine_info(device),
        "versions": versions(),
    }
    mixed = m.mixed_dtype(device)
    mixed_name = m.DTYPE_NAMES[mixed]
    load: dict[str, list[float]] = {}

    # 1, 3, 4: training steps ----------------------------------------------------------------------------
    log("training step: paper protocol")
    paper_cfg = w.experiment(model=profile.paper_model, batch=profile.paper_batch, size=profile.paper_size)
    every_task = w.all_tasks()
    paper = m.train_group(
        "paper",
        paper_cfg,
        w.coco_like_info(tasks=every_task),
        device,
        profile,
        (["detect"], every_task),
        official_repo,
    )
    log("training step: demo")
    demo_base = w.demo_experiment()
    demo_cfg = w.experiment(
        demo_base,
        batch=profile.demo_batch or demo_base.train.batch_size,
        size=profile.demo_size or demo_base.train.img_size,
    )
    demo_tasks = list(demo_cfg.tasks)
    demo = m.train_group("demo", demo_cfg, w.demo_info(), device, profile, (demo_tasks, ["detect"]))
    groups = {"paper": paper, "demo": demo}
    result["workloads"] = {name: g.description for name, g in groups.items()}
    _training_results(result, groups, demo_tasks, every_task, mixed_name if mixed is not None else None)

    log("matrix-product reference")
    peaks = {"fp32": m.matmul_gflops(torch.float32, profile.matmul_size, device)}
    if mixed is not None:
        peaks[mixed_name] = m.matmul_gflops(mixed, profile.matmul_size, device)
    result["matmul_gflops"] = peaks
    utilisation = _flops_results(result, groups, peaks, mixed_name)
    log(f"  images/s {result['train_step_images_per_s']}, fp32 {result['train_step_images_per_s_fp32']}")
    log(
        f"  vs official {result.get('train_step_speedup_vs_official')}, multi-task {result['multitask_overhead']}"
    )
    log(f"  utilisation {utilisation}")
    for n, g in groups.items():
        load[f"train_{n}"] = list(g.timings.load_average)

    # 2: inference --------------------------------------------------------------------------------------
    log("inference")
    inf = m.inference_group(device, profile, official_repo)
    result["workloads"]["inference"] = inf.description
    best = _inference_results(result, inf, profile, mixed_name)
    load["inference"] = list(inf.latency.load_average)
    log(
        f"  latency ms {result['infer_latency_ms']}, implicit overhead {result['fused_implicit_overhead']:.3f}"
    )

    # ONNX Runtime fp32 / int8 beside PyTorch eager and the official forward; the host's precision probe
    log("onnx runtime inference")
    result["onnx_inference"] = onnx_group(device, profile, official_repo, log=log)
    if device.type == "cpu":
        result["precision_probe"] = precision_probe()
        log(f"  precision probe {result['precision_probe']['conv3x3_gflops']}")

    # Levers: each one's effect, as a speed-up of having it on --------------------------------------------
    result["levers"] = _lever_results(result, groups, inf, best, mixed_name)
    log(f"  levers {result['levers']}")

    # 5: data pipeline ----------------------------------------------------------------------------------
    log("data pipeline")
    with m.world_dir() as tmp:
        data = m.data_pipeline(demo_cfg, profile, Path(tmp))
    result["data_images_per_s"] = data["images_per_s"]
    result["data_workers"] = int(data["workers"])
    result["data_vs_step_ratio"] = data["images_per_s"] / result["train_step_images_per_s"]["demo"]

    # 6: tracker ----------------------------------------------------------------------------------------
    log("tracker")
    tracker = m.tracker_speed(profile)
    result["tracker_frames"] = int(tracker.pop("frames"))
    result["tracker_fps"] = tracker

    # 7: peak memory ------------------------------------------------------------------------------------
    log("peak memory (fresh processes)")
    result["peak_memory_mb"] = m.peak_memory(device, profile, demo_cfg, torch.get_num_threads())
    result["peak_memory_kind"] = "max_allocated" if device.type == "cuda" else "peak_rss"

    result["raw_seconds"] = {f"train_{n}": g.timings.seconds for n, g in groups.items()} | {
        "infer_latency": inf.latency.seconds,
        "infer_throughput": inf.throughput.seconds,
        "implicit_pair": inf.overhead.seconds,
    }
    result["noise"] = _noise(groups, inf, best, load)
    return result


def _training_results(
    result: dict[str, Any],
    groups: dict[str, m.TrainGroup],
    demo_tasks: list[str],
    paper_tasks: list[str],
    mixed_name: str | None,
) -> None:
    """Training images/s (default, fp32, mixed precision), the speed-up over the official code, the
    multi-task overhead; ``mixed_name`` is ``None`` where the device has no mixed precision."""
    paper, demo = groups["paper"], groups["demo"]
    result["train_step_images_per_s"] = {n: g.batch / g.timings.median("ours") for n, g in groups.items()}
    result["train_step_images_per_s_fp32"] = {
        n: g.batch / g.timings.median("ours_fp32") for n, g in groups.items()
    }
    if mixed_name is not None:
        result[f"train_step_images_per_s_{mixed_name}"] = {
            n: g.batch / g.timings.median("ours_mixed") for n, g in groups.items()
        }
    if "official" in paper.timings.seconds:
        result["train_step_speedup_vs_official"] = _speedup(paper.timings, "official", "ours")
        result["train_step_speedup_vs_official_fp32"] = _speedup(paper.timings, "official", "ours_fp32")
        result["official_train_step_images_per_s"] = paper.batch / paper.timings.median("official")
    result["multitask_overhead"] = {
        "paper": paper.timings.ratio("other_tasks", "ours"),
        "demo": demo.timings.ratio("ours", "other_tasks") if len(demo_tasks) > 1 else 1.0,
    }
    result["multitask_tasks"] = {"paper": paper_tasks, "demo": demo_tasks}


def _flops_results(
    result: dict[str, Any], groups: dict[str, m.TrainGroup], peaks: dict[str, float], mixed_name: str
) -> dict[str, float]:
    """GFLOP per training step and the share of the matrix-product peak each variant reaches."""
    paper = groups["paper"]
    gflop = {n: g.flops["ours"] / 1e9 for n, g in groups.items()}
    result["train_step_gflop"] = dict(gflop)
    utilisation: dict[str, float] = {}
    for n, g in groups.items():
        utilisation[f"{n}_fp32"] = gflop[n] / g.timings.median("ours_fp32") / peaks["fp32"]
        if "ours_mixed" in g.timings.seconds:
            utilisation[f"{n}_{mixed_name}"] = gflop[n] / g.timings.median("ours_mixed") / peaks[mixed_name]
    if "official" in paper.flops:
        result["train_step_gflop"]["official"] = paper.flops["official"] / 1e9
        utilisation["official_fp32"] = (
            paper.flops["official"] / 1e9 / paper.timings.median("official") / peaks["fp32"]
        )
    result["flops_utilization"] = utilisation
    return utilisation


def _inference_results(
    result: dict[str, Any], inf: m.InferenceResult, profile: Profile, mixed_name: str
) -> str:
    """Latency and throughput of every variant, the speed-up over the official code, the fused implicit
    overhead; returns the default variant (fused, in the precision ``auto`` picks)."""
    small, large = profile.infer_batches
    result["infer_latency_ms"] = {
        _label(k, mixed_name): inf.latency.median(k) * 1000
        for k in inf.latency.seconds
        if not k.startswith("lever")
    }
    result["infer_images_per_s"] = {
        _label(k, mixed_name): large / inf.throughput.median(k)
        for k in inf.throughput.seconds
        if not k.startswith("lever")
    }
    best = inf.description["default_variant"]
    if "official" in inf.latency.seconds:
        result["infer_speedup_vs_official"] = _speedup(inf.latency, "official", best)
        result["infer_speedup_vs_official_fp32"] = _speedup(inf.latency, "official", "fused")
        result["infer_throughput_speedup_vs_official"] = _speedup(inf.throughput, "official", best)
    result["fused_implicit_overhead"] = inf.overhead.ratio("implicit_fused", "plain_fused")
    return best


def _lever_results(
    result: dict[str, Any],
    groups: dict[str, m.TrainGroup],
    inf: m.InferenceResult,
    best: str,
    mixed_name: str,
) -> dict[str, float]:
    """Each speed lever's effect as the speed-up of having it on; compile times go to ``result``."""
    levers: dict[str, float] = {}
    for n, g in groups.items():
        t = g.timings
        if "ours_mixed" in t.seconds:
            levers[f"train_{n}_{mixed_name}_autocast"] = t.ratio("ours_fp32", "ours_mixed")
        if "lever_channels_last" in t.seconds:
            on, off = (
                ("ours", "lever_channels_last")
                if g.description["channels_last"]
                else ("lever_channels_last", "ours")
            )
            levers[f"train_{n}_channels_last"] = t.ratio(off, on)
        if "lever_unfused_optimizer" in t.seconds:
            levers[f"train_{n}_fused_optimizer"] = t.ratio("lever_unfused_optimizer", "ours")
        if "lever_compiled" in t.seconds:
            levers[f"train_{n}_torch_compile"] = t.ratio("ours", "lever_compiled")
            result.setdefault("compile_seconds", {})[f"train_{n}"] = g.compile_seconds
    levers["infer_fuse_bn_implicit"] = inf.latency.ratio("unfused", "fused")
    if "fused_mixed" in inf.latency.seconds:
        levers[f"infer_{mixed_name}_autocast"] = inf.latency.ratio("fused", "fused_mixed")
    if "lever_channels_last" in inf.latency.seconds:
        levers["infer_channels_last"] = inf.latency.ratio("lever_channels_last", best)
    if "lever_compiled" in inf.latency.seconds:
        levers["infer_torch_compile"] = inf.latency.ratio(best, "lever_compiled")
        result.setdefault("compile_seconds", {})["infer"] = inf.compile_seconds
    return levers


def _noise(
    groups: dict[str, m.TrainGroup], inf: m.InferenceResult, best: str, load: dict[str, list[float]]
) -> dict[str, Any]:
    """How noisy the machine was: load averages, min-time ratios beside the median ones, spreads."""
    paper, demo = groups["paper"], groups["demo"]
    return {
        "load_average_before_after": load,
        "min_ratio_cross_check": {
            k: v
            for k, v in {
                "train_step_speedup_vs_official": paper.timings.min_ratio("official", "ours")
                if "official" in paper.timings.seconds
                else None,
                "infer_speedup_vs_official": inf.latency.min_ratio("official", best)
                if "official" in inf.latency.seconds
                else None,
                "multitask_overhead_paper": paper.timings.min_ratio("other_tasks", "ours"),
                "multitask_overhead_demo": demo.timings.min_ratio("ours", "other_tasks"),
                "fused_implicit_overhead": inf.overhead.min_ratio("implicit_fused", "plain_fused"),
            }.items()
            if v is not None
        },
        "spread": {f"train_{n}_ours": g.timings.spread("ours") for n, g in groups.items()}
        | {"infer_latency_best": inf.latency.spread(best)},
    }


def _label(variant: str, mixed_name: str) -> str:
    return variant.replace("mixed", mixed_name)


def check_result(result: dict[str, Any]) -> list[str]:
    """Problems with a result: missing keys or non-finite numbers (empty when it is well formed)."""
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in result]

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                problems.append(f"{prefix} is not finite ({value})")

    for key in (*REQUIRED_KEYS, *OFFICIAL_KEYS, "levers", "onnx_inference", "precision_probe"):
        if key in result:
            walk(key, result[key])
    return problems


# --------------------------------------------------------------------------------------------- report
def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def markdown_table(result: dict[str, Any]) -> str:
    """The headline table (measurement, value, goal) and the levers table."""
    r = result
    wl = r["workloads"]
    p, inf = wl["paper"], wl["inference"]
    rows: list[tuple[str, str, str]] = []
    ips = r["train_step_images_per_s"]
    other = {
        k: r[k] for k in r if k.startswith("train_step_images_per_s_") and k != "train_step_images_per_s"
    }
    for role, digits in (("paper", 2), ("demo", 1)):
        spec = wl[role]
        alternatives = ", ".join(
            f"{k.rsplit('_', 1)[-1]}: {v[role]:.{digits}f}"
            for k, v in other.items()
            if k.rsplit("_", 1)[-1] != spec["precision"]
        )
        rows.append(
            (
                f"Training step{', demo' if role == 'demo' else ''} {spec['model']} {spec['img_size']}², "
                f"batch {spec['batch']}, {'+'.join(spec['tasks'])} (default precision: {spec['precision']})",
                f"{ips[role]:.{digits}f} img/s" + (f" ({alternatives})" if alternatives else ""),
                "",
            )
        )
    if "train_step_speedup_vs_official" in r:
        rows.append(
            (
                f"Training step speed-up vs official ({p['model']}, same inputs; official fp32: "
                f"{r['official_train_step_images_per_s']:.2f} img/s)",
                f"{r['train_step_speedup_vs_official']:.2f}× (fp32 vs fp32: {r['train_step_speedup_vs_official_fp32']:.2f}×)",
                "≥ 1.3×",
            )
        )
    lat = r["infer_latency_ms"]
    small, large = inf["batches"]
    rows.append(
        (
            f"Inference latency, {inf['model']} {inf['img_size']}², batch {small}",
            ", ".join(f"{k} {v:.0f} ms" for k, v in lat.items()),
            "",
        )
    )
    rows.append(
        (
            f"Inference throughput, batch {large}",
            ", ".join(f"{k} {v:.2f} img/s" for k, v in r["infer_images_per_s"].items()),
            "",
        )
    )
    if "infer_speedup_vs_official" in r:
        rows.append(
            (
                f"Inference speed-up vs official eval forward (both fused, batch {small}; ours in {inf['default_precision']})",
                f"{r['infer_speedup_vs_official']:.2f}× (fp32 vs fp32: {r['infer_speedup_vs_official_fp32']:.2f}×; "
                f"batch {large}: {r['infer_throughput_speedup_vs_official']:.2f}×)",
                "≥ 1.3×",
            )
        )
    rows += onnx_table_rows(r)
    a, b = inf["implicit_pair"]
    rows.append(
        (
            f"Fused implicit overhead ({a} fused ÷ {b} fused, batch {small}, fp32)",
            f"{r['fused_implicit_overhead']:.3f} (same convolutions once fused: "
            f"{'yes' if inf.get('implicit_pair_same_convolutions') else 'no'})",
            "≤ 1.01",
        )
    )
    mt, tasks = r["multitask_overhead"], r["multitask_tasks"]
    rows.append(
        (
            "Multi-task overhead (training step ÷ detect alone)",
            f"demo ({'+'.join(tasks['demo'])}) {mt['demo']:.3f}, "
            f"{p['model']} ({'+'.join(tasks['paper'])}) {mt['paper']:.3f}",
            "demo ≤ 1.15, all tasks ≤ 1.3",
        )
    )
    u = r["flops_utilization"]
    parts = [f"{k} {v:.2f}" for k, v in u.items()]
    mm = r["matmul_gflops"]
    rows.append(
        (
            "FLOP utilisation (step GFLOP/s ÷ matmul GFLOP/s; matmul "
            + ", ".join(f"{k} {v:.0f}" for k, v in mm.items())
            + " GFLOP/s)",
            ", ".join(parts),
            "fp32 ≥ official",
        )
    )
    rows.append(
        (
            f"Data pipeline ÷ demo step ({r['data_workers']} workers, full augmentation)",
            f"{r['data_vs_step_ratio']:.2f} ({r['data_images_per_s']:.1f} vs {ips['demo']:.1f} img/s)",
            "> 1",
        )
    )
    rows.append(
        (
            f"Tracker, TUD-Stadtmitte detections ({r['tracker_frames']} frames)",
            ", ".join(f"{k} {v:.0f} fps" for k, v in r["tracker_fps"].items()),
            "",
        )
    )
    pm = r["peak_memory_mb"]
    rows.append(
        (
            f"Peak memory of the training step ({r['peak_memory_kind']})",
            f"demo {pm['demo']:.0f} MiB, {p['model']} batch {p['batch']} {pm['paper']:.0f} MiB",
            "",
        )
    )
    lines = ["| measurement | value | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "| lever | speed-up when on |", "|---|---|"]
    lines += [f"| {k} | {v:.2f}× |" for k, v in r["levers"].items()]
    return "\n".join(lines)


__all__ = [
    "OFFICIAL_KEYS",
    "REQUIRED_KEYS",
    "check_result",
    "machine_info",
    "markdown_table",
    "run_benchmark",
]
