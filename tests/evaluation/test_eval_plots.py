"""Evaluation plots are written as images and reject mismatched inputs; the numbers behind them are right."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unified.data.kinds.boxes import Boxes
from unified.data.records import ImageRecord
from unified.evaluation.coco import CocoDetectionEvaluator
from unified.evaluation.confusion import ConfusionMatrix
from unified.evaluation.embedding import similarity_metrics, tpr_far_curve
from unified.evaluation.plots import (
    label_statistics,
    plot_class_bars,
    plot_confusion_matrix,
    plot_f1_curve,
    plot_labels,
    plot_pr_curve,
    plot_results,
    plot_tpr_far,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pr_curve_png(tmp_path):
    recall = np.linspace(0, 1, 101)
    precision = np.stack([1 - 0.5 * recall, np.full(101, np.nan), 1 - recall**2], axis=1)
    path = plot_pr_curve(recall, precision, ["a", "b", "c"], tmp_path / "plots" / "pr.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="3 classes but 2 names"):
        plot_pr_curve(recall, precision, ["a", "b"], tmp_path / "x.png")


def test_pr_curve_with_many_classes_and_with_none_defined(tmp_path):
    recall = np.linspace(0, 1, 11)
    many = plot_pr_curve(
        recall, np.random.default_rng(0).random((11, 30)), [str(i) for i in range(30)], tmp_path / "m.png"
    )
    empty = plot_pr_curve(recall, np.full((11, 2), np.nan), ["a", "b"], tmp_path / "e.png")
    assert many.read_bytes()[:8] == PNG_MAGIC and empty.read_bytes()[:8] == PNG_MAGIC


def test_class_bars_png(tmp_path):
    path = plot_class_bars({"AP50": {0: 0.5, 1: float("nan")}, "AP50-95": [0.2, 0.1]}, ["person", "car"],
                           tmp_path / "ap.png", "AP per class")  # fmt: skip
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="AP: 2 values for 3 class names"):
        plot_class_bars({"AP": [0.1, 0.9]}, ["a", "b", "c"], tmp_path / "bad.png", "AP")


def test_f1_confusion_tpr_far_and_results_pngs(tmp_path):
    confidence = np.linspace(0, 1, 11)
    precision, recall = np.tile(confidence[:, None], (1, 2)), np.tile(1 - confidence[:, None], (1, 2))
    precision[:, 1] = recall[:, 1] = np.nan
    assert plot_f1_curve(confidence, precision, recall, ["a", "b"], tmp_path / "f1.png").is_file()
    assert plot_confusion_matrix(np.arange(9).reshape(3, 3), ["a", "b"], tmp_path / "cm.png").is_file()
    with pytest.raises(ValueError, match="for 3 classes"):
        plot_confusion_matrix(np.zeros((3, 3)), ["a", "b", "c"], tmp_path / "bad.png")
    assert plot_tpr_far(np.zeros(0), np.zeros(0), tmp_path / "none.png").is_file()  # no pair: says so
    rows = [{"epoch": 1.0, "lr": 0.01, "loss/total": 3.0, "loss/detect/box": 1.0, "loss/detect/total": 3.0,
             "detect/AP": float("nan")},
            {"epoch": 2.0, "lr": 0.005, "loss/total": 2.0, "loss/detect/box": 0.5, "loss/detect/total": 2.0,
             "detect/AP": 0.4, "detect/IDs": 7.0}]  # fmt: skip
    assert plot_results(rows, tmp_path / "results.png").is_file()
    with pytest.raises(ValueError, match="no row"):
        plot_results([], tmp_path / "empty.png")


def test_the_confusion_matrix_counts_hits_confusions_misses_and_false_alarms():
    matrix = ConfusionMatrix(2, conf=0.25, iou=0.5)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], float)
    found = np.array(
        [[0, 0, 10, 10], [20, 20, 30, 30], [80, 80, 90, 90], [40, 40, 50, 50], [60, 60, 70, 70]], float
    )
    matrix.update(gt, np.array([0, 0, 1, 1]), found, np.array([0.9, 0.8, 0.7, 0.1, 0.9]), np.array([0, 1, 1, 1, 0]),
                  crowd=np.array([False, False, False, True]))  # fmt: skip
    # a hit (0 as 0), a confusion (0 as 1), a false alarm (1 on background), a miss below the confidence
    # (1 as background); the detection on the crowd region counts nowhere
    assert matrix.matrix.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]


def test_precision_and_recall_against_confidence_follow_the_detections():
    coco = CocoDetectionEvaluator(["a"])
    coco.add_ground_truth(1, np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), [0, 0], height=50, width=50)
    coco.add_predictions(1, np.array([[0, 0, 10, 10], [35, 35, 45, 45]]), [0.9, 0.6], [0, 0])
    result = coco.compute()
    at = {round(c, 3): i for i, c in enumerate(result.confidence)}
    # at 0.7 only the hit counts: precision 1, recall 1/2; at 0.5 the false alarm too: precision 1/2
    assert (
        result.precision_at_confidence[at[0.7], 0] == 1.0 and result.recall_at_confidence[at[0.7], 0] == 0.5
    )
    assert (
        result.precision_at_confidence[at[0.5], 0] == 0.5 and result.recall_at_confidence[at[0.5], 0] == 0.5
    )
    assert result.recall_at_confidence[at[0.95], 0] == 0.0


def test_the_tpr_far_curve_agrees_with_the_reported_points():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(0.7, 0.1, 200), rng.normal(0.2, 0.2, 5000)
    fars, tprs = tpr_far_curve(positives, negatives)
    reported = similarity_metrics(positives, negatives, (0.01,))["TPR@FAR=0.01"]
    assert fars[0] == pytest.approx(1 / 5000) and np.all(np.diff(tprs) >= 0)
    assert np.interp(0.01, fars, tprs) == pytest.approx(reported, abs=0.02)
    assert [len(v) for v in tpr_far_curve(positives, np.zeros(0))] == [0, 0]


def test_label_statistics_are_fractions_of_each_image(tmp_path):
    records = [
        ImageRecord("a.png", 100, 50, {"boxes": Boxes(np.array([[0, 0, 50, 25]]), np.array([1]))}),
        ImageRecord("b.png", 10, 10, {"image_labels": np.array([0])}),  # carries no boxes: not counted
    ]
    xywh, classes, images = label_statistics(records)
    assert xywh.tolist() == [[0.25, 0.25, 0.5, 0.5]] and classes.tolist() == [1] and images == 1
    path = plot_labels(records, ["a", "b"], tmp_path / "labels.jpg")
    with Image.open(path) as image:
        assert image.format == "JPEG" and min(image.size) >= 500
    assert plot_labels(records[1:], ["a", "b"], tmp_path / "none.jpg") is None
