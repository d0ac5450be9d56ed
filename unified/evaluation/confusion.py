"""The detection confusion matrix: which class each object was detected as, or missed, and false alarms.

Detections above a confidence are matched to ground truth by IoU regardless of class (greedily, highest
IoU first, each detection and each object at most once), as YOLO trainers draw it; row and column
``num_classes`` stand for the background: a missed object is "predicted background", a detection that
matches no object is "true background". Crowd (ignore) regions match nothing, and a detection on one is
not counted, as pycocotools counts it neither as a hit nor as a false alarm.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


class ConfusionMatrix:
    """Accumulates ``(num_classes + 1, num_classes + 1)`` counts, rows predicted, columns true classes.

    Args:
        num_classes: Detection classes.
        conf: Detections scoring below this are left out (the usual display threshold).
        iou: The IoU a detection needs with an object to count as detecting it.
    """

    def __init__(self, num_classes: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.num_classes = num_classes
        self.conf = conf
        self.iou = iou
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def update(
        self,
        gt_boxes: np.ndarray,
        gt_classes: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        crowd: np.ndarray | None = None,
    ) -> None:
        """Add one image: xyxy ground truth with classes (``crowd`` marks ignore regions) and detections."""
        background = self.num_classes
        crowd = np.zeros(len(gt_boxes), bool) if crowd is None else np.asarray(crowd, bool)
        keep = np.asarray(scores) >= self.conf
        boxes, classes = np.asarray(boxes, np.float64)[keep].reshape(-1, 4), np.asarray(classes)[keep]
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        objects, regions = gt_boxes[~crowd], gt_boxes[crowd]
        object_classes = np.asarray(gt_classes)[~crowd]
        found, used = _greedy_matches(_iou(objects, boxes), self.iou)
        for g, d in zip(found, used):
            self.matrix[classes[d], object_classes[g]] += 1
        for g in np.setdiff1d(np.arange(len(objects)), found):
            self.matrix[background, object_classes[g]] += 1
        unmatched = np.setdiff1d(np.arange(len(boxes)), used)
        on_crowd = (_iou(regions, boxes[unmatched]) >= self.iou).any(axis=0)
        for d in unmatched[~on_crowd]:
            self.matrix[classes[d], background] += 1


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _greedy_matches(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(object, detection)`` with IoU at least ``threshold``, highest first, each used once."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    pairs = []
    for r, c in zip(rows[order], cols[order]):
        if r not in taken_rows and c not in taken_cols:
            taken_rows.add(int(r))
            taken_cols.add(int(c))
            pairs.append((r, c))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    found, used = np.array(pairs, dtype=np.int64).T
    return found, used


__all__ = ["ConfusionMatrix"]
