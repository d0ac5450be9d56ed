"""Sizes and repeat counts of a benchmark run: ``full`` (the published table), ``quick``, ``tiny`` (tests)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from unified.benchmark.workloads import MODELS, PAPER_MODEL


@dataclass(frozen=True)
class Profile:
    """Everything that sets how big and how long a benchmark run is.

    Attributes:
        name: ``full``, ``quick`` or ``tiny``.
        paper_model: Model of the paper protocol (``yolor-p6-paper``: 320², batch 4, 5 boxes per image).
        paper_size: Its training image size.
        paper_batch: Its training batch.
        demo_size: Demo image size; ``0``: the demo experiment's own.
        demo_batch: Demo batch; ``0``: the demo experiment's own.
        infer_model: Model of the inference rows.
        infer_size: Inference image size.
        infer_batches: (latency batch, throughput batch).
        implicit_pair: (model with implicit knowledge, the same network without) for the fused overhead.
        train_repeats: Timed training steps per variant (interleaved); ``train_warmup`` untimed first.
        latency_repeats: Timed batch-1 forwards per variant.
        throughput_repeats: Timed large-batch forwards per variant.
        overhead_repeats: Timed forwards per model of the implicit pair.
        matmul_size: Side of the square matrices of the peak-GFLOP/s reference.
        data_batches: Loader batches timed (after the first, which pays for worker start-up).
        world: Arguments of ``make_synthetic`` for the data-pipeline world.
        tracker_repeats: Passes over the tracking sequence per tracker.
        memory_steps: Training steps run before reading the peak memory.
        levers: Also time the variants that show each speed lever's effect.
        compile: Also time ``torch.compile`` variants (minutes of compilation on a small CPU).
    """

    name: str = "full"
    paper_model: Path = PAPER_MODEL
    paper_size: int = 320
    paper_batch: int = 4
    demo_size: int = 0
    demo_batch: int = 0
    infer_model: Path = PAPER_MODEL
    infer_size: int = 640
    infer_batches: tuple[int, int] = (1, 8)
    implicit_pair: tuple[Path, Path] = (MODELS / "yolor-csp.yaml", MODELS / "yolov4-csp.yaml")
    train_repeats: int = 8
    train_warmup: int = 1
    latency_repeats: int = 9
    throughput_repeats: int = 2
    overhead_repeats: int = 21
    matmul_size: int = 2048
    data_batches: int = 8
    world: dict[str, int] = field(
        default_factory=lambda: {
            "images": 48,
            "val_images": 4,
            "sequences": 2,
            "val_sequences": 1,
            "frames": 16,
            "size": 256,
        }
    )
    tracker_repeats: int = 5
    memory_steps: int = 2
    levers: bool = True
    compile: bool = False


FULL = Profile()
QUICK = replace(
    FULL,
    name="quick",
    train_repeats=3,
    train_warmup=1,
    latency_repeats=3,
    throughput_repeats=1,
    overhead_repeats=5,
    data_batches=4,
    tracker_repeats=2,
    memory_steps=1,
    levers=False,
)
TINY = replace(
    FULL,
    name="tiny",
    paper_model=MODELS / "yolor-tiny.yaml",
    paper_size=64,
    paper_batch=2,
    demo_size=64,
    demo_batch=2,
    infer_model=MODELS / "yolor-tiny.yaml",
    infer_size=64,
    infer_batches=(1, 2),
    implicit_pair=(MODELS / "yolor-tiny.yaml", MODELS / "yolor-tiny.yaml"),
    train_repeats=1,
    train_warmup=1,
    latency_repeats=1,
    throughput_repeats=1,
    overhead_repeats=1,
    matmul_size=128,
    data_batches=1,
    world={"images": 8, "val_images": 2, "sequences": 1, "val_sequences": 1, "frames": 4, "size": 64},
    tracker_repeats=1,
    memory_steps=1,
    levers=True,
)
PROFILES = {p.name: p for p in (FULL, QUICK, TINY)}

__all__ = ["FULL", "PROFILES", "Profile", "QUICK", "TINY"]
