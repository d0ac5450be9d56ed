"""Box operations: format conversion, letterbox mapping and non-maximum suppression."""

from unified.ops.boxes import (
    clip_boxes,
    letterbox_to_original,
    original_to_letterbox,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from unified.ops.nms import non_max_suppression

__all__ = [
    "clip_boxes",
    "letterbox_to_original",
    "non_max_suppression",
    "original_to_letterbox",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]
