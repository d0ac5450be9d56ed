"""Disk full: a checkpoint write that fails for lack of space leaves the previous checkpoint valid, says
what happened, and training goes on (trying again next epoch) until too many epochs in a row fail."""

from __future__ import annotations

import csv
import errno
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified import checkpoint as checkpoint_module
from unified.checkpoint import CheckpointError, load_safe, save_atomic
from unified.engine import default_hooks
from unified.engine.experiment import load_experiment
from unified.engine.launch import run_training


class Proxy:
    """Stands in for a module inside ``unified.checkpoint``, with some attributes replaced."""

    def __init__(self, module: Any, **overrides: Any) -> None:
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class FullDisk:
    """Checkpoints of the chosen epochs run out of space after a few KiB, as on a full file system.

    The error comes from the real file handle's ``write`` under ``torch.save``, as ENOSPC does.
    """

    def __init__(self, full_epochs: set[int]) -> None:
        self.full_epochs = full_epochs
        self.full = False
        self.failed: list[int] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        disk = self

        def save(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
            disk.full = isinstance(obj, dict) and obj.get("epoch") in disk.full_epochs
            if disk.full:
                disk.failed.append(obj["epoch"])
            return torch.save(obj, handle, *args, **kwargs)

        def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            return LimitedHandle(os.fdopen(fd, mode, *args, **kwargs), disk)

        monkeypatch.setattr(checkpoint_module, "torch", Proxy(torch, save=save))
        monkeypatch.setattr(checkpoint_module, "os", Proxy(os, fdopen=fdopen))


class LimitedHandle:
    def __init__(self, handle: Any, disk: FullDisk, room: int = 4096) -> None:
        self.handle, self.disk, self.room = handle, disk, room

    def write(self, data: bytes) -> int:
        if self.disk.full and len(data) > self.room:
            self.handle.write(bytes(data)[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> LimitedHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def test_enospc_under_torch_save_is_a_checkpoint_error(tmp_path, monkeypatch):
    """torch.save turns the OSError of a failed write into "enforce fail ... unexpected pos"; the
    checkpoint error must still say that the disk is full."""
    path = save_atomic({"epoch": 1, "w": torch.zeros(10)}, tmp_path / "last.pt")
    FullDisk({2}).install(monkeypatch)
    with pytest.raises(CheckpointError, match="No space left on device.*previous last.pt is unchanged"):
        save_atomic({"epoch": 2, "w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert load_safe(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class FullDiskCsv:
    """``csv`` inside the hooks module, whose writers run out of space while the disk is full."""

    def __init__(self, disk: FullDisk) -> None:
        self.disk = disk

    def DictWriter(self, handle: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - stands in for csv's
        writer = csv.DictWriter(handle, *args, **kwargs)
        if self.disk.full:

            def no_space(row: dict) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            writer.writerow = no_space
        return writer

    def __getattr__(self, name: str) -> Any:
        return getattr(csv, name)


def test_full_disk_warns_keeps_training_and_recovers(tmp_path, monkeypatch, small_world, model_yaml):
    disk = FullDisk({2})
    disk.install(monkeypatch)
    monkeypatch.setattr(default_hooks, "csv", FullDiskCsv(disk))  # that epoch's results.csv row fails too
    cfg = load_experiment(
        None, train_overrides(model_yaml, small_world, tmp_path, "run", **{"train.epochs": 3})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir, _ = run_training(cfg, progress=False)
    messages = "\n".join(str(w.message) for w in caught)
    assert re.search(
        r"epoch 2: could not write checkpoint .*No space left on device.*tries again", messages
    ), messages
    assert re.search(r"epoch 2: could not write .*results.csv: No space left on device", messages), messages
    assert disk.failed, "the simulated full disk was never hit"
    assert load_safe(run_dir / "weights" / "last.pt")["epoch"] == 3
    assert not list((run_dir / "weights").glob(".*.tmp"))
    with (run_dir / "results.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "3"]


def test_full_disk_for_good_stops_with_the_previous_checkpoint_intact(
    tmp_path, monkeypatch, capsys, small_world, model_yaml
):
    disk = FullDisk({2, 3, 4, 5})
    disk.install(monkeypatch)
    args = train_overrides(
        model_yaml, small_world, tmp_path, "run", **{"train.epochs": 6, "eval.interval": 0}
    )
    with pytest.warns(UserWarning, match="No space left on device"):
        assert load_tool("train_multitask").main(["--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "3 epoch(s) in a row" in err and "--resume" in err, err
    assert "Traceback" not in err
    monkeypatch.undo()
    last = load_safe(tmp_path / "run" / "weights" / "last.pt")
    assert last["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point()
    )
    assert not list((tmp_path / "run" / "weights").glob(".*.tmp"))


def test_full_disk_at_the_last_epoch_is_an_error(tmp_path, monkeypatch, small_world, model_yaml):
    FullDisk({2}).install(monkeypatch)
    cfg = load_experiment(
        None, train_overrides(model_yaml, small_world, tmp_path, "run", **{"train.epochs": 2})
    )
    with pytest.raises(CheckpointError, match="No space left on device.*stopping"):
        run_training(cfg, progress=False)
    assert load_safe(Path(tmp_path / "run" / "weights" / "last.pt"))["epoch"] == 1
