import pytest
import torch
from torchvision.ops import box_iou

from unified.ops import non_max_suppression, xywh_to_xyxy


def _random_decoded(batch: int, rows: int, num_classes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, rows, 2, generator=g) * 100
    wh = torch.rand(batch, rows, 2, generator=g) * 30 + 2
    obj = torch.rand(batch, rows, 1, generator=g)
    cls = torch.rand(batch, rows, num_classes, generator=g)
    return torch.cat((xy, wh, obj, cls), -1)


def _brute_force(decoded, conf_thres, iou_thres, max_det, multi_label, agnostic, classes=None):
    """Greedy NMS written out: every candidate against every kept box of its group."""
    results = []
    for image in decoded:
        num_classes = image.shape[1] - 5
        candidates = []  # (score, class, row)
        for row, x in enumerate(image.tolist()):
            scores = [x[4]] if num_classes == 1 else [x[4] * c for c in x[5:]]
            if multi_label:
                candidates += [(s, c, row) for c, s in enumerate(scores) if s > conf_thres]
            else:
                best = max(range(len(scores)), key=lambda c: scores[c])
                if scores[best] > conf_thres:
                    candidates.append((scores[best], best, row))
        if classes is not None:
            candidates = [c for c in candidates if c[1] in classes]
        candidates.sort(key=lambda c: -c[0])
        boxes = xywh_to_xyxy(image[:, :4])
        overlap = box_iou(boxes, boxes).tolist()
        kept = []
        for score, cls, row in candidates:
            same_group = [k for k in kept if agnostic or k[1] == cls]
            if all(overlap[row][k[2]] <= iou_thres for k in same_group):
                kept.append((score, cls, row))
        results.append(kept[:max_det])
    return results


@pytest.mark.parametrize(
    ("multi_label", "agnostic", "classes", "num_classes"),
    [
        (False, False, None, 4),
        (True, False, None, 4),
        (False, True, None, 4),
        (True, False, [1, 3], 4),
        (False, False, None, 1),
    ],
)
def test_nms_equals_brute_force(multi_label, agnostic, classes, num_classes):
    decoded = _random_decoded(3, 120, num_classes, seed=num_classes + 10 * multi_label)
    decoded[1, :, 4] *= 0.1  # a sparse image
    decoded[2, :, 4] = 0.0  # an image with nothing
    conf, iou, max_det = 0.05, 0.45, 25
    got = non_max_suppression(
        decoded, conf, iou, max_det, classes=classes, multi_label=multi_label, agnostic=agnostic
    )
    expected = _brute_force(decoded, conf, iou, max_det, multi_label, agnostic, classes)
    assert len(got) == 3
    for image, (out, ref) in enumerate(zip(got, expected)):
        assert set(out) == {"boxes", "scores", "classes", "index"}
        assert out["classes"].dtype == torch.long and out["index"].dtype == torch.long
        assert list(zip(out["classes"].tolist(), out["index"].tolist())) == [(c, r) for _, c, r in ref]
        assert out["scores"].tolist() == pytest.approx([s for s, _, _ in ref], rel=1e-6)
        assert torch.allclose(out["boxes"], xywh_to_xyxy(decoded[image, out["index"], :4]))
    assert len(got[0]["scores"]) == max_det  # the cap was reached where boxes were many
    assert len(got[2]["scores"]) == 0 and got[2]["boxes"].shape == (0, 4)


def test_score_is_objectness_times_class_probability():
    decoded = torch.tensor([[[50.0, 50.0, 10.0, 10.0, 0.5, 0.2, 0.8]]])
    out = non_max_suppression(decoded, conf_thres=0.1)[0]
    assert out["scores"].tolist() == pytest.approx([0.4])
    assert out["classes"].tolist() == [1] and out["index"].tolist() == [0]
    assert out["boxes"].tolist() == [[45.0, 45.0, 55.0, 55.0]]


def test_max_candidates_keeps_the_best_scored():
    decoded = _random_decoded(1, 300, 3, seed=4)
    few = non_max_suppression(decoded, 0.0, 0.5, max_det=300, max_candidates=20)[0]
    full = non_max_suppression(decoded, 0.0, 0.5, max_det=300)[0]
    assert len(few["scores"]) <= 20
    assert few["scores"][0] == full["scores"][0]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="5 \\+ nc"):
        non_max_suppression(torch.zeros(2, 10, 5))
    with pytest.raises(ValueError, match="iou_thres"):
        non_max_suppression(torch.zeros(1, 10, 6), iou_thres=1.5)
