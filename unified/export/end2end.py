"""NMS inside the ONNX graph (``unified export --end2end``, as YOLOv7's ONNX Runtime end-to-end export).

:class:`End2EndNMS` turns the ``decoded`` rows into the detections of
:func:`unified.ops.nms.non_max_suppression` with ``multi_label=False`` (each box with its best class,
score = objectness × class probability, objectness alone with one class; per-class NMS) by ONNX's own
``NonMaxSuppression`` operator, and adds two graph outputs:

* ``detections`` ``(K, 7)``: ``[image, x1, y1, x2, y2, score, class]``, boxes xyxy in input pixels;
* ``detection_rows`` ``(K, 3)`` int64: ``[image, class, row]``, ``row`` indexing ``decoded`` and every
  per-detection output (``jde_embeddings`` ...).

Rows come grouped by image, then by class, each class's by decreasing score (the operator's order); at most
``max_det`` per class and image. The other outputs stay, so the graph still serves the ONNX backend.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` when exported; the same selection by torchvision in eager mode."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: object,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        max_per_class: torch.Tensor,
        iou: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor:
        rows = []
        limit = int(max_per_class.reshape(-1)[0])
        for image in range(boxes.shape[0]):
            best, cls = scores[image].max(0)
            keep = (best > float(threshold.reshape(-1)[0])).nonzero().flatten()
            kept = keep[batched_nms(boxes[image, keep], best[keep], cls[keep], float(iou.reshape(-1)[0]))]
            for c in torch.unique(cls[kept]).tolist():  # the operator's order: class, then score
                mine = kept[cls[kept] == c][:limit]
                rows.append(torch.stack([torch.full_like(mine, image), torch.full_like(mine, c), mine], 1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, threshold):  # noqa: ANN001, ANN205 - the ONNX graph
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou, threshold, center_point_box_i=0)


class End2EndNMS(nn.Module):
    """The ``detections`` and ``detection_rows`` outputs from ``decoded`` (see the module docstring).

    Args:
        conf_thres: Keep detections scoring above this.
        iou_thres: Suppress a same-class box overlapping a better one by more than this IoU.
        max_det: Most detections per class and image.
    """

    def __init__(self, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300) -> None:
        super().__init__()
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det

    def forward(self, decoded: torch.Tensor) -> dict[str, torch.Tensor]:
        xy, wh = decoded[..., :2], decoded[..., 2:4]
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)
        num_classes = decoded.shape[-1] - 5
        class_scores = decoded[..., 4:5] if num_classes == 1 else decoded[..., 5:] * decoded[..., 4:5]
        # multi_label=False: only each box's best class may be selected (the others score 0).
        best, cls = class_scores.max(-1, keepdim=True)
        one_best = torch.zeros_like(class_scores).scatter(-1, cls, best)
        rows = _NonMaxSuppression.apply(
            boxes,
            one_best.transpose(1, 2).contiguous(),
            torch.tensor([self.max_det], dtype=torch.long),
            torch.tensor([self.iou_thres], dtype=torch.float32),
            torch.tensor([self.conf_thres], dtype=torch.float32),
        )
        image, row = rows[:, 0], rows[:, 2]
        picked_boxes = boxes[image, row]
        picked_scores = best[image, row, 0]
        detections = torch.cat(
            (image[:, None].float(), picked_boxes, picked_scores[:, None], rows[:, 1:2].float()), dim=1
        )
        return {"detections": detections, "detection_rows": rows}


__all__ = ["End2EndNMS"]
