"""A test-only task plugin whose loss or gradient turns non-finite on chosen training steps.

Enabled with ``plugins=[tests.reliability.nan_task]`` and ``tasks=[detect, nan_probe]``; options under
``task_options.nan_probe``: ``steps`` (0-based indices of the loss calls, i.e. training steps, that go
wrong) and ``kind``: ``loss`` (the term ``value`` is NaN), ``inf`` (it is +Inf) or ``gradient`` (the term
is finite but its gradient is NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from unified.task import TASKS, Evaluator, FeatureShape, Task, TaskConfig


@dataclass
class NanProbeConfig(TaskConfig):
    steps: list[int] = field(default_factory=list)
    kind: Literal["loss", "inf", "gradient"] = "loss"


class ProbeHead(nn.Module):
    def __init__(self, feature_shapes: Sequence[FeatureShape]) -> None:
        super().__init__()
        self.fc = nn.Linear(feature_shapes[-1].channels, 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"score": self.fc(features[-1].mean(dim=(2, 3))).squeeze(1)}


class ProbeEvaluator(Evaluator):
    def update(self, predictions: dict[str, Any], batch: dict[str, Any]) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {"calls": 0.0}


@TASKS.register("nan_probe")
class NanProbeTask(Task):
    name = "nan_probe"
    config_class = NanProbeConfig
    label_kinds = ("boxes",)
    cfg: NanProbeConfig

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.calls = 0
        return ProbeHead(feature_shapes)

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        score = outputs["nan_probe"]["score"].float()
        value = (score**2).mean() * 1e-3
        bad = self.calls in self.cfg.steps
        self.calls += 1
        if bad and self.cfg.kind == "loss":
            value = value * float("nan")
        elif bad and self.cfg.kind == "inf":
            value = value + float("inf")
        elif bad:
            # sqrt'(0) is infinite and the chain rule multiplies it by 0: a finite 0 whose gradient is NaN.
            value = value + (score.sum() * 0.0).sqrt()
        return {"value": value}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        return [{"score": float(v)} for v in outputs["nan_probe"]["score"].float()]

    def make_evaluator(self) -> ProbeEvaluator:
        return ProbeEvaluator()

    def fitness(self, metrics: dict[str, float]) -> float:
        return 0.0
