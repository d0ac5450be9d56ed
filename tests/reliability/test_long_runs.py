"""Long runs: host memory does not grow across epochs (data loading, training steps, evaluation,
checkpoints, logs), and DataLoader workers are gone on every exit path."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

from tests.reliability.helpers import alive, children_of, log_text, start_cli, train_overrides
from unified.checkpoint import load_safe
from unified.engine import evaluate
from unified.engine.experiment import load_experiment
from unified.engine.hooks import Hook
from unified.engine.launch import run_training

WARM_UP_EPOCHS = 4
STEPS_PER_EPOCH = 3  # the small world: 12 training images, batch 4
RSS_TOLERANCE_MB = 8.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class MemoryProbe(Hook):
    """At the start of every epoch (after the previous one's evaluation, checkpoint and logs): resident
    memory, live tensors and live Python objects."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.tensors: list[int] = []
        self.objects: list[int] = []

    def before_step(self, trainer) -> None:
        if trainer.state.epoch_iteration:
            return
        gc.collect()
        objects = gc.get_objects()
        self.objects.append(len(objects))
        with warnings.catch_warnings():  # isinstance() on torch's deprecated proxies warns
            warnings.simplefilter("ignore", FutureWarning)
            self.tensors.append(sum(1 for o in objects if isinstance(o, torch.Tensor)))
        self.rss.append(rss_mb())


@pytest.mark.slow
def test_host_memory_does_not_grow_across_epochs(tmp_path, small_world, model_yaml):
    probe = MemoryProbe()
    overrides = train_overrides(
        model_yaml,
        small_world,
        tmp_path,
        "long",
        **{"train.epochs": 10, "tasks": "[detect, jdc, jde]", "plugins": "[]"},
    )
    run_training(load_experiment(None, overrides), progress=False, extra_hooks=[probe])
    measured = len(probe.rss) - WARM_UP_EPOCHS
    assert measured >= 5
    steps = measured * STEPS_PER_EPOCH
    report = f"rss {[round(r, 1) for r in probe.rss]} tensors {probe.tensors} objects {probe.objects}"
    # Fewer new objects than steps: leaking even one object per step fails.
    assert probe.tensors[-1] - probe.tensors[WARM_UP_EPOCHS] < steps, report
    assert probe.objects[-1] - probe.objects[WARM_UP_EPOCHS] < steps, report
    assert max(probe.rss[WARM_UP_EPOCHS:]) - probe.rss[WARM_UP_EPOCHS] < RSS_TOLERANCE_MB, report


class RaiseAt(Hook):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def before_step(self, trainer) -> None:
        if trainer.state.epoch == 1 and trainer.state.epoch_iteration == 1:
            raise self.error


def new_children(before: set[int]) -> list[int]:
    return [pid for pid in children_of(os.getpid()) if pid not in before]


@pytest.mark.parametrize("exit_path", ["normal", "exception", "ctrl-c-training", "ctrl-c-evaluation"])
def test_loader_workers_are_gone_after_every_exit_path(
    tmp_path, monkeypatch, small_world, model_yaml, exit_path
):
    """The validation loader's persistent workers used to outlive an exception or Ctrl-C (the traceback
    kept the loader alive) until a garbage collection."""
    before = set(children_of(os.getpid()))
    cfg = load_experiment(
        None,
        train_overrides(
            model_yaml, small_world, tmp_path, "w", **{"train.epochs": 2, "train.workers": 2, "plugins": "[]"}
        ),
    )
    hooks = []
    if exit_path == "exception":
        hooks = [RaiseAt(RuntimeError("a bug in a hook"))]
    elif exit_path == "ctrl-c-training":
        hooks = [RaiseAt(KeyboardInterrupt())]
    elif exit_path == "ctrl-c-evaluation":
        real, calls = evaluate.predict, []

        def interrupted_in_second_evaluation(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(evaluate, "predict", interrupted_in_second_evaluation)
    if exit_path == "normal":
        run_training(cfg, progress=False, extra_hooks=hooks)
    else:
        expected = RuntimeError if exit_path == "exception" else KeyboardInterrupt
        with pytest.raises(expected):
            run_training(cfg, progress=False, extra_hooks=hooks)
    # No garbage collection first: the workers must be gone by the time the call returns or raises.
    assert not multiprocessing.active_children() and not new_children(before), exit_path


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_signalled_cli_run_leaves_no_worker_behind(tmp_path, small_world, model_yaml, how):
    args = train_overrides(
        model_yaml, small_world, tmp_path, "s", **{"train.epochs": 50, "train.workers": 2, "plugins": "[]"}
    )
    log = tmp_path / "run.log"
    process = start_cli(args, log)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "s" / "weights" / "last.pt").exists() or not children_of(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, log_text(log)
            time.sleep(0.01)
        workers = children_of(process.pid)
        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived the run"
        time.sleep(0.05)
    text = log_text(log)
    if how == "SIGTERM":
        assert code == -signal.SIGTERM, text
    else:
        assert code == 130 and "interrupted: the last completed epoch's checkpoint" in text, text
        # Ctrl-C while a loader starts its workers makes torch's own iterator clean-up print "Exception
        # ignored in ... __del__" (pytorch#64895); anything else would be a traceback of ours.
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                assert i and lines[i - 1].startswith(
                    "Exception ignored in: <function _MultiProcessingDataLoaderIter"
                ), text
    assert load_safe(tmp_path / "s" / "weights" / "last.pt")["epoch"] >= 1
