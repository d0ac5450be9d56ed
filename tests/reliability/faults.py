"""Test-only fault injection, loaded into a training run as a plugin (``plugins=[tests.reliability.faults]``).

Nothing happens unless the environment variable ``UNIFIED_TEST_FAULT`` is set, so a run that resumes
with the same stored config but without the variable trains normally. Its value is a comma-separated
list of faults; epochs are 0-based:

- ``kill_step=E.I``: SIGKILL this process mid-step (after the backward pass, before the optimiser
  step) at epoch ``E``, iteration ``I`` of the epoch.
- ``kill_eval=E``: SIGKILL during the evaluation after epoch ``E``, after the first batch's predictions.
- ``kill_write=NAME.E``: SIGKILL in the middle of writing ``weights/NAME`` after epoch ``E``: half of
  the serialised bytes are written to the temporary file and flushed first.
- ``kill_rank=R.E``: rank ``R`` SIGKILLs itself before the second step of epoch ``E`` (the first step's
  gradient all-reduce proves that rank 0 has written the previous epoch's checkpoint), on the first
  attempt of a torchrun group only (``TORCHELASTIC_RESTART_COUNT`` 0), never after an elastic restart.
- ``pids=PATH``: append ``rank pid`` to ``PATH`` when training starts (for tests that signal ranks).

A SIGKILL from inside is the same event as one from outside at that instant: no handler, ``finally`` or
``atexit`` runs.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from unified import checkpoint as checkpoint_module
from unified.engine import default_hooks, evaluate
from unified.engine.hooks import Hook
from unified.engine.trainer import Trainer


def parse(text: str) -> dict[str, str]:
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        faults[name] = value
    return faults


FAULTS = parse(os.environ.get("UNIFIED_TEST_FAULT", ""))
_current = {"epoch": -1, "writing": None}


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _pair(value: str) -> tuple[str, int]:
    head, _, tail = value.rpartition(".")
    return head, int(tail)


class FaultHook(Hook):
    def before_train(self, trainer: Trainer) -> None:
        if "pids" in FAULTS:
            with open(FAULTS["pids"], "a") as handle:
                handle.write(f"{trainer.dist.rank} {os.getpid()}\n")

    def before_step(self, trainer: Trainer) -> None:
        s = trainer.state
        _current["epoch"] = s.epoch
        if "kill_rank" in FAULTS and s.epoch_iteration == 1:
            rank, epoch = _pair(FAULTS["kill_rank"])
            first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            if first_attempt and trainer.dist.rank == int(rank) and s.epoch == epoch:
                die()

    def after_backward(self, trainer: Trainer) -> None:
        s = trainer.state
        if "kill_step" in FAULTS and f"{s.epoch}.{s.epoch_iteration}" == FAULTS["kill_step"]:
            die()


if FAULTS:
    _init = Trainer.__init__

    def _init_with_faults(self: Trainer, *args: Any, **kwargs: Any) -> None:
        _init(self, *args, **kwargs)
        self.hooks.insert(0, FaultHook())

    Trainer.__init__ = _init_with_faults  # type: ignore[method-assign]

if "kill_eval" in FAULTS:
    _predict = evaluate.predict

    def _predict_then_die(*args: Any, **kwargs: Any) -> Any:
        result = _predict(*args, **kwargs)
        if _current["epoch"] == int(FAULTS["kill_eval"]):
            die()
        return result

    evaluate.predict = _predict_then_die

if "kill_write" in FAULTS:
    _target_name, _target_epoch = _pair(FAULTS["kill_write"])
    _save_atomic = default_hooks.save_atomic
    _torch_save = torch.save

    def _save_atomic_watched(obj: dict[str, Any], path: str | Path) -> Path:
        if Path(path).name == _target_name and _current["epoch"] == _target_epoch:
            _current["writing"] = Path(path).name
        return _save_atomic(obj, path)

    def _save_half_then_die(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        if _current["writing"] is None or isinstance(handle, (str, os.PathLike)):
            return _torch_save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        _torch_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()  # in the kernel's page cache: on disk as far as a SIGKILL is concerned
        die()

    default_hooks.save_atomic = _save_atomic_watched
    checkpoint_module.torch.save = _save_half_then_die  # the ``torch`` that save_atomic calls
