"""``jdc``: joint detection and classification (YOLOR's JDC): detection plus image-level multi-label labels.

The classification branch reads every level of the shared multi-scale features. Each level is averaged
over its cells and goes through its own implicit add (feature alignment; an add commutes with the mean, so
this equals aligning the map first); the pooled levels are concatenated and projected (1×1 conv + SiLU on
the 1×1 map), then refined by an implicit add before and an implicit multiply after the linear classifier,
as the detection head does around its output conv. The adds (alignment and ``jdc.ia``) follow ``add`` in the
model's ``head.refine``, the multiply ``mul``; ``implicit: false`` gives the plain JDC of the paper's table.

Pooling first, then projecting, is MobileNetV3's "efficient last stage" (Howard et al. 2019): the same
projection on a 1×1 map instead of every cell. On the demo (yolor-tiny, 192², batch 8) a per-level 1×1
conv + BN + SiLU on the full maps made the ``jdc`` step 1.07–1.09× detection alone for 1 % of its FLOPs;
on pooled vectors the head costs almost nothing, so it can be wide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unified.config import check
from unified.drawing import draw_text_block
from unified.evaluation.multilabel import MultiLabelEvaluator
from unified.evaluation.plots import plot_class_bars
from unified.implicit import ImplicitForm, ImplicitOp, fold_add_before, fold_mul_after, implicit_constant
from unified.models.fuse import Fusable
from unified.task import TASKS, Evaluator, FeatureShape, ImagePredictions, StepContext, Task, TaskConfig


@dataclass
class JDCConfig(TaskConfig):
    hidden: int = 256  # width of the projection of the pooled levels
    gain: float = 1.0
    threshold: float = 0.5
    # The head's implicit adds and multiply (`head.refine` says which): false gives the paper's JDC, true its
    # iJDC; empty: as the model YAML's `head.implicit` says
    implicit: bool | None = None
    implicit_form: ImplicitForm | None = None  # empty: the model YAML's `head.implicit_form`

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "task_options.jdc.hidden", "must be >= 1")
        check(self.gain > 0, "task_options.jdc.gain", "must be > 0")
        check(0 < self.threshold < 1, "task_options.jdc.threshold", "must be in (0, 1)")


class ClassificationHead(nn.Module, Fusable):
    """Multi-scale image-level classifier with implicit refinement: pool, align, project, classify."""

    def __init__(
        self,
        feature_shapes: Sequence[FeatureShape],
        num_labels: int,
        hidden: int,
        bank: nn.Module,
        form: str,
        refine: Sequence[str] = ("add", "mul"),
    ):
        super().__init__()
        add, mul = "add" in refine, "mul" in refine
        self.align = nn.ModuleList(
            bank.get(f"jdc.align.{i}", shape.channels, "add", form) if add else nn.Identity()
            for i, shape in enumerate(feature_shapes)
        )
        # No BatchNorm on pooled vectors: its statistics would come from a handful of images (and fail on
        # a batch of one).
        self.project = nn.Sequential(nn.Conv2d(sum(s.channels for s in feature_shapes), hidden, 1), nn.SiLU())
        self.implicit_add = bank.get("jdc.ia", hidden, "add", form) if add else nn.Identity()
        self.classifier = nn.Conv2d(hidden, num_labels, 1)
        self.implicit_mul = bank.get("jdc.im", num_labels, "mul", form) if mul else nn.Identity()
        # Start from a low prior (few labels per image) so early BCE gradients are not dominated by negatives.
        nn.init.constant_(self.classifier.bias, -2.0)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = torch.cat(
            [align(x.mean(dim=(2, 3), keepdim=True)) for x, align in zip(features, self.align)], dim=1
        )
        logits = self.implicit_mul(self.classifier(self.implicit_add(self.project(pooled)))).flatten(1)
        out = {"logits": logits}
        if not self.training:
            out["scores"] = logits.float().sigmoid()
        return out

    def fuse(self) -> None:
        """Fold the per-level alignment adds into the projection (on the 1×1 pooled map: exact) and the
        implicit add and multiply into the classifier (inference only)."""
        if all(isinstance(a, ImplicitOp) for a in self.align):
            g = torch.cat([implicit_constant(a) for a in self.align])
            self.project[0] = fold_add_before(self.project[0], g)
            self.align = nn.ModuleList(nn.Identity() for _ in self.align)
        if isinstance(self.implicit_add, ImplicitOp):
            self.classifier = fold_add_before(self.classifier, self.implicit_add)
            self.implicit_add = nn.Identity()
        if isinstance(self.implicit_mul, ImplicitOp):
            self.classifier = fold_mul_after(self.classifier, self.implicit_mul)
            self.implicit_mul = nn.Identity()

    def fold_feature_add(self, constants: Sequence[torch.Tensor]) -> None:
        """Fold a constant added to each input level (feature alignment) into the projection: the mean
        over cells commutes with the add and the projection reads the 1×1 pooled map, so it is exact.
        Call after :meth:`fuse`."""
        if any(isinstance(a, ImplicitOp) for a in self.align):
            raise ValueError("fold the head's own alignment first (fuse())")
        self.project[0] = fold_add_before(self.project[0], torch.cat([c.reshape(-1) for c in constants]))


class ClassificationEvaluator(Evaluator):
    """Multi-label mAP and F1 over the images that carry image labels."""

    def __init__(self, task: JDCTask) -> None:
        self.task = task
        self.inner = MultiLabelEvaluator(task.info.image_label_names, task.cfg.threshold)
        self.metrics: dict[str, float] | None = None

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = self.task.label_mask(batch)
        if not bool(mask.any()):
            return
        scores = torch.stack([p["scores"] for p in predictions["jdc"]]).cpu().numpy()
        self.inner.update(scores, batch["image_labels"].cpu().numpy(), mask.cpu().numpy())

    def compute(self) -> dict[str, float]:
        self.metrics = self.inner.compute()
        return self.metrics

    def save_plots(self, directory: Path) -> list[Path]:
        """``jdc_AP_per_label.png``: each image label's AP and F1 (at the task's threshold) of the last
        :meth:`compute`."""
        if self.metrics is None:
            return []
        names, m = self.task.info.image_label_names, self.metrics
        series = {
            "AP": [m.get(f"AP/{n}", float("nan")) for n in names],
            f"F1 at score {self.task.cfg.threshold:g}": [m.get(f"F1/{n}", float("nan")) for n in names],
        }
        title = f"Image labels: AP and F1 per label (mAP {m.get('mAP', float('nan')):.3f})"
        return [plot_class_bars(series, names, directory / "jdc_AP_per_label.png", title, "AP, F1")]


@TASKS.register("jdc")
class JDCTask(Task):
    """Detection (shared with ``detect``) plus BCE multi-label classification of the whole image."""

    name = "jdc"
    config_class = JDCConfig
    requires = ("detect",)
    label_kinds = ("image_labels",)
    draw_layer = 2
    image_keys = ("labels", "scores")
    summary_metrics = ("mAP", "F1")
    cfg: JDCConfig

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        return ClassificationHead(
            feature_shapes,
            len(self.info.image_label_names),
            self.cfg.hidden,
            bank,
            self.cfg.implicit_form or model_cfg.head.implicit_form,
            model_cfg.head.refine_ops(self.cfg.implicit),
        )

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        logits = outputs["jdc"]["logits"].float()
        mask = self.label_mask(batch).to(logits.dtype)
        labels = batch["image_labels"] if "image_labels" in batch else torch.zeros_like(logits)
        per_image = F.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none"
        ).mean(1)
        # A sum over labelled images, the convention of the detection loss (see Task.loss); with no
        # labelled image, an exact zero that still reaches the head's parameters.
        loss = (per_image * mask).sum()
        return {"cls": loss * self.cfg.gain}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        scores = outputs["jdc"]["scores"]
        return [
            {"scores": s, "labels": (s >= self.cfg.threshold).nonzero().flatten()} for s in scores.float()
        ]

    def draw(self, canvas: Any, predictions: ImagePredictions) -> Any:
        """The image's labels with their scores (names alone for ground truth, which has no scores)."""
        result = predictions[self.name]
        names = self.info.image_label_names
        scores = result["scores"].tolist() if "scores" in result else None
        lines = [
            names[i] + ("" if scores is None else f" {scores[i]:.2f}") for i in result["labels"].tolist()
        ]
        return draw_text_block(canvas, lines)

    def ground_truth(self, batch: dict[str, Any], index: int) -> dict[str, Any] | None:
        """``labels``: the indices of the image's labels."""
        if not bool(self.label_mask(batch)[index]):
            return None
        return {"labels": torch.nonzero(batch["image_labels"][index] > 0).flatten().cpu()}

    def image_fields(self, predictions: ImagePredictions) -> dict[str, Any]:
        """``labels``: the names scoring at least the threshold; ``scores``: every label's score."""
        result = predictions[self.name]
        names, scores = self.info.image_label_names, result["scores"].tolist()
        return {
            "labels": [names[i] for i in result["labels"].tolist()],
            "scores": {name: round(s, 5) for name, s in zip(names, scores)},
        }

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``jdc_scores`` ``(B, L)``: the image-label probabilities."""
        return {"jdc_scores": outputs[self.name]["scores"]}

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        return {"scores": named["jdc_scores"]}

    def make_evaluator(self) -> ClassificationEvaluator:
        return ClassificationEvaluator(self)

    def fitness(self, metrics: dict[str, float]) -> float:
        return float(metrics.get("mAP", 0.0))
