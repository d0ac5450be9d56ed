"""COCO mAP through our evaluator equals pycocotools called directly on a hand-made case."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from unified.evaluation.coco import COCO_METRIC_NAMES, CocoDetectionEvaluator

CLASSES = ["person", "car"]

# Per image: (height, width, ground truth [x, y, w, h, class], predictions [x, y, w, h, score, class]).
# Small, medium and large objects; a near-miss, a duplicate, a wrong class and an image without objects.
IMAGES = {
    7: (480, 640, [[10, 10, 20, 20, 0], [100, 100, 80, 120, 0], [300, 200, 150, 100, 1]],
        [[11, 9, 20, 21, 0.9, 0], [105, 98, 78, 118, 0.8, 0], [104, 100, 80, 120, 0.3, 0],
         [290, 210, 150, 100, 0.7, 1], [400, 50, 40, 40, 0.6, 1]]),
    8: (480, 640, [[50, 60, 40, 90, 0], [200, 220, 300, 200, 1]],
        [[55, 70, 40, 90, 0.5, 0], [200, 220, 300, 200, 0.95, 0], [210, 230, 280, 190, 0.85, 1]]),
    9: (480, 640, [], [[5, 5, 30, 30, 0.4, 1]]),
}  # fmt: skip


def direct_pycocotools(images: dict) -> tuple[np.ndarray, np.ndarray]:
    """The reference: a COCO dataset written out by hand, evaluated by pycocotools alone."""
    dataset = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 0, "name": "person"}, {"id": 1, "name": "car"}],
    }
    results = []
    for image_id, (height, width, gts, preds) in images.items():
        dataset["images"].append({"id": image_id, "height": height, "width": width})
        for x, y, w, h, cls in gts:
            dataset["annotations"].append(
                {"id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": cls,
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for x, y, w, h, score, cls in preds:
            results.append({"image_id": image_id, "category_id": cls, "bbox": [x, y, w, h], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, evaluator.eval["precision"]


def ours(images: dict, box_format: str = "xyxy") -> CocoDetectionEvaluator:
    evaluator = CocoDetectionEvaluator(CLASSES)
    for image_id, (height, width, gts, preds) in images.items():
        gt = np.array(gts, dtype=float).reshape(-1, 5)
        pred = np.array(preds, dtype=float).reshape(-1, 6)
        gt_boxes, pred_boxes = gt[:, :4].copy(), pred[:, :4].copy()
        if box_format == "xyxy":
            gt_boxes[:, 2:] += gt_boxes[:, :2]
            pred_boxes[:, 2:] += pred_boxes[:, :2]
        evaluator.add_ground_truth(
            image_id, gt_boxes, gt[:, 4].astype(int), height=height, width=width, box_format=box_format
        )
        evaluator.add_predictions(
            image_id, pred_boxes, pred[:, 4], pred[:, 5].astype(int), box_format=box_format
        )
    return evaluator


@pytest.mark.parametrize("box_format", ["xyxy", "xywh"])
def test_metrics_equal_direct_pycocotools(box_format):
    stats, precision = direct_pycocotools(IMAGES)
    result = ours(IMAGES, box_format).compute()
    assert list(result.metrics) == list(COCO_METRIC_NAMES)
    for index, name in enumerate(COCO_METRIC_NAMES):
        expected = stats[index]
        if expected < 0:
            assert math.isnan(result.metrics[name]), name
        else:
            assert result.metrics[name] == pytest.approx(expected, abs=1e-12), name
    # The case is not trivial: some AP below 1, some above 0.
    assert 0.1 < result.metrics["AP"] < 0.9
    # Per-class AP is pycocotools' precision averaged over IoU thresholds and recall points.
    for k in range(len(CLASSES)):
        p = precision[:, :, k, 0, -1]
        assert result.per_class_ap[k] == pytest.approx(p[p > -1].mean())
        assert result.per_class_ap50[k] == pytest.approx(p[0][p[0] > -1].mean())
    assert result.precision.shape == (101, 2)
    assert np.nanmean(result.precision, axis=0) == pytest.approx(
        [result.per_class_ap50[0], result.per_class_ap50[1]]
    )


def test_results_json_is_read_by_loadres_as_is(tmp_path):
    evaluator = ours(IMAGES)
    path = evaluator.write_results(tmp_path / "results.json")
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = evaluator.coco_gt().loadRes(str(path))
    assert len(loaded.getAnnIds()) == sum(len(preds) for *_, preds in IMAGES.values())
    first = json.loads(path.read_text())[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score"}
    assert first["bbox"] == [11.0, 9.0, 20.0, 21.0]  # xywh, converted from our xyxy input


def test_a_single_perfect_prediction_scores_one():
    # Catches ground-truth annotation ids starting at 0, which pycocotools counts as unmatched.
    evaluator = CocoDetectionEvaluator(["a"])
    evaluator.add_ground_truth(1, np.array([[10, 10, 110, 110]]), [0])
    evaluator.add_predictions(1, np.array([[10, 10, 110, 110]]), [0.9], [0])
    metrics = evaluator.compute().metrics
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
    assert math.isnan(metrics["APs"])  # no small object in the ground truth


def test_no_predictions_gives_zero_not_a_crash(capsys):
    evaluator = CocoDetectionEvaluator(CLASSES)
    evaluator.add_ground_truth(1, np.array([[0, 0, 10, 10], [0, 0, 100, 100]]), [0, 1])
    result = evaluator.compute()
    assert result.metrics["AP"] == 0.0 and result.metrics["AR100"] == 0.0
    assert result.metrics["APs"] == 0.0 and math.isnan(result.metrics["APm"])
    assert result.per_class_ap == {0: 0.0, 1: 0.0}
    assert capsys.readouterr().out == ""


def test_prints_only_when_verbose(capsys):
    ours(IMAGES).compute()
    assert capsys.readouterr().out == ""
    ours(IMAGES).compute(verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_category_ids_map_class_indices():
    evaluator = CocoDetectionEvaluator(["person", "car"], category_ids=[1, 3])
    evaluator.add_ground_truth(1, np.array([[0, 0, 50, 50]]), [1])
    evaluator.add_predictions(1, np.array([[0, 0, 50, 50]]), [0.9], [1])
    assert evaluator.results()[0]["category_id"] == 3
    result = evaluator.compute()
    assert result.per_class_ap[1] == pytest.approx(1.0)
    assert math.isnan(result.per_class_ap[0])


def test_bad_inputs_are_named():
    evaluator = CocoDetectionEvaluator(CLASSES)
    evaluator.add_ground_truth(1, np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="image id registered twice"):
        evaluator.add_ground_truth(1, np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="class index 5 is outside 0..1"):
        evaluator.add_predictions(1, np.array([[0, 0, 1, 1]]), [0.5], [5])
    with pytest.raises(ValueError, match="1 boxes, 2 scores"):
        evaluator.add_predictions(1, np.array([[0, 0, 1, 1]]), [0.5, 0.4], [0])
    evaluator.add_predictions(2, np.array([[0, 0, 1, 1]]), [0.5], [0])
    with pytest.raises(ValueError, match=r"image ids \[2\] that have no ground truth"):
        evaluator.compute()
    with pytest.raises(ValueError, match="category_ids has 1 entries but there are 2 classes"):
        CocoDetectionEvaluator(CLASSES, category_ids=[1])
