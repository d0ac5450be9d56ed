"""Multi-label AP, mAP and F1 against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unified.evaluation.multilabel import (
    MultiLabelEvaluator,
    average_precision,
    f1_scores,
    multilabel_metrics,
)


def test_average_precision_scikit_learn_documentation_example():
    # sklearn.metrics.average_precision_score docstring: y_true [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]
    # gives 0.83333. By hand: ranks 0.8 (+), 0.4 (-), 0.35 (+): 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(5 / 6)


def test_average_precision_with_tied_scores():
    # Sorted: 0.9 (+), 0.8 (-), 0.7 (+), then a tie at 0.4 holding one + and one -.
    # Thresholds: P/R = 1/(1/3), 1/2/(1/3), 2/3/(2/3), 3/5/1, so AP = 1/3 + 0 + 2/9 + 1/5 = 34/45.
    targets = np.array([1, 0, 1, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.4])
    assert average_precision(targets, scores) == pytest.approx(34 / 45)
    # Reordering tied entries changes nothing.
    assert average_precision(targets[[0, 1, 2, 4, 3]], scores[[0, 1, 2, 4, 3]]) == pytest.approx(34 / 45)


def test_average_precision_edge_cases():
    assert average_precision(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    assert math.isnan(average_precision(np.zeros(3), np.array([0.1, 0.2, 0.3])))
    # All scores tied: one threshold, precision = prevalence.
    assert average_precision(np.array([1, 0, 0, 0]), np.full(4, 0.5)) == pytest.approx(0.25)


def test_map_skips_classes_without_positives_and_f1_by_hand():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.6], [0.3, 0.7, 0.1], [0.6, 0.4, 0.2], [0.1, 0.8, 0.3]])
    out = multilabel_metrics(targets, scores, ["cat", "dog", "scene"], threshold=0.5)
    # cat: positives rank 1 and 2 -> AP 1. dog: ranking 0.8 (-), 0.7 (+), 0.4 (+) -> 1/2 * 1/2 + 1/2 * 2/3.
    assert out["AP/cat"] == pytest.approx(1.0)
    assert out["AP/dog"] == pytest.approx(0.25 + 1 / 3)
    assert math.isnan(out["AP/scene"])
    assert out["mAP"] == pytest.approx((1.0 + 0.25 + 1 / 3) / 2)
    # At 0.5: cat predicted on images 0 and 2 (both right): F1 1. dog predicted on 1 (right) and 3
    # (wrong), missed on 2: tp 1, fp 1, fn 1 -> F1 0.5. scene predicted on 0 (wrong): F1 0.
    assert out["F1/cat"] == pytest.approx(1.0)
    assert out["F1/dog"] == pytest.approx(0.5)
    assert out["F1/scene"] == pytest.approx(0.0)
    # Micro: tp 3, fp 2, fn 1.
    assert out["F1"] == pytest.approx(6 / 9)
    assert out["precision"] == pytest.approx(3 / 5)
    assert out["recall"] == pytest.approx(3 / 4)
    assert out["macro_F1"] == pytest.approx(0.5)


def test_f1_of_a_class_never_present_nor_predicted_is_undefined():
    per_class, micro, _, _ = f1_scores(np.array([[1, 0]]), np.array([[0.9, 0.1]]))
    assert per_class[0] == pytest.approx(1.0)
    assert math.isnan(per_class[1])
    assert micro == pytest.approx(1.0)


def test_evaluator_respects_the_label_mask():
    evaluator = MultiLabelEvaluator(["a", "b"])
    evaluator.update(
        np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[1, 0], [0, 1]]), mask=np.array([True, True])
    )
    # Unlabelled image (all-zero targets) whose scores would ruin the AP of both classes.
    evaluator.update(np.array([[0.99, 0.99]]), np.array([[0, 0]]), mask=np.array([False]))
    assert evaluator.compute()["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        evaluator.update(np.zeros((1, 3)), np.zeros((1, 3)))
