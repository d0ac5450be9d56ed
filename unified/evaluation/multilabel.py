"""Multi-label image classification metrics: per-class average precision, mAP and F1.

Average precision follows the usual non-interpolated definition (the one of scikit-learn's
``average_precision_score``): ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds
in decreasing order, tied scores forming one threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one binary problem.

    Args:
        targets: ``(N,)`` 0/1 ground truth.
        scores: ``(N,)`` scores, higher meaning more likely positive.

    Returns:
        AP in ``[0, 1]``, or ``nan`` when there is no positive.
    """
    targets = np.asarray(targets).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if targets.shape != scores.shape:
        raise ValueError(f"targets has {targets.size} entries but scores has {scores.size}")
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, targets = scores[order], targets[order]
    # The last index of each run of equal scores: one threshold per distinct score.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    true_pos = np.cumsum(targets)[last_of_run]
    predicted = last_of_run + 1
    precision = true_pos / predicted
    recall = true_pos / positives
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


def f1_scores(
    targets: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, float, float, float]:
    """Per-class and micro-averaged F1 at a score threshold.

    Args:
        targets: ``(N, C)`` 0/1 ground truth.
        scores: ``(N, C)`` scores; ``score >= threshold`` predicts the label.
        threshold: Decision threshold.

    Returns:
        ``(per_class_f1 (C,), micro_f1, micro_precision, micro_recall)``. A class with neither a
        positive nor a prediction has F1 ``nan`` (nothing to get right or wrong).
    """
    targets = np.asarray(targets).astype(bool)
    predicted = np.asarray(scores, dtype=np.float64) >= threshold
    true_pos = (targets & predicted).sum(axis=0).astype(np.float64)
    false_pos = (~targets & predicted).sum(axis=0).astype(np.float64)
    false_neg = (targets & ~predicted).sum(axis=0).astype(np.float64)
    denominator = 2 * true_pos + false_pos + false_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(denominator > 0, 2 * true_pos / denominator, np.nan)
    tp, fp, fn = true_pos.sum(), false_pos.sum(), false_neg.sum()
    micro_f1 = float(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) > 0 else float("nan")
    micro_precision = float(tp / (tp + fp)) if (tp + fp) > 0 else float("nan")
    micro_recall = float(tp / (tp + fn)) if (tp + fn) > 0 else float("nan")
    return per_class, micro_f1, micro_precision, micro_recall


def multilabel_metrics(
    targets: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """mAP over classes with at least one positive, micro F1/precision/recall, and per-class AP and F1.

    Args:
        targets: ``(N, C)`` 0/1 ground truth.
        scores: ``(N, C)`` scores (probabilities for the threshold to mean anything).
        label_names: Names used in the per-class keys (default: the class index).
        threshold: Decision threshold of the F1 scores.

    Returns:
        ``mAP``, ``F1``, ``precision``, ``recall``, ``macro_F1`` and ``AP/<name>``, ``F1/<name>`` per
        class; ``nan`` where undefined.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, C)")
    num_classes = targets.shape[1]
    names = list(label_names) if label_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} label names for {num_classes} classes")
    aps = np.array([average_precision(targets[:, c], scores[:, c]) for c in range(num_classes)])
    per_class_f1, micro_f1, micro_precision, micro_recall = f1_scores(targets, scores, threshold)
    defined_ap = aps[~np.isnan(aps)]
    defined_f1 = per_class_f1[~np.isnan(per_class_f1)]
    out = {
        "mAP": float(defined_ap.mean()) if defined_ap.size else float("nan"),
        "F1": micro_f1,
        "precision": micro_precision,
        "recall": micro_recall,
        "macro_F1": float(defined_f1.mean()) if defined_f1.size else float("nan"),
    }
    out.update({f"AP/{name}": float(ap) for name, ap in zip(names, aps)})
    out.update({f"F1/{name}": float(f1) for name, f1 in zip(names, per_class_f1)})
    return out


class MultiLabelEvaluator:
    """Accumulates image-level scores and targets over a split.

    Args:
        label_names: The image-level label names (classes first, then scene labels).
        threshold: Decision threshold of the F1 scores.
    """

    def __init__(self, label_names: Sequence[str], threshold: float = 0.5) -> None:
        self.label_names = list(label_names)
        self.threshold = threshold
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def update(self, scores: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add ``(B, C)`` scores and targets; ``mask`` ``(B,)`` keeps only images that carry labels."""
        scores = np.asarray(scores, dtype=np.float64)
        targets = np.asarray(targets)
        if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(self.label_names):
            raise ValueError(
                f"scores {scores.shape} and targets {targets.shape} must be (B, {len(self.label_names)})"
            )
        if mask is not None:
            keep = np.asarray(mask, dtype=bool).reshape(-1)
            scores, targets = scores[keep], targets[keep]
        self._scores.append(scores)
        self._targets.append(targets)

    def compute(self) -> dict[str, float]:
        """The metrics of :func:`multilabel_metrics` over everything added."""
        width = len(self.label_names)
        scores = np.concatenate(self._scores) if self._scores else np.zeros((0, width))
        targets = np.concatenate(self._targets) if self._targets else np.zeros((0, width))
        return multilabel_metrics(targets, scores, self.label_names, self.threshold)


__all__ = ["MultiLabelEvaluator", "average_precision", "f1_scores", "multilabel_metrics"]
