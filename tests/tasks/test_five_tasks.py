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
