"""The built-in hooks: evaluation, checkpoints, logging (tqdm, TensorBoard, results.csv), the run's
pictures, time budget.

The weights' moving average is a hook too, in :mod:`unified.engine.ema`; the per-epoch summary line in
:mod:`unified.engine.progress`.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from unified.checkpoint import FORMAT, VERSION, CheckpointError, save_atomic
from unified.config import to_dict
from unified.distributed import barrier, broadcast_object
from unified.engine.evaluate import run_evaluation
from unified.engine.hooks import Hook
from unified.evaluation.plots import plot_labels, plot_results, read_results

if TYPE_CHECKING:
    from unified.engine.trainer import Trainer


def write_text_or_warn(path: Path, text: str) -> bool:
    """Write a small result file; on failure (a full disk) warn instead of ending the run."""
    try:
        path.write_text(text)
    except OSError as exc:
        warnings.warn(f"could not write {path}: {exc.strerror or exc}", stacklevel=2)
        return False
    return True


def _last_epoch(trainer: Trainer) -> bool:
    return trainer.state.epoch + 1 >= trainer.epochs or trainer.state.stop


class EvaluationHook(Hook):
    """Evaluates the EMA model on the validation loader every ``eval.interval`` epochs and at the end.

    Only rank 0 evaluates (over the whole split); the other ranks wait at a barrier.
    """

    def __init__(self, val_loader: Any) -> None:
        self.val_loader = val_loader

    def after_epoch(self, trainer: Trainer) -> None:
        s = trainer.state
        interval = trainer.cfg.eval.interval
        due = (interval > 0 and (s.epoch + 1) % interval == 0) or _last_epoch(trainer)
        if not due:
            return
        if trainer.dist.is_main and self.val_loader is not None:
            model = trainer.eval_model()
            # Evaluated in fp32 whatever the training precision, so metrics match tools/evaluate.py.
            s.metrics = run_evaluation(model, self.val_loader, trainer.device)
            s.evaluated_epoch = s.epoch
            scores = [model.tasks[name].fitness(m) for name, m in s.metrics.items()]
            s.fitness = sum(scores) / len(scores) if scores else -math.inf
        barrier()


def checkpoint_payload(trainer: Trainer, run_meta: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to resume exactly or to rebuild the model, as tensors and plain data."""
    state = trainer.state_dict()
    # Written at the end of an epoch: the next run starts with the following epoch and iteration.
    state["epoch"] += 1
    state["iteration"] += 1
    return {
        "format": FORMAT,
        "version": VERSION,
        **state,
        "experiment": to_dict(trainer.cfg),
        "metrics": trainer.state.metrics,
        "fitness": trainer.state.fitness,
        **run_meta,
    }


class CheckpointHook(Hook):
    """Writes ``weights/best.pt`` when fitness improves, then ``weights/last.pt``, every epoch (rank 0 only).

    Every write is atomic (:func:`save_atomic`): a kill or a full disk leaves the previous file valid.
    ``best.pt`` is written first, so a kill between the two writes leaves a ``last.pt`` from which the
    resumed run repeats the epoch and writes ``best.pt`` again. A failed write (disk full, quota) is
    reported and training goes on, trying again at the next epoch; after ``max_failures`` epochs in a row
    without a checkpoint, or when the last epoch's checkpoint cannot be written, it raises.

    Args:
        run_dir: The run folder (checkpoints go to ``run_dir/weights``).
        run_meta: Model metadata stored in every checkpoint.
        max_failures: Consecutive epochs whose checkpoint may fail before the run stops.
    """

    def __init__(self, run_dir: Path, run_meta: dict[str, Any], max_failures: int = 3) -> None:
        self.weights_dir = Path(run_dir) / "weights"
        self.run_meta = run_meta
        self.max_failures = max_failures
        self.failures = 0

    def before_train(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:
            return
        # Temporary files of a write that was killed (see save_atomic); they would only fill the disk.
        for name in ("last.pt", "best.pt"):
            for stale in self.weights_dir.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def after_epoch(self, trainer: Trainer) -> None:
        s = trainer.state
        if not trainer.dist.is_main:
            return
        previous_best = s.best_fitness
        improved = s.fitness > s.best_fitness
        if improved:
            s.best_fitness = s.fitness
        payload = checkpoint_payload(trainer, self.run_meta)
        try:
            if improved or not (self.weights_dir / "best.pt").exists():
                try:
                    save_atomic(payload, self.weights_dir / "best.pt")
                except CheckpointError:
                    s.best_fitness = previous_best  # a later epoch that beats the best.pt on disk writes it
                    raise
            save_atomic(payload, self.weights_dir / "last.pt")
        except CheckpointError as exc:
            self.failures += 1
            if self.failures >= self.max_failures or _last_epoch(trainer):
                raise CheckpointError(
                    f"{exc}. No checkpoint could be written for {self.failures} epoch(s) in a row, the last at "
                    f"epoch {s.epoch + 1}: stopping. Free space in {self.weights_dir} and resume with "
                    f"--resume {self.weights_dir.parent}"
                ) from exc
            warnings.warn(
                f"epoch {s.epoch + 1}: {exc}. Training goes on and tries again after the next epoch "
                f"({self.failures} of {self.max_failures} failures in a row before stopping)",
                stacklevel=2,
            )
            return
        self.failures = 0


class LoggerHook(Hook):
    """tqdm progress with per-task losses, TensorBoard scalars every step, ``results.csv`` every epoch."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.use_tensorboard = tensorboard
        self.progress = progress
        self.writer = None
        self.bar = None

    def before_train(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:
            return
        if self.use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir))

    def before_epoch(self, trainer: Trainer) -> None:
        s = trainer.state
        if trainer.dist.is_main and self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=s.batches_per_epoch, desc=f"epoch {s.epoch + 1}/{trainer.epochs}")

    def after_step(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:
            return
        s = trainer.state
        if self.writer is not None:
            for key, value in s.step_logs.items():
                self.writer.add_scalar(f"train/{key}", value, s.iteration)
            self.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], s.iteration)
        if self.bar is not None:
            self.bar.set_postfix(
                {k.partition("/")[0]: f"{v:.3f}" for k, v in s.step_logs.items() if k.endswith("/total")}
            )
            self.bar.update(1)

    def after_epoch(self, trainer: Trainer) -> None:
        if not trainer.dist.is_main:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._write_epoch(trainer)

    def _write_epoch(self, trainer: Trainer) -> None:
        s = trainer.state
        row: dict[str, Any] = {"epoch": s.epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"]}
        row.update({f"loss/{k}": v for k, v in s.epoch_means().items() if not k.startswith("weight/")})
        row.update({k: v for k, v in s.epoch_means().items() if k.startswith("weight/")})
        # Only an evaluated epoch has metrics: repeating older ones would draw plateaus in results.png.
        metrics_epoch = s.metrics if s.metrics and s.evaluated_epoch == s.epoch else {}
        for task, metrics in metrics_epoch.items():
            row.update({f"{task}/{k}": v for k, v in metrics.items()})
        row["skipped_steps"] = s.skipped_steps
        path = self.run_dir / "results.csv"
        existing: list[dict[str, Any]] = []
        if path.exists():
            with path.open() as handle:
                existing = list(csv.DictReader(handle))
        fields = list(dict.fromkeys([*(existing[0].keys() if existing else []), *row.keys()]))
        tmp = path.with_suffix(".csv.tmp")
        try:
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                for old in existing:
                    writer.writerow(old)
                writer.writerow(row)
            tmp.replace(path)
        except OSError as exc:  # a full disk must not end a run that its checkpoints survive
            tmp.unlink(missing_ok=True)
            warnings.warn(
                f"epoch {s.epoch + 1}: could not write {path}: {exc.strerror or exc}; this epoch's row is missing",
                stacklevel=2,
            )
        if self.writer is not None:
            for task, metrics in metrics_epoch.items():
                for key, value in metrics.items():
                    if isinstance(value, (int, float)):
                        self.writer.add_scalar(f"val/{task}/{key}", value, s.epoch + 1)
            self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        # metrics.json is not written here: this also runs after a crash or a Ctrl-C, and the run's final
        # metrics are written by unified.engine.launch once the run has ended.


class RunPicturesHook(Hook):
    """The run folder's pictures (main rank): ``labels.jpg`` when the run starts, and once it has ended
    (not after a crash or a Ctrl-C) ``results.png``, every evaluator's plots and the first validation batch
    drawn (a last evaluation pass with ``plot_dir``, after the final checkpoint), all of them also in
    TensorBoard under ``pictures/``.

    Args:
        run_dir: The run folder.
        val_loader: The validation loader (None on the ranks that do not evaluate).
        tensorboard: Add the pictures to the run's TensorBoard events.
    """

    def __init__(self, run_dir: Path, val_loader: Any, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.val_loader = val_loader
        self.tensorboard = tensorboard

    def before_train(self, trainer: Trainer) -> None:
        path = self.run_dir / "labels.jpg"
        # The images of a MultiTaskDataset; a loader of anything else has no labels to show.
        records = getattr(getattr(trainer.train_loader, "dataset", None), "records", None)
        if trainer.dist.is_main and records and not path.exists():
            self._picture(lambda: plot_labels(records, trainer.model.info.class_names, path))

    def after_train(self, trainer: Trainer) -> None:
        s = trainer.state
        if not trainer.dist.is_main or not (s.epoch >= trainer.epochs or s.stop):
            return
        results = self.run_dir / "results.csv"
        if results.exists():
            shown = {name: task.summary_metrics for name, task in trainer.model.tasks.items()}
            self._picture(lambda: plot_results(read_results(results), self.run_dir / "results.png", shown))
        if self.val_loader is not None:
            self._picture(
                lambda: run_evaluation(
                    trainer.eval_model(), self.val_loader, trainer.device, plot_dir=self.run_dir
                )
            )
        if self.tensorboard:
            self._to_tensorboard(s.epoch)

    def _picture(self, draw: Any) -> None:
        try:
            draw()
        except OSError as exc:  # a full disk costs the pictures, not the run
            warnings.warn(
                f"could not write the run's pictures in {self.run_dir}: {exc.strerror or exc}", stacklevel=3
            )

    def _to_tensorboard(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.run_dir))
        try:
            for path in sorted([*self.run_dir.glob("*.png"), *self.run_dir.glob("*.jpg")]):
                with Image.open(path) as image:
                    writer.add_image(
                        f"pictures/{path.stem}", np.asarray(image.convert("RGB")), step, dataformats="HWC"
                    )
        finally:
            writer.close()


class TimeBudgetHook(Hook):
    """Fits the run into ``train.time_budget_min``: shortens the schedule, then stops if it must.

    After every epoch it projects, from the mean time per epoch so far (evaluations and start-up
    included), how many epochs fit in the budget. When that is fewer than planned, the schedule is
    shortened to that many (``Schedule.planned_epochs``), so the learning rate still decays to its
    final value instead of the run stopping at a high rate. As a safety, a run still stops after the
    epoch that leaves too little time for another one.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start = time.monotonic()
        self.epoch_start = self.start
        self.first_epoch = 0

    def before_train(self, trainer: Trainer) -> None:
        self.start = self.epoch_start = time.monotonic()
        self.first_epoch = trainer.state.epoch  # a resumed run budgets only its own epochs

    def after_epoch(self, trainer: Trainer) -> None:
        if self.seconds <= 0:
            return
        now = time.monotonic()
        epoch_time = now - self.epoch_start
        self.epoch_start = now
        elapsed = now - self.start
        done = trainer.state.epoch + 1
        per_epoch = elapsed / max(done - self.first_epoch, 1)
        fit = done + int(max(self.seconds - elapsed, 0.0) // max(per_epoch, 1e-9))
        # Recomputed every epoch from the mean so far, so a slow first epoch (start-up, image caching)
        # shortens the schedule only until later epochs show the real pace.
        configured = trainer.cfg.train.epochs
        if fit >= configured:
            planned = 0  # the whole schedule fits
        elif fit > done:
            planned = fit
        else:  # not even one more epoch fits: the stop below ends the run
            planned = trainer.schedule.planned_epochs
        stop = elapsed + epoch_time > self.seconds and not _last_epoch(trainer)
        # Ranks measure time separately: rank 0 decides for all, or the group would hang.
        stop, planned = broadcast_object((bool(stop), int(planned)))
        if planned != trainer.schedule.planned_epochs:
            trainer.schedule.planned_epochs = planned
            if trainer.dist.is_main:
                print(
                    f"time budget of {self.seconds / 60:.1f} min at {per_epoch:.0f} s per epoch: the schedule now "
                    f"ends after {planned or configured} of {configured} epochs"
                )
        if stop:
            trainer.state.stop = True
            if trainer.dist.is_main:
                print(
                    f"time budget of {self.seconds / 60:.1f} min reached after epoch {done}: "
                    "stopping (the final evaluation still runs)"
                )
