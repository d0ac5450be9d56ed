"""Progress a person can read: one line per epoch, printed and appended to ``RUN/train.log``.

A line holds the epoch's mean loss per task, the validation metrics when the epoch was evaluated (each
task's ``Task.summary_metrics``), the epoch's time and the ETA of the whole run, e.g.::

    epoch 3/30  loss detect 4.21 jdc 0.31 jde 5.02  |  val detect AP50 0.412 AP50-95 0.231, jdc mAP 0.702 F1 0.650  |  41.2 s, ETA 18.5 min (14:32)

Task and term names come from the loss dicts and the metrics (``TrainState``), never from this module.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from unified.engine.hooks import Hook
from unified.evaluation.plots import metric_label

if TYPE_CHECKING:
    from unified.engine.trainer import Trainer


def format_duration(seconds: float) -> str:
    """``12.3 s``, ``4.2 min`` or ``1.5 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 2):
        return str(int(value))
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def loss_text(means: Mapping[str, float]) -> str:
    """``loss detect 4.21 jdc 0.31``: each task's mean total from the epoch means (``<task>/total``)."""
    totals = [(k.rpartition("/")[0], v) for k, v in means.items() if k.endswith("/total") and "/" in k]
    return "loss " + " ".join(f"{task} {value:.3f}" for task, value in totals) if totals else "no finite step"


def metrics_text(metrics: Mapping[str, Mapping[str, float]], shown: Mapping[str, Sequence[str]]) -> str:
    """``val detect AP50 0.412 AP50-95 0.231, jdc mAP 0.702``: per task the metrics in ``shown[task]``
    (default: its first three whose names hold no ``/``)."""
    parts = []
    for task, values in metrics.items():
        names = [n for n in shown.get(task, ()) if n in values] or [n for n in values if "/" not in n][:3]
        parts.append(" ".join([task, *(f"{metric_label(n)} {_number(values[n])}" for n in names)]))
    return "val " + ", ".join(parts)


class ProgressHook(Hook):
    """Prints one summary line per epoch and appends it to ``train.log`` in the run folder (main rank).

    Place it after the evaluation and logging hooks, so that the line sees this epoch's metrics and
    follows the closed progress bar.

    Args:
        run_dir: The run folder.
        show: Print the lines (the log gets them regardless).
    """

    def __init__(self, run_dir: Path, show: bool = True) -> None:
        self.log = Path(run_dir) / "train.log"
        self.show = show
        self.start = self.epoch_start = time.monotonic()
        self.first_epoch = 0
        self.skipped = 0
        self._warned = False

    def before_train(self, trainer: Trainer) -> None:
        self.start = time.monotonic()
        self.first_epoch = trainer.state.epoch
        self.skipped = trainer.state.skipped_steps
        if trainer.dist.is_main:
            started = "resumed at" if self.first_epoch else "started at"
            self._write(
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} {started} epoch {self.first_epoch + 1} of {trainer.epochs}; "
                f"tasks {', '.join(trainer.model.tasks)}",
                show=False,
            )

    def before_epoch(self, trainer: Trainer) -> None:
        self.epoch_start = time.monotonic()

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.dist.is_main:
            self._write(self.epoch_line(trainer))

    def after_train(self, trainer: Trainer) -> None:
        s = trainer.state
        if trainer.dist.is_main and (s.epoch >= trainer.epochs or s.stop):
            done = s.epoch - self.first_epoch
            self._write(
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} ended after epoch {s.epoch} of {trainer.epochs}: "
                f"{done} epoch(s) in {format_duration(time.monotonic() - self.start)}",
                show=False,
            )

    def epoch_line(self, trainer: Trainer) -> str:
        """The summary of the epoch that just ended."""
        s = trainer.state
        now = time.monotonic()
        done = s.epoch + 1
        parts = [f"epoch {done}/{trainer.epochs}  {loss_text(s.epoch_means())}"]
        skipped, self.skipped = s.skipped_steps - self.skipped, s.skipped_steps
        if skipped:
            parts[0] += f" ({skipped} non-finite step(s) skipped)"
        if s.metrics and s.evaluated_epoch == s.epoch:
            shown = {name: task.summary_metrics for name, task in trainer.model.tasks.items()}
            parts.append(metrics_text(s.metrics, shown))
        remaining = trainer.epochs - done
        timing = format_duration(now - self.epoch_start)
        if remaining > 0 and not s.stop:
            eta = (now - self.start) / max(done - self.first_epoch, 1) * remaining
            finish = time.strftime("%H:%M", time.localtime(time.time() + eta))
            timing += f", ETA {format_duration(eta)} ({finish})"
        else:
            timing += f", run took {format_duration(now - self.start)}"
        parts.append(timing)
        return "  |  ".join(parts)

    def _write(self, line: str, show: bool = True) -> None:
        if show and self.show:
            print(line, flush=True)
        try:
            with self.log.open("a") as handle:
                handle.write(line + "\n")
        except OSError as exc:  # a full disk must not end a run that its checkpoints survive
            if not self._warned:
                warnings.warn(f"could not write {self.log}: {exc.strerror or exc}", stacklevel=2)
                self._warned = True


__all__ = ["ProgressHook", "format_duration", "loss_text", "metrics_text"]
