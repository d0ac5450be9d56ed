"""All five built-in tasks train together in one network through the CLI, on the synthetic world's
``dataset-all.yaml`` (stills with boxes, image labels, masks and keypoints; videos with identities)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, TINY_MODEL

TASKS = ("detect", "jdc", "jde", "segment", "pose")


@pytest.mark.slow
def test_detect_jdc_jde_segment_and_pose_train_together_through_the_cli(tmp_path, tiny_world):
    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(TINY_MODEL))
    result = subprocess.run(
        [
            sys.executable, "tools/train_multitask.py", "--data", str(tiny_world.parent / "dataset-all.yaml"),
            "--model", str(model_path), "--tasks", ",".join(TASKS), "--epochs", "2", "--batch-size", "4",
            "--img", "96", "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"),
            "--name", "five", "--no-progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "five" / "metrics.json").read_text())
    assert set(metrics) == set(TASKS)
    assert set(metrics["segment"]) == {"AP", "AP50", "AP75"} and set(metrics["pose"]) == {"AP", "AP50"}
    results = (tmp_path / "runs" / "five" / "results.csv").read_text().splitlines()
    assert len(results) == 3 and "loss/segment/mask" in results[0] and "loss/pose/oks" in results[0]


@pytest.mark.slow
def test_the_five_tasks_train_under_torchrun_with_two_cpu_ranks(tmp_path, tiny_world):
    """Two gloo ranks: every head's parameters get gradients on every step (a task whose images a rank
    lacks still returns terms connected to its head), so DDP's reduction never waits forever."""
    import os

    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(TINY_MODEL))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("UNIFIED_TEST_FAULT", None)
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "tools/train_multitask.py", "--data", str(tiny_world.parent / "dataset-all.yaml"),
            "--model", str(model_path), "--tasks", ",".join(TASKS), "--epochs", "1", "--batch-size", "4",
            "--img", "96", "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"),
            "--name", "ddp", "--no-progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    # One run folder: only rank 0 writes (two ranks each acting alone would number a second folder).
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == ["ddp"]
    metrics = json.loads((tmp_path / "runs" / "ddp" / "metrics.json").read_text())
    assert set(metrics) == set(TASKS)
    assert set(metrics["segment"]) == {"AP", "AP50", "AP75"} and set(metrics["pose"]) == {"AP", "AP50"}
