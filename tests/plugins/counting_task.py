"""An example task plugin that lives outside ``unified/`` and ``tasks/``: count the objects in an image.

It is enabled by listing ``tests.plugins.counting_task`` under ``plugins:`` in an experiment config;
nothing in the core changes. The head reads the shared features, the loss is a regression of
``log(1 + count)`` and the metric is the mean absolute error of the count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unified.task import TASKS, Evaluator, FeatureShape, Task, TaskConfig


@dataclass
class CountConfig(TaskConfig):
    gain: float = 1.0


class CountHead(nn.Module):
    def __init__(self, feature_shapes: Sequence[FeatureShape], bank: nn.Module) -> None:
        super().__init__()
        last = feature_shapes[-1].channels
        self.implicit = bank.get("count.ia", last, "add")
        self.fc = nn.Linear(last, 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = self.implicit(features[-1]).mean(dim=(2, 3))
        return {"log_count": self.fc(pooled).squeeze(1)}


class CountEvaluator(Evaluator):
    def __init__(self) -> None:
        self.errors: list[float] = []

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        counts = torch.bincount(batch["boxes"][:, 0].long(), minlength=len(batch["meta"]))
        for pred, count, labelled in zip(predictions["count"], counts, batch["label_mask"]["boxes"]):
            if bool(labelled):
                self.errors.append(abs(pred["count"] - float(count)))

    def compute(self) -> dict[str, float]:
        return {"MAE": sum(self.errors) / max(len(self.errors), 1)}


@TASKS.register("count")
class CountTask(Task):
    name = "count"
    config_class = CountConfig
    label_kinds = ("boxes",)
    cfg: CountConfig

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        return CountHead(feature_shapes, bank)

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        pred = outputs["count"]["log_count"].float()
        counts = torch.bincount(batch["boxes"][:, 0].long(), minlength=pred.shape[0]).to(pred)
        mask = self.label_mask(batch).to(pred)
        per_image = F.mse_loss(pred, torch.log1p(counts), reduction="none")
        return {"mse": self.cfg.gain * (per_image * mask).sum() / mask.sum().clamp_min(1.0)}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        return [{"count": float(torch.expm1(v).clamp_min(0))} for v in outputs["count"]["log_count"].float()]

    def make_evaluator(self) -> CountEvaluator:
        return CountEvaluator()

    def fitness(self, metrics: dict[str, float]) -> float:
        return -metrics["MAE"]
