"""The seven measurements of the benchmark (see ``docs/PERFORMANCE.md``), each returning plain numbers.

Every ratio compares variants timed in the same interleaved loop (:func:`unified.benchmark.timing.interleaved`).
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from unified.benchmark import workloads as w
from unified.benchmark.memory import measure_in_subprocesses
from unified.benchmark.official import load_official, official_inference, official_train_step
from unified.benchmark.profiles import Profile
from unified.benchmark.timing import Timings, interleaved
from unified.benchmark.tracking import (
    detections_from_ground_truth,
    motmetrics_sequence,
    run_ours,
    run_supervision,
    supervision_available,
)
from unified.engine.trainer import cpu_supports_bf16, resolve_precision

DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


def mixed_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype the hardware supports, whether or not ``precision: auto`` picks it:
    fp16 on CUDA, bf16 on CPUs with bf16 instructions, ``None`` otherwise."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def _foreach_optimizer(workload: w.TrainWorkload) -> w.TrainWorkload:
    """The same optimiser with the default per-tensor update instead of the fused kernel (a lever row)."""
    old = workload.trainer.optimizer
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in old.param_groups]
    workload.trainer.optimizer = type(old)(groups, foreach=None, fused=False)
    return workload


@dataclasses.dataclass
class TrainGroup:
    """The timed training variants of one workload and what they measured."""

    name: str
    cfg: Any
    timings: Timings
    batch: int
    flops: dict[str, int]
    description: dict[str, Any]
    compile_seconds: float | None = None


def _first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of the first call (where ``torch.compile`` compiles): one timed call, no warm-up."""
    return interleaved({"first": fn}, 1, 0, device).seconds["first"][0]


def train_group(
    name: str,
    base_cfg: Any,
    info: Any,
    device: torch.device,
    profile: Profile,
    multitask: tuple[list[str], list[str]],
    official_repo: Path | None = None,
) -> TrainGroup:
    """Time our default step, fp32, single vs multi-task, levers and (optionally) the official step.

    Args:
        name: ``paper`` or ``demo``.
        base_cfg: The experiment config of the workload's default variant (``ours``).
        multitask: (tasks of ``ours``, tasks of the comparison variant ``other_tasks``); the ratio
            all-tasks / detect-only is taken between whichever is which.
        official_repo: Also time the official step on the same batch.
    """
    ours_tasks, other_tasks = multitask
    variants: dict[str, w.TrainWorkload] = {}
    variants["ours"] = w.build_train_workload(w.experiment(base_cfg, tasks=ours_tasks), info, device)
    default = variants["ours"].autocast_dtype
    mixed = mixed_dtype(device)
    # Variants equal to the default are not built twice: their timings are the default's.
    aliases = {}
    if default is None:
        aliases["ours_fp32"] = "ours"
    else:
        variants["ours_fp32"] = w.build_train_workload(
            w.experiment(base_cfg, tasks=ours_tasks, precision="fp32"), info, device
        )
    if mixed is not None and mixed == default:
        aliases["ours_mixed"] = "ours"
    elif mixed is not None:
        variants["ours_mixed"] = w.build_train_workload(
            w.experiment(base_cfg, tasks=ours_tasks, precision=DTYPE_NAMES[mixed]), info, device
        )
    variants["other_tasks"] = w.build_train_workload(w.experiment(base_cfg, tasks=other_tasks), info, device)
    if profile.levers:
        variants["lever_channels_last"] = w.build_train_workload(
            w.experiment(base_cfg, tasks=ours_tasks, channels_last=not base_cfg.train.channels_last),
            info,
            device,
        )
        variants["lever_unfused_optimizer"] = _foreach_optimizer(
            w.build_train_workload(w.experiment(base_cfg, tasks=ours_tasks), info, device)
        )
    compile_seconds = None
    if profile.compile:
        compiled = w.build_train_workload(w.experiment(base_cfg, tasks=ours_tasks), info, device)
        compiled.trainer.model.compile()  # in place: the trainer, optimiser and state_dict keys are unchanged
        compile_seconds = _first_call_seconds(compiled.step, device)
        variants["lever_compiled"] = compiled
    fns: dict[str, Callable[[], object]] = {k: v.step for k, v in variants.items()}
    official = None
    if official_repo is not None:
        official = official_train_step(load_official(official_repo), variants["ours"].batch, device)
        fns["official"] = official.step
    timings = interleaved(fns, profile.train_repeats, profile.train_warmup, device)
    for alias, target in aliases.items():
        timings.seconds[alias] = timings.seconds[target]
    flops = {
        "ours": variants["ours"].training_flops(),
        "other_tasks": variants["other_tasks"].training_flops(),
    }
    if official is not None:
        flops["official"] = official.training_flops()
    ours = variants["ours"]
    description = {
        "model": Path(str(base_cfg.model)).stem if isinstance(base_cfg.model, str) else "custom",
        "img_size": base_cfg.train.img_size,
        "batch": base_cfg.train.batch_size,
        "tasks": ours_tasks,
        "precision": DTYPE_NAMES[ours.autocast_dtype],
        "mixed": DTYPE_NAMES[mixed] if mixed is not None else None,
        "channels_last": bool(base_cfg.train.channels_last),
    }
    del variants, official, fns
    gc.collect()
    return TrainGroup(name, base_cfg, timings, ours.batch_size, flops, description, compile_seconds)


def matmul_gflops(dtype: torch.dtype, size: int, device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of a ``size``² matrix product in ``dtype`` on the current threads (2·n³ FLOPs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    timings = interleaved({"mm": lambda: torch.mm(a, b)}, repeats, 2, device)
    return 2 * size**3 / timings.median("mm") / 1e9


@dataclasses.dataclass
class InferenceResult:
    latency: Timings
    throughput: Timings
    overhead: Timings
    description: dict[str, Any]
    compile_seconds: float | None = None


def inference_group(
    device: torch.device, profile: Profile, official_repo: Path | None = None
) -> InferenceResult:
    """Latency (batch 1) and throughput (large batch): unfused, fused, fused mixed precision, official;
    then the fused implicit model against the same network without implicit knowledge."""
    mixed = mixed_dtype(device)
    default = resolve_precision("auto", device)
    size = profile.infer_size
    reference = w.build_model_for_inference(profile.infer_model)

    def variants(batch: int, latency: bool) -> dict[str, Callable[[], object]]:
        # Every variant but the lever runs channels-last, as the inference tools do (UnifiedModel.for_inference).
        out = {
            "unfused": w.build_inference(
                profile.infer_model, device, batch=batch, size=size, fused=False, model=reference
            ),
            "fused": w.build_inference(
                profile.infer_model, device, batch=batch, size=size, fused=True, model=reference
            ),
        }
        if mixed is not None:
            out["fused_mixed"] = w.build_inference(
                profile.infer_model, device, batch=batch, size=size, fused=True, dtype=mixed, model=reference
            )
        if latency and profile.levers:
            out["lever_channels_last"] = w.build_inference(
                profile.infer_model,
                device,
                batch=batch,
                size=size,
                fused=True,
                dtype=default,
                channels_last=False,
                model=reference,
            )
        fns: dict[str, Callable[[], object]] = {k: v.forward for k, v in out.items()}
        if latency and profile.compile:
            fns["lever_compiled"] = w.compiled_inference(
                out["fused"] if default is None else out["fused_mixed"]
            )
        if official_repo is not None:
            fns["official"] = official_inference(load_official(official_repo), device, batch=batch, size=size)
        return fns

    small, large = profile.infer_batches
    latency_fns = variants(small, True)
    compile_seconds = None
    if "lever_compiled" in latency_fns:
        compile_seconds = _first_call_seconds(latency_fns["lever_compiled"], device)
    latency = interleaved(latency_fns, profile.latency_repeats, 1, device)
    gc.collect()
    throughput = interleaved(variants(large, False), profile.throughput_repeats, 1, device)
    gc.collect()

    with_implicit, without = profile.implicit_pair
    no_implicit_options = {"detect": {"implicit": False}} if with_implicit == without else None
    implicit_model = w.build_inference(with_implicit, device, batch=small, size=size, fused=True)
    plain_model = w.build_inference(
        without, device, batch=small, size=size, fused=True, task_options=no_implicit_options
    )
    pair = {"implicit_fused": implicit_model.forward, "plain_fused": plain_model.forward}
    overhead = interleaved(pair, profile.overhead_repeats, 3, device)
    description = {
        "model": Path(profile.infer_model).stem,
        "img_size": size,
        "batches": [small, large],
        "mixed": DTYPE_NAMES[mixed],
        "default_precision": DTYPE_NAMES[default],
        "default_variant": "fused" if default is None else "fused_mixed",
        "channels_last": True,
        "implicit_pair": [Path(with_implicit).stem, Path(without).stem],
        "implicit_pair_same_convolutions": same_convolutions(implicit_model.model, plain_model.model),
    }
    return InferenceResult(latency, throughput, overhead, description, compile_seconds)


def same_convolutions(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two (fused) models run the same convolutions in the same order and nothing else with
    parameters: what makes the fused implicit overhead exactly one, whatever the timer says."""
    from unified.implicit import ImplicitOp

    def signature(model: torch.nn.Module) -> list[tuple]:
        return [
            (type(m), tuple(m.weight.shape), m.stride, m.padding, m.groups, m.bias is not None)
            for m in model.modules()
            if isinstance(m, torch.nn.Conv2d)
        ]

    leftover = any(isinstance(m, (ImplicitOp, torch.nn.BatchNorm2d)) for n in (a, b) for m in n.modules())
    return not leftover and signature(a) == signature(b)


def data_pipeline(demo_cfg: Any, profile: Profile, workdir: Path) -> dict[str, float]:
    """Images/s of the demo's full training augmentation with its workers, on a tiny synthetic world."""
    from unified.data import MultiTaskDataset, build_dataloader, load_dataset_yaml
    from unified.data.synthetic import make_synthetic

    world = make_synthetic(workdir / "world", seed=0, **profile.world)
    records, info = load_dataset_yaml(str(world), "train")
    size = profile.demo_size or demo_cfg.train.img_size
    batch = profile.demo_batch or demo_cfg.train.batch_size
    dataset = MultiTaskDataset(
        records,
        size,
        True,
        demo_cfg.augment,
        info=info,
        cache_images=getattr(demo_cfg.train, "cache_images", False),
    )
    loader = build_dataloader(dataset, batch, shuffle=True, num_workers=demo_cfg.train.workers, seed=0)
    import time

    images = 0
    start = 0.0
    iterator = iter(loader)
    needed = profile.data_batches + 1
    count = 0
    while count < needed:
        try:
            got = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        count += 1
        if count == 1:
            start = time.perf_counter()  # the first batch pays for worker start-up
            continue
        images += int(got["images"].shape[0])
    elapsed = time.perf_counter() - start
    del iterator, loader
    gc.collect()
    return {
        "images_per_s": images / elapsed,
        "workers": float(demo_cfg.train.workers),
        "batch": float(batch),
        "img_size": float(size),
    }


def tracker_speed(profile: Profile) -> dict[str, float]:
    """Frames/s of our tracker and of supervision's ByteTrack on the same TUD-Stadtmitte detections."""
    frames = detections_from_ground_truth(motmetrics_sequence())
    fns: dict[str, Callable[[], object]] = {"ours": lambda: run_ours(frames)}
    if supervision_available():
        fns["supervision_bytetrack"] = lambda: run_supervision(frames)
    timings = interleaved(fns, profile.tracker_repeats, 1)
    out = {name: len(frames) / timings.median(name) for name in fns}
    out["frames"] = float(len(frames))
    return out


def peak_memory(device: torch.device, profile: Profile, demo_cfg: Any, threads: int) -> dict[str, float]:
    """Peak memory (MiB) of the demo step and of the paper step, each in a fresh process."""
    demo_spec = {
        "name": "demo",
        "base": "demo",
        "batch": profile.demo_batch or demo_cfg.train.batch_size,
        "size": profile.demo_size or demo_cfg.train.img_size,
    }
    paper_spec = {
        "name": "paper",
        "base": "default",
        "model": str(profile.paper_model),
        "batch": profile.paper_batch,
        "size": profile.paper_size,
    }
    specs = [demo_spec, paper_spec]
    for spec in specs:
        spec.update(device=str(device), steps=profile.memory_steps, threads=threads)
    # Side by side on CPU (peak RSS is per process); one after the other on a GPU (one device's memory).
    if device.type == "cuda":
        found = [measure_in_subprocesses([spec])[0] for spec in specs]
    else:
        found = measure_in_subprocesses(specs)
    return {spec["name"]: r["peak_mb"] for spec, r in zip(specs, found)}


def world_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="unified-bench-")


__all__ = [
    "InferenceResult",
    "TrainGroup",
    "data_pipeline",
    "inference_group",
    "matmul_gflops",
    "mixed_dtype",
    "peak_memory",
    "tracker_speed",
    "train_group",
]
