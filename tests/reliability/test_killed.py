"""Killed at any moment: SIGKILL mid-step, mid-evaluation, mid-checkpoint-write or at a random instant,
then ``--resume``, ends with exactly the weights of an uninterrupted run (deterministic CPU, fp32).

Checkpoints are written once per epoch, so a resumed run repeats the epoch that was cut short.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.reliability.helpers import alive, children_of, log_text, run_cli, start_cli, train_overrides
from tests.tools.helpers import load_tool
from unified.checkpoint import CheckpointError, load_safe
from unified.engine.experiment import load_experiment
from unified.engine.launch import run_training

KILLED = -signal.SIGKILL
SEED = int(os.environ.get("RELIABILITY_SEED", "20261127"))


def assert_same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Bitwise equality of two checkpoint trees (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_final_state(reference_dir: Path, resumed_dir: Path) -> None:
    a = load_safe(reference_dir / "weights" / "last.pt")
    b = load_safe(resumed_dir / "weights" / "last.pt")
    for ckpt in (a, b):
        ckpt["experiment"].pop("name")
    assert a["epoch"] == b["epoch"] == a["experiment"]["train"]["epochs"]
    assert_same(a, b)


def epochs_done(run_dir: Path) -> int:
    return int(load_safe(run_dir / "weights" / "last.pt")["epoch"])


@pytest.mark.slow
def test_sigkill_mid_step_mid_write_mid_eval_then_resume_is_bitwise_identical(
    tmp_path, small_world, model_yaml
):
    rng = random.Random(SEED)
    project = tmp_path / "runs"
    reference, _ = run_training(
        load_experiment(None, train_overrides(model_yaml, small_world, project, "reference")), progress=False
    )
    run = project / "killed"
    args = train_overrides(model_yaml, small_world, project, "killed")

    # 1. Mid-step (after backward, before the optimiser step) at a random iteration of the second epoch.
    iteration = rng.randrange(3)
    rc = run_cli(args, tmp_path / "a.log", UNIFIED_TEST_FAULT=f"kill_step=1.{iteration}")
    assert rc == KILLED, log_text(tmp_path / "a.log")
    assert epochs_done(run) == 1
    # 2. Resume; killed half-way through writing last.pt after the (repeated) second epoch.
    rc = run_cli(["--resume", str(run)], tmp_path / "b.log", UNIFIED_TEST_FAULT="kill_write=last.pt.1")
    assert rc == KILLED, log_text(tmp_path / "b.log")
    assert "from epoch 2" in log_text(tmp_path / "b.log")
    partial = list((run / "weights").glob(".last.pt.*.tmp"))
    assert len(partial) == 1, "the fault did not interrupt a checkpoint write"
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_safe(partial[0])
    assert epochs_done(run) == 1, "last.pt must still be the complete previous checkpoint"
    assert load_safe(run / "weights" / "best.pt")["epoch"] in (1, 2)
    # 3. Resume; killed during the evaluation after the third epoch.
    rc = run_cli(["--resume", str(run)], tmp_path / "c.log", UNIFIED_TEST_FAULT="kill_eval=2")
    assert rc == KILLED, log_text(tmp_path / "c.log")
    assert epochs_done(run) == 2
    assert not list((run / "weights").glob(".*.tmp")), "the stale temporary file was not removed"
    # 4. Resume to the end (in this process: the CLI's main, as `python tools/train_multitask.py`).
    assert load_tool("train_multitask").main(["--resume", str(run), "--no-progress"]) == 0
    assert_same_final_state(reference, run)


@pytest.mark.slow
def test_sigkill_at_a_random_instant_with_a_loader_worker(tmp_path, small_world, model_yaml):
    rng = random.Random(SEED + 1)
    project = tmp_path / "runs"
    extra = {"train.workers": 1, "train.epochs": 4}
    reference, _ = run_training(
        load_experiment(None, train_overrides(model_yaml, small_world, project, "reference", **extra)),
        progress=False,
    )
    run = project / "killed"
    process = start_cli(
        train_overrides(model_yaml, small_world, project, "killed", **extra), tmp_path / "a.log"
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "weights" / "last.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the second epoch: a step, evaluation or a write
        while not children_of(process.pid) and process.poll() is None:
            time.sleep(0.005)  # between two loaders: wait until a worker runs, to check its clean-up too
        assert process.poll() is None, "the run ended before it could be killed: " + log_text(
            tmp_path / "a.log"
        )
        orphans = children_of(process.pid)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == KILLED
    finally:
        if process.poll() is None:
            process.kill()
    # The DataLoader worker notices that its parent died and exits by itself.
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in orphans):
        assert time.monotonic() < deadline, f"loader workers {orphans} outlived the killed run"
        time.sleep(0.1)
    done = epochs_done(run)
    assert 1 <= done < 4
    assert load_tool("train_multitask").main(["--resume", str(run), "--no-progress"]) == 0
    assert_same_final_state(reference, run)
