"""Non-finite values: a NaN/Inf loss or gradient skips the step with a warning naming the task and term;
after ``train.max_nonfinite_steps`` in a row the run stops with a clear message, its last good checkpoint
intact. Faults come from the test-only task ``nan_probe`` (tests/reliability/nan_task.py)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.checkpoint import load_safe
from unified.engine import trainer as trainer_module
from unified.engine.experiment import load_experiment
from unified.engine.hooks import Hook
from unified.engine.launch import run_training


def probe_overrides(model_yaml, world, project, kind: str, steps: list[int], **extra) -> list[str]:
    overrides = train_overrides(model_yaml, world, project, "run", **extra)
    return [o for o in overrides if not o.startswith(("plugins=", "tasks="))] + [
        "plugins=[tests.reliability.nan_task]",
        "tasks=[detect, nan_probe]",
        f"task_options.nan_probe.kind={kind}",
        f"task_options.nan_probe.steps={steps}",
    ]


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def train_collecting_warnings(overrides: list[str], hooks=()) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir, _ = run_training(load_experiment(None, overrides), progress=False, extra_hooks=hooks)
    messages = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    return load_safe(run_dir / "weights" / "last.pt"), messages


@pytest.mark.parametrize("kind", ["loss", "inf"])
def test_a_nonfinite_loss_skips_the_step_naming_task_and_term(tmp_path, small_world, model_yaml, kind):
    last, messages = train_collecting_warnings(
        probe_overrides(model_yaml, small_world, tmp_path, kind, [1, 4])
    )
    assert len(messages) == 2, messages
    assert all("non-finite loss in nan_probe.value; step skipped" in m for m in messages), messages
    assert "epoch 1 iteration 1" in messages[0] and "epoch 2 iteration 4" in messages[1]
    assert last["epoch"] == 3 and last["skipped_steps"] == 2
    assert all_finite(last["model"]) and all_finite(last["ema"]["model"])


def test_a_nonfinite_gradient_skips_the_step_naming_the_task(tmp_path, small_world, model_yaml):
    last, messages = train_collecting_warnings(
        probe_overrides(model_yaml, small_world, tmp_path, "gradient", [2])
    )
    assert len(messages) == 1, messages
    # Clipping by the NaN norm used to make every gradient NaN, hiding the culprit ("(gradient)").
    assert "non-finite gradient in heads.nan_probe (2 tensors), body" in messages[0], messages
    assert "heads.detect" not in messages[0]
    assert last["skipped_steps"] == 1 and all_finite(last["model"])


class BufferProbe(Hook):
    """Records the model's buffers before and after one chosen step."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    def before_step(self, trainer) -> None:
        if trainer.state.iteration == self.iteration:
            self.before = {k: v.clone() for k, v in trainer.model.named_buffers()}

    def after_step(self, trainer) -> None:
        if trainer.state.iteration == self.iteration:
            self.after = {k: v.clone() for k, v in trainer.model.named_buffers()}


def test_a_nan_forward_pass_leaves_batchnorm_statistics_as_they_were(
    tmp_path, monkeypatch, small_world, model_yaml
):
    """A NaN image batch used to write NaN into every BatchNorm's running statistics: the step was
    skipped, but evaluation and every later checkpoint were ruined."""
    real = trainer_module.batch_to_device
    calls = {"n": 0}

    def nan_on_fifth_batch(batch, device, memory_format=None):
        calls["n"] += 1
        out = real(batch, device, memory_format)
        if calls["n"] == 5:
            out["images"] = out["images"] * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "batch_to_device", nan_on_fifth_batch)
    probe = BufferProbe(iteration=4)
    last, messages = train_collecting_warnings(
        probe_overrides(model_yaml, small_world, tmp_path, "loss", []), hooks=[probe]
    )
    assert len(messages) == 1 and "detect.box" in messages[0], messages
    assert probe.before and probe.before.keys() == probe.after.keys()
    for name, value in probe.before.items():
        assert torch.equal(value, probe.after[name]), f"{name} changed in a skipped step"
    assert all_finite(last["model"]) and all_finite(last["ema"]["model"])


def test_too_many_nonfinite_steps_in_a_row_stop_the_run_with_its_checkpoint_intact(
    tmp_path, capsys, small_world, model_yaml
):
    args = probe_overrides(model_yaml, small_world, tmp_path, "loss", list(range(4, 60)))
    args += ["train.max_nonfinite_steps=3", "train.epochs=10"]
    with pytest.warns(UserWarning, match="non-finite loss in nan_probe.value"):
        assert load_tool("train_multitask").main(["--no-progress", *args]) == 1
    err = capsys.readouterr().err
    assert "error: 3 steps in a row had a non-finite loss (last: nan_probe.value); stopping" in err, err
    assert "weights/last.pt) is intact" in err and "Traceback" not in err
    last = load_safe(tmp_path / "run" / "weights" / "last.pt")
    assert last["epoch"] == 2 and all_finite(last["model"]) and all_finite(last["ema"]["model"])
