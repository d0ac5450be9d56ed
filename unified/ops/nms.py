"""Non-maximum suppression of decoded YOLO outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from unified.ops.boxes import xywh_to_xyxy


def _empty_result(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros((0, 4), device=device),
        "scores": torch.zeros((0,), device=device),
        "classes": torch.zeros((0,), dtype=torch.long, device=device),
        "index": torch.zeros((0,), dtype=torch.long, device=device),
    }


def non_max_suppression(
    decoded: torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    classes: Sequence[int] | None = None,
    multi_label: bool = False,
    agnostic: bool = False,
    max_candidates: int = 30000,
) -> list[dict[str, torch.Tensor]]:
    """Per-class NMS of decoded YOLO predictions, image by image.

    The score of a box for a class is objectness × class probability, as in YOLOR. With a single class
    the score is the objectness alone: the detection loss never trains the class logit when there is
    one class, so multiplying by it would only add noise to the ranking.

    Candidate filtering runs on the whole batch at once; only the NMS itself runs per image.

    Args:
        decoded: ``(B, N, 5 + nc)`` rows of ``[cx, cy, w, h, objectness, class probabilities...]`` in
            input pixels, probabilities after the sigmoid.
        conf_thres: Keep boxes whose score is above this.
        iou_thres: IoU above which a lower-scored box of the same class is suppressed.
        max_det: Most detections kept per image.
        classes: Keep only these class ids (after the best class is chosen), or all when ``None``.
        multi_label: One candidate per (box, class) whose score passes ``conf_thres``, instead of one
            per box with its best class. The official YOLOR evaluation uses it when ``nc > 1``.
        agnostic: Suppress across classes.
        max_candidates: Most candidates per image that enter NMS (the highest scored), so that an
            untrained model cannot make NMS explode.

    Returns:
        One dict per image: ``boxes`` ``(n, 4)`` xyxy input pixels, ``scores`` ``(n,)``, ``classes``
        ``(n,)`` long, ``index`` ``(n,)`` long, the row of each detection in ``decoded[image]`` (so that
        per-anchor outputs such as embeddings can be picked). Sorted by decreasing score.
    """
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must be (B, N, 5 + nc) with nc >= 1, got shape {tuple(decoded.shape)}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    batch, _, channels = decoded.shape
    num_classes = channels - 5
    device = decoded.device

    # A box's score never exceeds its objectness, so this cheap test drops most rows first.
    image, row = (decoded[..., 4] > conf_thres).nonzero(as_tuple=True)
    rows = decoded[image, row].float()
    class_scores = rows[:, 4:5] if num_classes == 1 else rows[:, 5:] * rows[:, 4:5]

    if multi_label:
        candidate, cls = (class_scores > conf_thres).nonzero(as_tuple=True)
        score = class_scores[candidate, cls]
    else:
        best, best_cls = class_scores.max(1)
        candidate = (best > conf_thres).nonzero(as_tuple=True)[0]
        score, cls = best[candidate], best_cls[candidate]
    if classes is not None:
        keep = torch.isin(cls, torch.as_tensor(list(classes), dtype=torch.long, device=device))
        candidate, score, cls = candidate[keep], score[keep], cls[keep]

    # ``nonzero`` returns rows in row-major order, so candidates are already grouped by image.
    image, row = image[candidate], row[candidate]
    boxes = xywh_to_xyxy(rows[candidate, :4])
    counts = torch.bincount(image, minlength=batch).tolist()

    results: list[dict[str, torch.Tensor]] = []
    start = 0
    for count in counts:
        if count == 0:
            results.append(_empty_result(device))
            continue
        part = slice(start, start + count)
        start += count
        b_boxes, b_score, b_cls, b_row = boxes[part], score[part], cls[part], row[part]
        if count > max_candidates:
            top = b_score.topk(max_candidates).indices
            b_boxes, b_score, b_cls, b_row = b_boxes[top], b_score[top], b_cls[top], b_row[top]
        groups = torch.zeros_like(b_cls) if agnostic else b_cls
        kept = batched_nms(b_boxes, b_score, groups, iou_thres)[:max_det]
        results.append(
            {"boxes": b_boxes[kept], "scores": b_score[kept], "classes": b_cls[kept], "index": b_row[kept]}
        )
    return results


__all__ = ["non_max_suppression"]
