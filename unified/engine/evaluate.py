"""Evaluate every task of a model over a data loader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


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
) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model`` on ``loader`` (a dict of metric dicts keyed by task name)."""
    was_training = model.training
    model.eval()
    evaluators = {name: task.make_evaluator() for name, task in model.tasks.items()}
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="evaluating", leave=False)
    try:
        for batch in iterator:
            images = batch["images"].to(device, non_blocking=True).float()
            with autocast or contextlib.nullcontext():
                predictions = predict(model, images, batch["meta"])
            for evaluator in evaluators.values():
                evaluator.update(predictions, batch)
        return {name: evaluator.compute() for name, evaluator in evaluators.items()}
    finally:
        model.train(was_training)
