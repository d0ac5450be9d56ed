"""Box format conversion and the mapping between letterboxed inputs and original images.

Boxes are ``(..., 4)`` tensors in pixels. ``xywh`` means centre x, centre y, width, height (the format of
the targets and of the decoded head outputs); ``xyxy`` means corners (the format of NMS, COCO export and
drawing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_convert, clip_boxes_to_image


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre-size boxes to corner boxes."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corner boxes to centre-size boxes."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def _ratio_xy(ratio: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(ratio, (int, float)):
        return float(ratio), float(ratio)
    values = [float(r) for r in ratio]
    if len(values) != 2:
        raise ValueError(f"ratio must be one number or (ratio_x, ratio_y), got {ratio!r}")
    return values[0], values[1]


def _pad_xy(pad: Sequence[float]) -> tuple[float, float]:
    values = [float(p) for p in pad]
    if len(values) != 2:
        raise ValueError(f"pad must be (left, top) in pixels, got {pad!r}")
    return values[0], values[1]


def clip_boxes(boxes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Clip corner boxes to an image of ``shape`` (height, width); returns a new tensor."""
    height, width = int(shape[0]), int(shape[1])
    return clip_boxes_to_image(boxes, (height, width))


def letterbox_to_original(
    boxes: torch.Tensor,
    ratio: float | Sequence[float],
    pad: Sequence[float],
    orig_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """Map corner boxes from the letterboxed network input back to the original image.

    The letterbox resized the original image by ``ratio`` and then added ``pad`` pixels on the left and
    top, so a point ``p`` of the original sits at ``p * ratio + pad`` in the input.

    Args:
        boxes: ``(..., 4)`` xyxy boxes in input pixels.
        ratio: Letterbox gain, one number or ``(ratio_x, ratio_y)``.
        pad: ``(left, top)`` padding in input pixels.
        orig_shape: ``(height, width)`` of the original image; when given, boxes are clipped to it.

    Returns:
        A new tensor of xyxy boxes in original-image pixels.
    """
    rx, ry = _ratio_xy(ratio)
    left, top = _pad_xy(pad)
    x1, y1, x2, y2 = boxes.unbind(-1)
    out = torch.stack(((x1 - left) / rx, (y1 - top) / ry, (x2 - left) / rx, (y2 - top) / ry), dim=-1)
    return clip_boxes(out, orig_shape) if orig_shape is not None else out


def original_to_letterbox(
    boxes: torch.Tensor, ratio: float | Sequence[float], pad: Sequence[float]
) -> torch.Tensor:
    """Map corner boxes from the original image into the letterboxed input (inverse of
    :func:`letterbox_to_original` without clipping)."""
    rx, ry = _ratio_xy(ratio)
    left, top = _pad_xy(pad)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * rx + left, y1 * ry + top, x2 * rx + left, y2 * ry + top), dim=-1)


__all__ = [
    "clip_boxes",
    "letterbox_to_original",
    "original_to_letterbox",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]
