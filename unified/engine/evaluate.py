"""Evaluate every task of a model over a data loader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.data import MultiTaskDataset, build_dataloader, load_dataset_yaml
from unified.data.dataset import iterate_loader
from unified.engine.pictures import display_batch, display_threshold, draw_batch_pictures
from unified.task import Evaluator


def predict(
    model: nn.Module, images: torch.Tensor, meta: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Run the model in its current mode and every task's post-processing, in dependency order."""
    outputs = model(images)
    predictions: dict[str, list[dict[str, Any]]] = {}
    for name, task in model.tasks.items():
        predictions[name] = task.postprocess(outputs, predictions, meta)
    return predictions


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = False,
    tasks: Iterable[str] | None = None,
    plot_dir: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model`` on ``loader`` (a dict of metric dicts keyed by task name).

    Args:
        tasks: Evaluate only these tasks (default: all of the model's).
        plot_dir: Where evaluators that can draw (``save_plots(directory)``) write their PNGs, and where
            the first batch is drawn with its labels and predictions (:func:`save_batch_pictures`).
    """
    was_training = model.training
    model.eval()
    names = list(model.tasks) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in model.tasks]
    if unknown:
        raise ValueError(f"tasks {unknown} are not in the model (it has {list(model.tasks)})")
    evaluators = {name: model.tasks[name].make_evaluator() for name in names}
    for name, evaluator in evaluators.items():
        if not isinstance(evaluator, Evaluator):
            raise TypeError(
                f"task {name!r}: make_evaluator() returned a {type(evaluator).__qualname__}, which is not a "
                "unified.task.Evaluator (subclass it)"
            )
    iterator: Iterable[dict[str, Any]] = iterate_loader(loader)
    if progress:
        from tqdm import tqdm

        total = len(loader) if isinstance(loader, Sized) else None
        iterator = tqdm(iterator, desc="evaluating", leave=False, total=total)
    first = None
    try:
        for batch in iterator:
            first = batch if first is None else first
            images = batch["images"].to(device, non_blocking=True).float()
            with autocast or contextlib.nullcontext():
                predictions = predict(model, images, batch["meta"])
            for evaluator in evaluators.values():
                evaluator.update(predictions, batch)
        metrics = {name: evaluator.compute() for name, evaluator in evaluators.items()}
        if plot_dir is not None:
            for evaluator in evaluators.values():
                evaluator.save_plots(Path(plot_dir))
            if first is not None:
                save_batch_pictures(model, first, device, Path(plot_dir))
        return metrics
    finally:
        model.train(was_training)


@torch.no_grad()
def save_batch_pictures(
    model: nn.Module, batch: dict[str, Any], device: torch.device, directory: Path
) -> list[Path]:
    """``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg`` of ``batch`` (:mod:`unified.engine.pictures`):
    its first images with their labels, and with the model's predictions above the display confidence."""
    shown = display_batch(batch)
    images = shown["images"][: len(shown["meta"])].to(device).float()
    with display_threshold(model):
        predictions = predict(model, images, shown["meta"])
    return draw_batch_pictures(model, shown, predictions, directory)


def training_image_size(checkpoint: Mapping[str, Any], default: int = 640) -> int:
    """The image size a checkpoint was trained at (``experiment.train.img_size``), else ``default``."""
    experiment = checkpoint.get("experiment")
    train = experiment.get("train") if isinstance(experiment, Mapping) else None
    size = train.get("img_size") if isinstance(train, Mapping) else None
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else default


def evaluate_dataset(
    model: nn.Module,
    data: str | Path,
    split: str = "val",
    img_size: int = 640,
    batch_size: int = 16,
    workers: int = 2,
    device: str | torch.device = "cpu",
    tasks: Iterable[str] | None = None,
    plot_dir: Path | None = None,
    model_name: str = "the model",
) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model`` on a split of a dataset YAML (the work of ``unified val``).

    Args:
        model: A ``UnifiedModel`` on ``device`` (unfused: the metrics of the weights themselves).
        data: The dataset YAML; it must have the model's classes.
        tasks: Evaluate only these tasks (default: all of the model's).
        plot_dir: Where each task's plots and COCO results JSON go (default: nowhere).
        model_name: What the class-mismatch error calls the model (its checkpoint).

    Raises:
        ValueError: for a dataset with other classes than the model's, or a task the model lacks.
        ConfigError, DataError: for a dataset YAML or annotations that cannot be read.
    """
    records, info = load_dataset_yaml(data, split)
    if info.class_names != model.info.class_names:
        raise ValueError(
            f"{data} has classes {info.class_names} but {model_name} was trained on "
            f"{model.info.class_names}: evaluate on a dataset with the same classes"
        )
    loader = build_dataloader(
        MultiTaskDataset(records, img_size, False, info=model.info),
        batch_size,
        shuffle=False,
        num_workers=workers,
    )
    return run_evaluation(model, loader, torch.device(device), tasks=tasks, plot_dir=plot_dir)
