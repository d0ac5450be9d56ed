import math

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou

from unified.losses.iou import bbox_ciou, paired_iou


def _random_xywh(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 20
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 10 + 0.1
    return torch.cat((xy, wh), 1)


def _ciou_formula(b1: torch.Tensor, b2: torch.Tensor) -> list[float]:
    """CIoU straight from Zheng et al. (2020), one pair at a time in Python floats."""
    out = []
    for (x1, y1, w1, h1), (x2, y2, w2, h2) in zip(b1.tolist(), b2.tolist()):
        l1, r1, t1, d1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        l2, r2, t2, d2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
        inter = max(0.0, min(r1, r2) - max(l1, l2)) * max(0.0, min(d1, d2) - max(t1, t2))
        iou = inter / (w1 * h1 + w2 * h2 - inter)
        diag2 = (max(r1, r2) - min(l1, l2)) ** 2 + (max(d1, d2) - min(t1, t2)) ** 2
        rho2 = (x1 - x2) ** 2 + (y1 - y2) ** 2
        v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
        alpha = v / (1 - iou + v) if v > 0 else 0.0
        out.append(iou - rho2 / diag2 - alpha * v)
    return out


def test_ciou_matches_the_paper_formula_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    b1, b2 = _random_xywh(500, g), _random_xywh(500, g)
    expected = torch.tensor(_ciou_formula(b1, b2), dtype=torch.float64)
    assert torch.allclose(bbox_ciou(b1, b2), expected, atol=1e-6)
    # float32 as used in training
    assert torch.allclose(bbox_ciou(b1.float(), b2.float()).double(), expected, atol=1e-5)


def test_ciou_of_identical_boxes_is_one_and_of_far_boxes_is_negative():
    g = torch.Generator().manual_seed(1)
    boxes = _random_xywh(50, g)
    assert torch.allclose(bbox_ciou(boxes, boxes), torch.ones(50, dtype=torch.float64), atol=1e-6)
    far = boxes.clone()
    far[:, :2] += 1000
    assert (bbox_ciou(boxes, far) < 0).all()


def test_ciou_alpha_carries_no_gradient_like_yolor():
    # YOLOR computes alpha under no_grad; the gradient of CIoU w.r.t. the prediction then equals
    # d(IoU - rho2/c2)/dp - alpha * dv/dp with alpha a constant.
    pred = torch.tensor([[1.0, 2.0, 3.0, 1.5]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.5, 2.2, 2.0, 2.5]], dtype=torch.float64)
    bbox_ciou(pred, target).sum().backward()

    p = pred.detach().clone().requires_grad_()
    diou = paired_iou(p, target, kind="diou")
    v = 4 / math.pi**2 * (torch.atan(target[:, 2] / target[:, 3]) - torch.atan(p[:, 2] / p[:, 3])) ** 2
    with torch.no_grad():
        iou = paired_iou(p, target, kind="iou")
        alpha = v / (1 - iou + v)
    (diou - alpha * v).sum().backward()
    assert torch.allclose(pred.grad, p.grad, atol=1e-6)


def test_iou_and_giou_equal_torchvision_pairwise_diagonal():
    g = torch.Generator().manual_seed(2)
    b1, b2 = _random_xywh(64, g), _random_xywh(64, g)
    xyxy1 = torch.cat((b1[:, :2] - b1[:, 2:] / 2, b1[:, :2] + b1[:, 2:] / 2), 1)
    xyxy2 = torch.cat((b2[:, :2] - b2[:, 2:] / 2, b2[:, :2] + b2[:, 2:] / 2), 1)
    assert torch.allclose(paired_iou(b1, b2, "iou"), box_iou(xyxy1, xyxy2).diagonal(), atol=1e-6)
    assert torch.allclose(
        paired_iou(xyxy1, xyxy2, "giou", xywh=False), generalized_box_iou(xyxy1, xyxy2).diagonal(), atol=1e-6
    )


def test_diou_is_between_ciou_and_iou():
    g = torch.Generator().manual_seed(3)
    b1, b2 = _random_xywh(200, g), _random_xywh(200, g)
    iou, diou, ciou = (paired_iou(b1, b2, k) for k in ("iou", "diou", "ciou"))
    assert (diou <= iou + 1e-9).all() and (ciou <= diou + 1e-9).all()
    assert (diou < iou).any()


def test_paired_iou_broadcasts_and_rejects_bad_input():
    box = torch.tensor([5.0, 5.0, 2.0, 2.0])
    many = torch.tensor([[5.0, 5.0, 2.0, 2.0], [6.0, 5.0, 2.0, 2.0]])
    assert torch.allclose(paired_iou(box, many), torch.tensor([1.0, 1 / 3]), atol=1e-6)
    with pytest.raises(ValueError, match="4 coordinates"):
        paired_iou(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="unknown IoU kind"):
        paired_iou(box, box, kind="eiou")  # type: ignore[arg-type]
