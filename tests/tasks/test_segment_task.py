"""The ``segment`` task on hand-made cases with known answers: mask AP (pycocotools), the letterbox undone,
the mask loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from tests.conftest import TINY_MODEL
from unified.model import build_model
from unified.structures import DatasetInfo
from unified.tasks.segment import encode_masks, ground_truth_masks

INFO = DatasetInfo(["thing"], label_kinds=("boxes", "masks"))
BOX = np.array([8.0, 12.0, 48.0, 52.0])  # 40 x 40 px in a 64 x 64 image, no letterbox
STRIDE = 4  # the masks kind's default


def _segment():
    model = build_model(TINY_MODEL, tasks=["segment"], info=INFO)
    return model, model.tasks["segment"]


def _batch() -> dict:
    xywh = [
        (BOX[0] + BOX[2]) / 2 / 64,
        (BOX[1] + BOX[3]) / 2 / 64,
        (BOX[2] - BOX[0]) / 64,
        (BOX[3] - BOX[1]) / 64,
    ]
    masks = torch.zeros(1, 64 // STRIDE, 64 // STRIDE, dtype=torch.uint8)
    x1, y1, x2, y2 = (int(v) // STRIDE for v in BOX)
    masks[0, y1:y2, x1:x2] = 1
    masks[0, y1 : y1 + 3, x1 : x1 + 3] = 0  # not just the box: a notch in one corner
    return {
        "images": torch.zeros(1, 3, 64, 64),
        "boxes": torch.tensor([[0.0, 0.0, *xywh]]),
        "masks": masks,
        "label_mask": {"boxes": torch.tensor([True]), "masks": torch.tensor([True])},
        "meta": [{"image_id": 0, "path": "x", "orig_shape": (64, 64), "ratio": 1.0, "pad": (0, 0)}],
    }


def _predictions(masks: torch.Tensor) -> dict:
    return {
        "detect": [
            {
                "boxes": torch.from_numpy(BOX)[None],
                "scores": torch.tensor([0.9]),
                "classes": torch.tensor([0]),
            }
        ],
        "segment": [{"rles": encode_masks(masks)}],
    }


def test_a_perfect_prediction_scores_one():
    _, task = _segment()
    batch = _batch()
    truth = ground_truth_masks(batch, 0, STRIDE)
    assert truth.shape == (1, 64, 64) and int(truth.sum()) == 40 * 40 - 12 * 12
    evaluator = task.make_evaluator()
    evaluator.update(_predictions(truth), batch)
    assert evaluator.compute() == {
        "AP": pytest.approx(1.0),
        "AP50": pytest.approx(1.0),
        "AP75": pytest.approx(1.0),
    }


@pytest.mark.parametrize("shift", [4, 12, 20])
def test_a_shifted_mask_scores_what_its_iou_says(shift):
    _, task = _segment()
    batch = _batch()
    truth = ground_truth_masks(batch, 0, STRIDE)
    shifted = torch.zeros_like(truth)
    shifted[:, :, shift:] = truth[:, :, :-shift]
    iou = float((truth & shifted).sum()) / float((truth | shifted).sum())
    evaluator = task.make_evaluator()
    evaluator.update(_predictions(shifted), batch)
    metrics = evaluator.compute()
    thresholds = np.linspace(0.5, 0.95, 10)
    assert not np.isclose(thresholds, iou).any()  # no threshold on the edge
    assert metrics["AP50"] == pytest.approx(float(iou >= 0.5))
    assert metrics["AP75"] == pytest.approx(float(iou >= 0.75))
    assert metrics["AP"] == pytest.approx(float(np.mean(iou >= thresholds)))


def test_nothing_to_measure_is_nan_and_no_prediction_is_zero():
    _, task = _segment()
    batch = _batch()
    evaluator = task.make_evaluator()
    evaluator.update(
        _predictions(torch.zeros(0, 64, 64, dtype=torch.bool)),
        {**batch, "label_mask": {"boxes": torch.tensor([True]), "masks": torch.tensor([False])}},
    )
    assert all(np.isnan(v) for v in evaluator.compute().values())
    evaluator = task.make_evaluator()
    empty = _predictions(torch.zeros(0, 64, 64, dtype=torch.bool))
    empty["detect"] = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "classes": torch.zeros(0)}]
    evaluator.update(empty, batch)
    assert evaluator.compute() == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


LETTERBOX = {"image_id": 0, "path": "x", "orig_shape": (64, 128), "ratio": 0.5, "pad": (0.0, 16.0)}


def test_ground_truth_masks_undo_the_letterbox():
    # A 128 x 64 original letterboxed into 64 x 64: halved, 16 px of padding above and below.
    masks = torch.zeros(1, 16, 16, dtype=torch.uint8)
    masks[0, 6:10, 2:6] = 1  # input pixels x 8..24, y 24..40
    batch = {"boxes": torch.zeros(1, 6), "masks": masks, "meta": [LETTERBOX]}
    truth = ground_truth_masks(batch, 0, STRIDE)
    expected = torch.zeros(1, 64, 128, dtype=torch.bool)
    expected[0, 16:48, 16:48] = True  # (input - pad) / ratio
    assert torch.equal(truth, expected)


def test_predicted_masks_are_cut_to_their_box_and_mapped_to_the_original():
    _, task = _segment()
    protos = torch.ones(1, 16, 16) * 10.0  # one prototype, every pixel confident
    coeffs = torch.ones(1, 1)
    boxes_input = torch.tensor([[8.0, 20.0, 40.0, 44.0]])
    masks = task.assemble(coeffs, protos, boxes_input, (64, 64), LETTERBOX)
    expected = torch.zeros(1, 64, 128, dtype=torch.bool)
    expected[0, 8:56, 16:80] = True
    assert masks.dtype == torch.bool and torch.equal(masks, expected)
    rle = encode_masks(masks)[0]
    assert coco_mask.area(rle) == 48 * 64 and rle["size"] == [64, 128]


def test_postprocess_gives_an_rle_per_detection_in_chunks_like_all_at_once(monkeypatch):
    model, task = _segment()
    model.eval()
    from unified.engine.evaluate import predict

    batch = _batch()
    images = torch.rand(1, 3, 64, 64)
    monkeypatch.setattr(type(task), "CHUNK", 2)  # several chunks even for a few detections
    with torch.no_grad():
        predictions = predict(model, images, batch["meta"])
        outputs = model(images)
    det = predictions["detect"][0]
    k = len(det["scores"])
    assert k > 2, "the biased tiny model should keep more detections than one chunk"
    rles = predictions["segment"][0]["rles"]
    assert len(rles) == k and all(rle["size"] == [64, 64] for rle in rles)
    monkeypatch.setattr(type(task), "CHUNK", 10_000)
    whole = task.assemble(
        outputs["segment"]["decoded"][0, det["index"]].float(), outputs["segment"]["protos"][0].float(),
        det["boxes_input"].float(), (64, 64), batch["meta"][0],
    )  # fmt: skip
    decoded = np.stack([coco_mask.decode(rle) for rle in rles]).astype(bool)
    np.testing.assert_array_equal(decoded, whole.numpy())


def test_no_masks_in_the_batch_gives_zero_with_a_gradient_path():
    model, _ = _segment()
    batch = _batch()
    batch["label_mask"] = {"boxes": torch.tensor([True]), "masks": torch.tensor([False])}
    loss = model.losses(batch)["segment"]["mask"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in model.heads["segment"].parameters())


def test_the_mask_loss_falls_when_the_model_fits_one_image():
    torch.manual_seed(0)
    model, _ = _segment()
    batch = _batch()
    batch["images"] = torch.rand(1, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        terms = model.losses(batch)["segment"]
        if first is None:
            first = float(terms["mask"].detach())
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    last = float(model.losses(batch)["segment"]["mask"].detach())
    assert last < 0.5 * first  # measured: 0.69 -> 3e-7 (one image: the prototypes can memorise it)
