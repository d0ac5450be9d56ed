"""The time budget shortens the schedule to the epochs that fit, then stops as a safety."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from unified.engine import default_hooks
from unified.engine.default_hooks import TimeBudgetHook
from unified.engine.trainer import TrainState


class FakeTrainer:
    """What the hook reads: the state, the schedule's epochs and whether this is the main rank."""

    def __init__(self, epochs: int) -> None:
        self.state = TrainState()
        self.cfg = SimpleNamespace(train=SimpleNamespace(epochs=epochs))
        self.dist = SimpleNamespace(is_main=True)
        self.schedule = SimpleNamespace(planned_epochs=0)

    @property
    def epochs(self) -> int:
        return self.schedule.planned_epochs or self.cfg.train.epochs


def run_epochs(
    monkeypatch,
    hook: TimeBudgetHook,
    trainer: FakeTrainer,
    seconds_per_epoch: float,
    first_epoch: float = 0.0,
) -> list[int]:
    """Drive the hook through epochs of a fixed length (the first may differ); planned epochs after each."""
    clock = [0.0]
    monkeypatch.setattr(default_hooks.time, "monotonic", lambda: clock[0])
    hook.before_train(trainer)
    plans = []
    while trainer.state.epoch < trainer.epochs and not trainer.state.stop:
        clock[0] += first_epoch if first_epoch and not plans else seconds_per_epoch
        trainer.state.end_of_epoch = True
        hook.after_epoch(trainer)
        trainer.state.epoch += 1
        plans.append(trainer.epochs)
    return plans


def test_a_slow_run_gets_a_shorter_schedule_that_ends_inside_the_budget(monkeypatch, capsys):
    trainer = FakeTrainer(epochs=30)
    plans = run_epochs(monkeypatch, TimeBudgetHook(minutes=10), trainer, seconds_per_epoch=50.0)
    # 600 s at 50 s per epoch: 12 epochs fit; the schedule says so from the first epoch on and the run
    # ends by finishing it, not by the safety stop.
    assert plans[0] == 12 and trainer.epochs == 12
    assert trainer.state.epoch == 12 and not trainer.state.stop
    assert "ends after 12 of 30 epochs" in capsys.readouterr().out


def test_a_slow_first_epoch_shortens_the_schedule_only_until_the_pace_shows(monkeypatch):
    trainer = FakeTrainer(epochs=10)
    # Start-up makes epoch 1 take 150 s; the rest take 50 s: 10 epochs need 600 s of a 620 s budget.
    plans = run_epochs(monkeypatch, TimeBudgetHook(minutes=620 / 60), trainer, 50.0, first_epoch=150.0)
    assert plans[0] < 10 and plans[-1] == 10 and trainer.state.epoch == 10 and not trainer.state.stop


def test_a_fast_run_keeps_its_schedule(monkeypatch):
    trainer = FakeTrainer(epochs=10)
    plans = run_epochs(monkeypatch, TimeBudgetHook(minutes=10), trainer, seconds_per_epoch=20.0)
    assert plans == [10] * 10 and trainer.schedule.planned_epochs == 0


def test_no_budget_changes_nothing(monkeypatch):
    trainer = FakeTrainer(epochs=5)
    plans = run_epochs(monkeypatch, TimeBudgetHook(minutes=0), trainer, seconds_per_epoch=1e6)
    assert plans == [5] * 5 and not trainer.state.stop


@pytest.mark.parametrize("first_epoch", [0, 4])
def test_an_epoch_longer_than_the_rest_of_the_budget_stops_the_run(monkeypatch, first_epoch):
    trainer = FakeTrainer(epochs=30)
    trainer.state.epoch = first_epoch  # a resumed run budgets its own epochs only
    run_epochs(monkeypatch, TimeBudgetHook(minutes=1), trainer, seconds_per_epoch=40.0)
    assert trainer.state.stop and trainer.state.epoch == first_epoch + 1
