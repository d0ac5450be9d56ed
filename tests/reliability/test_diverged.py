"""Diverged weights are never saved as a success: an infinite learning rate is a config error, and weights
that turn NaN/Inf stop the run with exit 1 before that epoch is evaluated or saved, the last finite
checkpoint intact."""

from __future__ import annotations

import pytest
import torch

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.checkpoint import load_safe
from unified.engine import launch
from unified.engine.hooks import Hook


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("lr0", [".inf", "1.0e+999"])
def test_an_infinite_learning_rate_is_refused_before_any_run_folder(
    tmp_path, capsys, small_world, model_yaml, lr0
):
    """It used to turn the weights into NaN at the first step and end with exit 0, NaN in last.pt, best.pt
    and the EMA."""
    project = tmp_path / "runs"
    args = train_overrides(model_yaml, small_world, project, "run", **{"plugins": "[]", "optim.lr0": lr0})
    code = load_tool("train_multitask").main(["--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and "key 'optim.lr0': expected a finite number" in err and "Traceback" not in err, err
    assert not project.exists()


class PoisonWeights(Hook):
    """After the first optimiser step of ``epoch``, a body weight becomes NaN (as a huge step makes it)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_step(self, trainer) -> None:
        s = trainer.state
        if s.epoch == self.epoch and s.epoch_iteration == 0:
            with torch.no_grad():
                next(trainer.model.body.parameters()).fill_(float("nan"))


@pytest.mark.filterwarnings("ignore:epoch .* non-finite loss")
@pytest.mark.parametrize("epoch", [0, 1])
def test_weights_that_turn_non_finite_stop_the_run_and_no_checkpoint_holds_them(
    tmp_path, capsys, monkeypatch, small_world, model_yaml, epoch
):
    """The steps after the poisoned one are skipped for their NaN loss, fewer than the limit: the run used to
    finish with exit 0 and NaN weights in last.pt and best.pt."""
    real = launch.default_hooks
    monkeypatch.setattr(launch, "default_hooks", lambda *args: real(*args[:6], [PoisonWeights(epoch)]))
    args = train_overrides(model_yaml, small_world, tmp_path, "run", **{"plugins": "[]"})
    code = load_tool("train_multitask").main(["--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (
        f"error: epoch {epoch + 1}: training diverged: NaN or Inf in model (1 tensor, first body." in err
    ), err
    assert "no checkpoint holds these weights" in err and "Traceback" not in err, err
    weights = tmp_path / "run" / "weights"
    if epoch == 0:
        assert not any(weights.glob("*.pt"))
        return
    for name in ("last.pt", "best.pt"):
        ckpt = load_safe(weights / name)
        assert ckpt["epoch"] == 1 and all_finite(ckpt["model"]) and all_finite(ckpt["ema"]["model"]), name
    assert not (tmp_path / "run" / "metrics.json").exists()
