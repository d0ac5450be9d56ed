"""Evaluate every task of a model over a data loader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.data.dataset import iterate_loader
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
        plot_dir: Where evaluators that can draw (``save_plots(directory)``) write their PNGs.
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
    try:
        for batch in iterator:
            images = batch["images"].to(device, non_blocking=True).float()
            with autocast or contextlib.nullcontext():
                predictions = predict(model, images, batch["meta"])
            for evaluator in evaluators.values():
                evaluator.update(predictions, batch)
        metrics = {name: evaluator.compute() for name, evaluator in evaluators.items()}
        if plot_dir is not None:
            for evaluator in evaluators.values():
                evaluator.save_plots(Path(plot_dir))
        return metrics
    finally:
        model.train(was_training)
