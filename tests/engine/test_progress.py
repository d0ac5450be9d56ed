"""Progress a person can read: the per-epoch line (printed and in train.log), and what ``--resume`` does
with a finished run and with the flags and overrides given with it."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_MODEL
from unified.checkpoint import load_safe
from unified.commands.train import parse_args
from unified.config import ConfigError
from unified.engine.experiment import OptimConfig
from unified.engine.launch import experiment_from_checkpoint, resume_experiment, run_training
from unified.engine.optim import Schedule
from unified.engine.progress import format_duration, loss_text, metrics_text

EPOCHS = 2


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/train_multitask.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_world) -> tuple[Path, str]:
    """A finished two-epoch detect + jdc run through the command line with --no-progress, and its stdout."""
    root = tmp_path_factory.mktemp("progress")
    model = root / "model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    result = _train(
        "--data", str(tiny_world), "--model", str(model), "--tasks", "detect,jdc", "--epochs", str(EPOCHS),
        "--batch-size", "8", "--img", "64", "--workers", "0", "--device", "cpu", "--project", str(root / "runs"),
        "--name", "run", "--no-progress", "optim.warmup_epochs=0", "train.precision=fp32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "run", result.stdout


def _copy(run: Path, tmp_path: Path) -> Path:
    """The run in a folder of its own (a resume writes into it); a resume reads the config's paths."""
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    return copy


def test_every_epoch_prints_one_line_without_the_bar_and_writes_it_to_train_log(finished_run):
    run, stdout = finished_run
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], stdout
    first, last = lines
    assert "loss detect " in first and " jdc " in first, first
    assert "val detect AP50 " in first and "AP50-95 " in first and "jdc mAP " in first, first
    assert ", ETA " in first and "run took" in last, lines
    log = (run / "train.log").read_text().splitlines()
    assert "started at epoch 1 of 2" in log[0] and "ended after epoch 2 of 2" in log[-1], log
    assert log[1:3] == lines


def test_resuming_a_finished_run_says_so_and_trains_nothing(finished_run, tmp_path):
    run = _copy(finished_run[0], tmp_path)
    before = load_safe(run / "weights" / "last.pt")["epoch"]
    result = _train("--resume", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{run} has finished: it trained all {EPOCHS} epochs" in result.stdout, result.stdout
    assert "--epochs N" in result.stdout and "epoch 3" not in result.stdout
    assert load_safe(run / "weights" / "last.pt")["epoch"] == before


def test_resume_with_more_epochs_extends_the_run_at_its_final_learning_rate(finished_run, tmp_path, capsys):
    run = _copy(finished_run[0], tmp_path)
    args = parse_args(["--resume", str(run), "--epochs", "3", "--workers", "0"])
    cfg = resume_experiment(run / "weights" / "last.pt", args, args.overrides)
    assert cfg.train.epochs == 3
    run_training(cfg, resume_from=run / "weights" / "last.pt", progress=False)
    assert load_safe(run / "weights" / "last.pt")["epoch"] == 3
    out = capsys.readouterr().out
    assert "from epoch 3 the learning rate stays at" in out, out
    with (run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    optim = cfg.optim
    # The finished schedule had decayed to lrf * lr0: the added epoch trains there, with no jump back up.
    assert float(rows[2]["lr"]) == pytest.approx(optim.lr0 * optim.lrf)
    log = (run / "train.log").read_text()
    assert "resumed at epoch 3 of 3" in log and "epoch 3/3  loss detect" in log, log


def test_resume_refuses_every_other_flag_and_override_naming_it(finished_run):
    checkpoint = finished_run[0] / "weights" / "last.pt"
    args = parse_args(["--resume", str(finished_run[0]), "--img", "128", "--epochs", "4", "train.seed=3"])
    with pytest.raises(ConfigError) as caught:
        resume_experiment(checkpoint, args, args.overrides)
    message = str(caught.value)
    assert "--img 128" in message and "train.seed=3" in message and "--epochs" not in message.split("(")[0]
    assert "\n" not in message
    args = parse_args(["--resume", str(finished_run[0]), "--device", "cpu", "train.workers=0"])
    assert resume_experiment(checkpoint, args, args.overrides).train.workers == 0


def test_resume_with_no_more_epochs_than_done_is_an_error(finished_run, tmp_path):
    run = _copy(finished_run[0], tmp_path)
    cfg = experiment_from_checkpoint(run / "weights" / "last.pt")
    shorter = resume_experiment(run / "weights" / "last.pt", overrides=["train.epochs=1"])
    assert shorter.train.epochs == 1 and cfg.train.epochs == EPOCHS
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        run_training(shorter, resume_from=run / "weights" / "last.pt", progress=False)


def test_an_extended_schedule_goes_on_from_its_rate_without_a_jump():
    optim = OptimConfig(lr0=0.01, lrf=0.2, warmup_epochs=0)
    finished = Schedule(optim, 10, 64)
    at_end = finished.lr_factor(10)
    finished.extend(20, 10)
    assert finished.epochs == 20
    assert [finished.lr_factor(e) for e in (10, 15, 20)] == pytest.approx([at_end] * 3)
    stopped = Schedule(optim, 10, 64)
    at_four = stopped.lr_factor(4)
    stopped.extend(30, 4)
    factors = [stopped.lr_factor(e) for e in range(4, 31)]
    assert factors[0] == pytest.approx(at_four) and factors[-1] == pytest.approx(optim.lrf)
    assert all(a >= b for a, b in zip(factors, factors[1:]))  # decays all the way, never back up
    again = Schedule(optim, 30, 64)
    again.load_state_dict(stopped.state_dict())
    assert again.lr_factor(17) == stopped.lr_factor(17)


def test_the_line_reads_the_task_names_from_the_losses_and_metrics():
    means = {"detect/box": 1.0, "detect/total": 2.5, "pets/total": 0.25, "total": 2.75, "weight/pets": 1.0}
    assert loss_text(means) == "loss detect 2.500 pets 0.250"
    metrics = {"detect": {"AP": 0.25, "AP50": 0.5, "AR1": 0.1}, "pets": {"AP/cat": 0.3, "MAE": 1.5, "n": 7.0}}
    text = metrics_text(metrics, {"detect": ("AP50", "AP")})
    assert text == "val detect AP50 0.500 AP50-95 0.250, pets MAE 1.500 n 7"
    assert [format_duration(s) for s in (5, 150, 7200)] == ["5.0 s", "2.5 min", "2.0 h"]
    assert math.isnan(float(metrics_text({"x": {"m": float("nan")}}, {}).split()[-1]))
