"""``detect``: YOLO object detection as in YOLOR (IDetect head, CIoU + BCE losses, batched NMS)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unified.config import check
from unified.data.kinds.ignore import ignored
from unified.drawing import color, draw_labelled_boxes
from unified.evaluation.coco import CocoDetectionEvaluator
from unified.evaluation.confusion import ConfusionMatrix
from unified.evaluation.plots import plot_class_bars, plot_confusion_matrix, plot_f1_curve, plot_pr_curve
from unified.implicit import ImplicitForm
from unified.losses.assign import YoloAssignment
from unified.losses.yolo import DetectionLossConfig, YoloDetectionLoss
from unified.models.heads import IDetectHead
from unified.ops.boxes import letterbox_to_original, xywh_to_xyxy
from unified.ops.nms import non_max_suppression
from unified.task import TASKS, Evaluator, FeatureShape, ImagePredictions, StepContext, Task, TaskConfig


@dataclass
class DetectConfig(TaskConfig, DetectionLossConfig):
    """Detection options: the loss's (``DetectionLossConfig``: gains default to the official
    ``hyp.scratch.640.yaml``), the implicit refinement and the post-processing."""

    implicit: bool | None = None  # None: as the model YAML's `head.implicit` says
    implicit_form: ImplicitForm | None = None  # None: the model YAML's `head.implicit_form`
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    multi_label: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.conf_thres < 1, "conf_thres", "must be in [0, 1)")
        check(0 < self.iou_thres <= 1, "iou_thres", "must be in (0, 1]")
        check(self.max_det >= 1, "max_det", "must be >= 1")


def ground_truth_in_original(batch: dict[str, Any], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy, original pixels), classes and identities (``-1`` where none, or when the batch has no
    ``identities``) of image ``index`` of a batch."""
    boxes = batch["boxes"]
    rows_of_image = (boxes[:, 0] == index).cpu()
    rows = boxes.detach().cpu().double()[rows_of_image]
    meta = batch["meta"][index]
    height, width = batch["images"].shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    xyxy = xywh_to_xyxy(rows[:, 2:6] * scale)
    xyxy = letterbox_to_original(xyxy, meta["ratio"], meta["pad"], meta["orig_shape"])
    if "identities" in batch:
        identities = batch["identities"].cpu()[rows_of_image].long()
    else:
        identities = torch.full((len(rows),), -1, dtype=torch.long)
    return xyxy.numpy(), rows[:, 1].long().numpy(), identities.numpy()


def ignored_in_image(batch: dict[str, Any], index: int) -> np.ndarray:
    """Bool, one per box of image ``index`` (the order of :func:`ground_truth_in_original`): which are ignore
    regions, evaluated as COCO's crowd regions."""
    rows = (batch["boxes"][:, 0] == index).cpu()
    return ignored(batch).cpu()[rows].numpy()


@dataclass
class DetectionStep:
    """What detection computed for one training step, for the tasks that build on it.

    Attributes:
        terms: Detection's loss terms (``box``, ``obj``, ``cls``).
        assignment: Which (image, anchor, cell) of each level each box of ``batch["boxes"]`` was assigned
            to; ``LevelAssignment.target_index`` is the row in ``batch["boxes"]`` (and so in every
            per-instance entry of the batch, such as ``batch["identities"]``).
    """

    terms: dict[str, torch.Tensor]
    assignment: YoloAssignment


@dataclass
class DetectionCells:
    """Where detections came from in the head's output: per detection its level, anchor, row and column."""

    level: torch.Tensor
    anchor: torch.Tensor
    grid_y: torch.Tensor
    grid_x: torch.Tensor


class DetectionEvaluator(Evaluator):
    """COCO mAP (pycocotools) over the images that carry box labels, and a confusion matrix for the plots."""

    #: Confidence and IoU of the confusion matrix's matches (those of a deployed detector, not of mAP).
    CONFUSION_CONF, CONFUSION_IOU = 0.25, 0.45

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.coco = CocoDetectionEvaluator(class_names)
        self.confusion = ConfusionMatrix(len(self.class_names), self.CONFUSION_CONF, self.CONFUSION_IOU)
        self.result = None

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = batch["label_mask"].get("boxes", torch.zeros(len(batch["meta"]), dtype=torch.bool))
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            boxes, classes, _ = ground_truth_in_original(batch, i)
            height, width = meta["orig_shape"]
            self.coco.add_ground_truth(
                meta["image_id"], boxes, classes, height=height, width=width, crowd=ignored_in_image(batch, i)
            )
            pred = predictions["detect"][i]
            found = [pred[key].cpu().numpy() for key in ("boxes", "scores", "classes")]
            self.coco.add_predictions(meta["image_id"], *found)
            self.confusion.update(boxes, classes, *found, crowd=ignored_in_image(batch, i))

    def compute(self) -> dict[str, float]:
        self.result = self.coco.compute()
        return dict(self.result.metrics)

    def save_plots(self, directory: Path) -> list[Path]:
        """Of the last ``compute``: ``PR_curve.png`` and ``F1_curve.png`` (IoU 0.5), ``confusion_matrix.png``,
        ``AP_per_class.png`` (AP50 and AP50-95) and the COCO results JSON ``detect_predictions.json``."""
        if self.result is None:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        r, names = self.result, self.class_names
        matches = f"confidence >= {self.CONFUSION_CONF}, IoU >= {self.CONFUSION_IOU}"
        return [
            plot_pr_curve(r.recall_thresholds, r.precision, names, directory / "PR_curve.png",
                          title="Detection: precision-recall at IoU 0.5 (AP50)"),
            plot_f1_curve(r.confidence, r.precision_at_confidence, r.recall_at_confidence, names,
                          directory / "F1_curve.png", title="Detection: F1 against confidence at IoU 0.5"),
            plot_confusion_matrix(self.confusion.matrix, names, directory / "confusion_matrix.png",
                                  title=f"Detection: confusion matrix ({matches})"),
            plot_class_bars({"AP50": r.per_class_ap50, "AP50-95": r.per_class_ap}, names,
                            directory / "AP_per_class.png", "Detection: AP50 and AP50-95 per class", "AP"),
            self.coco.write_results(directory / "detect_predictions.json"),
        ]  # fmt: skip


@TASKS.register("detect")
class DetectTask(Task):
    """YOLOR detection: IDetect head with implicit add before and implicit multiply after the 1×1 conv."""

    name = "detect"
    config_class = DetectConfig
    label_kinds = ("boxes",)
    summary_metrics = ("AP50", "AP")
    cfg: DetectConfig

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.head = IDetectHead(
            feature_shapes,
            nc=self.info.nc,
            anchors=model_cfg.anchors,
            bank=bank,
            refine=model_cfg.head.refine_ops(self.cfg.implicit),
            implicit_form=self.cfg.implicit_form or model_cfg.head.implicit_form,
        )
        self.criterion = YoloDetectionLoss(self.head.anchors, self.head.strides, self.info.nc, self.cfg)
        return self.head

    def step(self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext) -> DetectionStep:
        """This step's detection losses and target assignment, computed once and shared with the tasks that
        build on detection; ignore regions (the ``ignore`` kind) are no targets."""

        def compute() -> DetectionStep:
            raw = outputs["detect"]["raw"]
            boxes, image_mask = batch["boxes"], self.label_mask(batch)
            regions = ignored(batch)
            if not bool(regions.any()):
                return DetectionStep(*self.criterion(raw, boxes, image_mask=image_mask))
            # Ignore regions are no targets; target_index still names rows of the whole batch["boxes"].
            rows = (~regions).nonzero().flatten()
            terms, assignment = self.criterion(raw, boxes[rows], image_mask=image_mask)
            levels = [dataclasses.replace(lv, target_index=rows[lv.target_index]) for lv in assignment.levels]
            return DetectionStep(terms, YoloAssignment(levels, assignment.image_mask))

        return context.once(self, compute)

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        return self.step(outputs, batch, context).terms

    def locate(self, index: torch.Tensor, grid_shapes: Sequence[tuple[int, int]]) -> DetectionCells:
        """The level, anchor and cell of detections from their ``index`` (a prediction's ``index``: the
        position in ``decoded``, ordered level, anchor, row, column) for levels of ``(ny, nx)`` grids."""
        num_anchors = int(self.head.anchors.shape[1])
        sizes = torch.tensor([num_anchors * ny * nx for ny, nx in grid_shapes], device=index.device)
        starts = torch.cumsum(sizes, 0) - sizes
        level = torch.searchsorted(starts, index, right=True) - 1
        offset = index - starts[level]
        widths = torch.tensor([nx for _, nx in grid_shapes], device=index.device)[level]
        cells = torch.tensor([ny * nx for ny, nx in grid_shapes], device=index.device)[level]
        cell = offset % cells
        return DetectionCells(level, offset // cells, cell // widths, cell % widths)

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

    def draw(self, canvas: Any, predictions: ImagePredictions) -> Any:
        """Boxes tagged with class and score (class alone for ground truth, which has no scores)."""
        det = predictions[self.name]
        classes = det["classes"].tolist()
        names = self.info.class_names
        scores = det["scores"].tolist() if "scores" in det else [None] * len(classes)
        labels = [
            f"{names[c] if c < len(names) else c}" + ("" if s is None else f" {s:.2f}")
            for c, s in zip(classes, scores)
        ]
        return draw_labelled_boxes(canvas, det["boxes"].tolist(), labels, [color(c) for c in classes])

    def ground_truth(self, batch: dict[str, Any], index: int) -> dict[str, Any] | None:
        """``boxes`` (xyxy, original pixels) and ``classes`` of the image's labelled boxes."""
        if not bool(self.label_mask(batch)[index]):
            return None
        boxes, classes, _ = ground_truth_in_original(batch, index)
        return {"boxes": torch.from_numpy(boxes).float(), "classes": torch.from_numpy(classes)}

    def instance_fields(self, predictions: ImagePredictions) -> list[dict[str, Any]]:
        """COCO result fields: ``category_id`` (the class index), ``bbox`` ``[x, y, w, h]`` in original
        pixels, ``score``."""
        det = predictions[self.name]
        return [
            {
                "category_id": int(c),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(s), 5),
            }
            for (x1, y1, x2, y2), s, c in zip(
                det["boxes"].tolist(), det["scores"].tolist(), det["classes"].tolist()
            )
        ]

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``decoded`` ``(B, N, 5 + nc)``: xywh in input pixels, objectness and class scores."""
        return {"decoded": outputs[self.name]["decoded"]}

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        return {"decoded": named["decoded"]}

    def make_evaluator(self) -> DetectionEvaluator:
        return DetectionEvaluator(self.info.class_names)

    def fitness(self, metrics: dict[str, float]) -> float:
        # The official YOLOR checkpoint selection: 0.1·AP50 + 0.9·AP50:95.
        return 0.1 * float(np.nan_to_num(metrics.get("AP50", 0.0))) + 0.9 * float(
            np.nan_to_num(metrics.get("AP", 0.0))
        )
