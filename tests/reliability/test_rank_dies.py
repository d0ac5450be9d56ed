"""A rank dies: under ``torchrun --max-restarts 1`` the group restarts, reuses its run folder and resumes
from the last checkpoint with no manual step."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.reliability.helpers import cli_env, train_overrides
from unified.checkpoint import load_safe


@pytest.mark.slow
def test_a_killed_rank_restarts_the_group_which_resumes_in_the_same_folder(tmp_path, small_world, model_yaml):
    project = tmp_path / "runs"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--max-restarts", "1", "--monitor-interval", "0.5", "tools/train_multitask.py", "--no-progress",
        *train_overrides(model_yaml, small_world, project, "ddp", **{"train.epochs": 2}),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO,
        env=cli_env(UNIFIED_TEST_FAULT="kill_rank=1.1"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "elastic restart 1: resuming" in log, "the group did not restart and resume: " + log[-4000:]
    assert sorted(p.name for p in project.iterdir() if not p.name.startswith(".")) == ["ddp"], (
        "a new run folder"
    )
    run = project / "ddp"
    assert load_safe(run / "weights" / "last.pt")["epoch"] == 2
    with (run / "results.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [1, 2], f"epochs logged {epochs}: the restart must resume after epoch 1, not start over"
