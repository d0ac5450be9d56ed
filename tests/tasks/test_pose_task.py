"""The ``pose`` task's metrics on hand-made cases with known answers (pycocotools, OKS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import TINY_MODEL
from unified.model import build_model
from unified.structures import DatasetInfo

K = 5
SIGMAS = [0.05, 0.06, 0.07, 0.08, 0.09]
INFO = DatasetInfo(
    ["thing"],
    label_kinds=("boxes", "keypoints"),
    kind_options={"keypoints": {"kpt_shape": [K, 3], "flip_idx": [1, 0, 2, 4, 3], "sigmas": SIGMAS}},
)
BOX = np.array([8.0, 12.0, 48.0, 52.0])  # 40 x 40 px in a 64 x 64 image, no letterbox
POINTS = np.array([[12, 16, 2], [40, 18, 2], [28, 30, 1], [14, 48, 2], [44, 44, 0]], dtype=np.float64)


def _pose():
    model = build_model(TINY_MODEL, tasks=["pose"], info=INFO)
    return model.tasks["pose"]


def _batch() -> dict:
    xywh = [
        (BOX[0] + BOX[2]) / 2 / 64,
        (BOX[1] + BOX[3]) / 2 / 64,
        (BOX[2] - BOX[0]) / 64,
        (BOX[3] - BOX[1]) / 64,
    ]
    keypoints = torch.tensor(POINTS).float()
    keypoints[:, :2] /= 64
    return {
        "images": torch.zeros(1, 3, 64, 64),
        "boxes": torch.tensor([[0.0, 0.0, *xywh]]),
        "keypoints": keypoints[None],
        "label_mask": {"boxes": torch.tensor([True]), "keypoints": torch.tensor([True])},
        "meta": [{"image_id": 0, "path": "x", "orig_shape": (64, 64), "ratio": 1.0, "pad": (0, 0)}],
    }


def _predictions(points: np.ndarray) -> dict:
    return {
        "detect": [
            {
                "boxes": torch.from_numpy(BOX)[None],
                "scores": torch.tensor([0.9]),
                "classes": torch.tensor([0]),
            }
        ],
        "pose": [{"keypoints": torch.tensor(points)[None].float()}],
    }


def test_a_perfect_prediction_scores_one():
    evaluator = _pose().make_evaluator()
    evaluator.update(_predictions(POINTS), _batch())
    assert evaluator.compute() == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}


@pytest.mark.parametrize("shift", [1.5, 3.0, 6.0])
def test_a_shifted_prediction_scores_what_its_oks_says(shift):
    shifted = POINTS.copy()
    shifted[:, :2] += shift
    evaluator = _pose().make_evaluator()
    evaluator.update(_predictions(shifted), _batch())
    metrics = evaluator.compute()
    # COCO's OKS by hand: labelled keypoints only, area = the ground truth's (here its box), k = 2 sigma.
    area = (BOX[2] - BOX[0]) * (BOX[3] - BOX[1])
    labelled = POINTS[:, 2] > 0
    d2 = 2 * shift**2
    oks = np.mean([math.exp(-d2 / (2 * area * (2 * s) ** 2)) for s, v in zip(SIGMAS, labelled) if v])
    thresholds = np.linspace(0.5, 0.95, 10)
    assert metrics["AP50"] == pytest.approx(float(oks >= 0.5))
    assert metrics["AP"] == pytest.approx(float(np.mean(oks >= thresholds)))


def test_the_keypoint_loss_falls_when_the_model_fits_one_image():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, tasks=["pose"], info=INFO)
    batch = _batch()
    batch["images"] = torch.rand(1, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        terms = model.losses(batch)["pose"]
        if first is None:
            first = float(terms["oks"].detach())
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    assert float(model.losses(batch)["pose"]["oks"].detach()) < 0.6 * first  # measured: 0.91 -> 0.47
