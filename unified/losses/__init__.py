"""Reusable loss pieces: YOLO target assignment, paired IoU (CIoU) and the YOLOR detection loss."""

from unified.losses.assign import LevelAssignment, YoloAssigner, YoloAssignment, assign_targets
from unified.losses.iou import IoUKind, bbox_ciou, paired_iou
from unified.losses.yolo import OFFICIAL_BALANCE, DetectionLossConfig, YoloDetectionLoss

__all__ = [
    "OFFICIAL_BALANCE",
    "DetectionLossConfig",
    "IoUKind",
    "LevelAssignment",
    "YoloAssigner",
    "YoloAssignment",
    "YoloDetectionLoss",
    "assign_targets",
    "bbox_ciou",
    "paired_iou",
]
