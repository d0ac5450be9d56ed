"""Paired IoU and its GIoU/DIoU/CIoU refinements: ``box1[i]`` against ``box2[i]``, not all pairs.

The regression losses compare each prediction with the target it was assigned to, so they need the
elementwise form. GIoU, DIoU and CIoU come from ``torchvision.ops`` (which implements them as losses,
``1 - value``). torchvision's complete IoU loss keeps the aspect-ratio weight ``alpha`` out of the
gradient exactly as YOLOR's ``bbox_iou(..., CIoU=True)`` does; the two differ only in where a ``1e-7``
(torchvision) or ``1e-9`` (YOLOR) guard against division by zero is added, which the tests bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torchvision.ops import (
    box_convert,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
)

IoUKind = Literal["iou", "giou", "diou", "ciou"]

_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}


def _plain_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float) -> torch.Tensor:
    x1, y1, x2, y2 = box1.unbind(-1)
    x1g, y1g, x2g, y2g = box2.unbind(-1)
    inter = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0) * (
        torch.min(y2, y2g) - torch.max(y1, y1g)
    ).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter / (union + eps)


def paired_iou(
    box1: torch.Tensor, box2: torch.Tensor, kind: IoUKind = "iou", xywh: bool = True, eps: float = 1e-7
) -> torch.Tensor:
    """IoU-family similarity of each box in ``box1`` with the box at the same place in ``box2``.

    Args:
        box1: ``(..., 4)`` boxes.
        box2: ``(..., 4)`` boxes, broadcastable against ``box1``.
        kind: ``"iou"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
        xywh: Boxes are centre-size (otherwise corners).
        eps: Guard against division by zero.

    Returns:
        ``(...)`` similarities; IoU lies in ``[0, 1]``, the refined kinds in ``[-1, 1]`` (CIoU can dip
        slightly below -1 for far-apart boxes of very different shapes).
    """
    if box1.shape[-1] != 4 or box2.shape[-1] != 4:
        raise ValueError(
            f"boxes must end in 4 coordinates, got shapes {tuple(box1.shape)} and {tuple(box2.shape)}"
        )
    if kind not in ("iou", *_LOSSES):
        raise ValueError(f"unknown IoU kind {kind!r}; expected one of 'iou', {', '.join(map(repr, _LOSSES))}")
    if xywh:
        box1 = box_convert(box1, in_fmt="cxcywh", out_fmt="xyxy")
        box2 = box_convert(box2, in_fmt="cxcywh", out_fmt="xyxy")
    box1, box2 = torch.broadcast_tensors(box1, box2)
    if kind == "iou":
        return _plain_iou(box1, box2, eps)
    return 1.0 - _LOSSES[kind](box1, box2, reduction="none", eps=eps)


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, xywh: bool = True) -> torch.Tensor:
    """Elementwise complete IoU (Zheng et al., 2020) as used by the YOLOR box loss; see :func:`paired_iou`."""
    return paired_iou(box1, box2, kind="ciou", xywh=xywh)


__all__ = ["IoUKind", "bbox_ciou", "paired_iou"]
