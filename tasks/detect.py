"""``detect``: YOLO object detection as in YOLOR (IDetect head, CIoU + BCE losses, batched NMS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unified.config import check
from unified.evaluation.coco import CocoDetectionEvaluator
from unified.evaluation.plots import plot_per_class_ap, plot_pr_curve
from unified.losses.yolo import DetectionLossConfig, YoloDetectionLoss
from unified.models.heads import IDetectHead
from unified.ops.boxes import letterbox_to_original, xywh_to_xyxy
from unified.ops.nms import non_max_suppression
from unified.task import TASKS, FeatureShape, Task, TaskConfig


@dataclass
class DetectConfig(TaskConfig):
    """Detection options; loss gains default to the official ``hyp.scratch.640.yaml``."""

    implicit: bool | None = None  # None: as the model YAML's `head.implicit` says
    implicit_form: str | None = None  # None: the model YAML's `head.implicit_form`
    box: float = 0.05
    cls: float = 0.3
    obj: float = 0.7
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0
    fl_gamma: float = 0.0
    label_smoothing: float = 0.0
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    multi_label: bool = True

    def __post_init__(self) -> None:
        check(self.anchor_t > 1, "task_options.detect.anchor_t", f"must be > 1, got {self.anchor_t}")
        check(0 <= self.conf_thres < 1, "task_options.detect.conf_thres", "must be in [0, 1)")
        check(0 < self.iou_thres <= 1, "task_options.detect.iou_thres", "must be in (0, 1]")
        check(self.max_det >= 1, "task_options.detect.max_det", "must be >= 1")
        check(
            self.implicit_form in (None, "vector", "nn", "mf"),
            "task_options.detect.implicit_form",
            "must be vector, nn or mf",
        )


def ground_truth_in_original(batch: dict[str, Any], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy, original pixels), classes and identities of image ``index`` of a batch."""
    targets = batch["targets"]
    rows = targets[targets[:, 0] == index].detach().cpu().double()
    meta = batch["meta"][index]
    height, width = batch["images"].shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes = xywh_to_xyxy(rows[:, 2:6] * scale)
    boxes = letterbox_to_original(boxes, meta["ratio"], meta["pad"], meta["orig_shape"])
    identities = rows[:, 6] if rows.shape[1] > 6 else torch.full((len(rows),), -1.0, dtype=torch.float64)
    return boxes.numpy(), rows[:, 1].long().numpy(), identities.long().numpy()


class DetectionEvaluator:
    """COCO mAP (pycocotools) over the images that carry box labels."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.coco = CocoDetectionEvaluator(class_names)
        self.result = None

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = batch["label_mask"]["boxes"]
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            boxes, classes, _ = ground_truth_in_original(batch, i)
            height, width = meta["orig_shape"]
            self.coco.add_ground_truth(meta["image_id"], boxes, classes, height=height, width=width)
            pred = predictions["detect"][i]
            self.coco.add_predictions(
                meta["image_id"],
                pred["boxes"].cpu().numpy(),
                pred["scores"].cpu().numpy(),
                pred["classes"].cpu().numpy(),
            )

    def compute(self) -> dict[str, float]:
        self.result = self.coco.compute()
        return dict(self.result.metrics)

    def save_plots(self, directory: Path) -> list[Path]:
        """PR curves (IoU 0.5), per-class AP and the COCO results JSON of the last ``compute``."""
        if self.result is None:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        return [
            plot_pr_curve(
                self.result.recall_thresholds,
                self.result.precision,
                self.class_names,
                directory / "detect_pr_curve.png",
            ),
            plot_per_class_ap(
                self.result.per_class_ap, self.class_names, directory / "detect_per_class_ap.png"
            ),
            self.coco.write_results(directory / "detect_predictions.json"),
        ]


@TASKS.register("detect")
class DetectTask(Task):
    """YOLOR detection: IDetect head with implicit add before and implicit multiply after the 1×1 conv."""

    name = "detect"
    config_class = DetectConfig
    label_kinds = ("boxes",)
    cfg: DetectConfig

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.head = IDetectHead(
            feature_shapes,
            nc=self.info.nc,
            anchors=model_cfg.anchors,
            bank=bank,
            implicit=model_cfg.head.implicit if self.cfg.implicit is None else self.cfg.implicit,
            implicit_form=self.cfg.implicit_form or model_cfg.head.implicit_form,
        )
        loss_cfg = DetectionLossConfig(
            box=self.cfg.box,
            cls=self.cfg.cls,
            obj=self.cfg.obj,
            cls_pw=self.cfg.cls_pw,
            obj_pw=self.cfg.obj_pw,
            anchor_t=self.cfg.anchor_t,
            fl_gamma=self.cfg.fl_gamma,
            label_smoothing=self.cfg.label_smoothing,
        )
        self.criterion = YoloDetectionLoss(self.head.anchors, self.head.strides, self.info.nc, loss_cfg)
        return self.head

    def assignment(self, outputs: dict[str, Any], batch: dict[str, Any], context: dict[str, Any]) -> Any:
        """The target assignment of this step, computed once and shared with tasks that build on detection."""
        if "detect.assignment" not in context:
            self.loss(outputs, batch, context)
        return context["detect.assignment"]

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        if "detect.terms" in context:
            return context["detect.terms"]
        raw = outputs["detect"]["raw"]
        terms, assignment = self.criterion(raw, batch["targets"], image_mask=self.label_mask(batch))
        context["detect.assignment"] = assignment
        context["detect.terms"] = terms
        return terms

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        decoded = outputs["detect"]["decoded"].float()
        results = non_max_suppression(
            decoded,
            conf_thres=self.cfg.conf_thres,
            iou_thres=self.cfg.iou_thres,
            max_det=self.cfg.max_det,
            multi_label=self.cfg.multi_label and self.info.nc > 1,
        )
        for result, image_meta in zip(results, meta):
            result["boxes_input"] = result["boxes"]
            result["boxes"] = letterbox_to_original(
                result["boxes"], image_meta["ratio"], image_meta["pad"], image_meta["orig_shape"]
            )
        return results

    def make_evaluator(self) -> DetectionEvaluator:
        return DetectionEvaluator(self.info.class_names)

    def fitness(self, metrics: dict[str, float]) -> float:
        # The official YOLOR checkpoint selection: 0.1·AP50 + 0.9·AP50:95.
        return 0.1 * float(np.nan_to_num(metrics.get("AP50", 0.0))) + 0.9 * float(
            np.nan_to_num(metrics.get("AP", 0.0))
        )
