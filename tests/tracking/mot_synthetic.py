"""Detections made from motmetrics' bundled MOTChallenge ground truth (TUD-Campus, TUD-Stadtmitte).

Ground-truth boxes become detections with Gaussian jitter, random drops, some low scores, and (for
embedding mode) one random unit vector per identity plus noise. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unified.evaluation.mot import MotEvaluator

SEQUENCES = ("TUD-Stadtmitte", "TUD-Campus")


def motmetrics_data() -> Path:
    """Folder of the MOTChallenge sample data shipped inside the motmetrics package."""
    import motmetrics

    return Path(motmetrics.__file__).parent / "data"


def load_gt(sequence: str) -> np.ndarray:
    """``(rows, 10)`` ground truth: frame, id, x, y, w, h, ..."""
    return np.loadtxt(motmetrics_data() / sequence / "gt.txt", delimiter=",")


@dataclass
class Frame:
    boxes: np.ndarray  # (n, 4) xyxy
    scores: np.ndarray
    embeddings: np.ndarray
    identities: np.ndarray


def make_detections(
    gt: np.ndarray,
    seed: int,
    drop: float = 0.1,
    jitter: float = 0.05,
    low_fraction: float = 0.1,
    dim: int = 32,
    embedding_noise: float = 0.1,
) -> dict[int, Frame]:
    """Per-frame detections from ground truth.

    Args:
        gt: Ground-truth rows.
        seed: Seed of every random choice.
        drop: Probability that a ground-truth box yields no detection in a frame.
        jitter: Standard deviation of box noise, as a fraction of the box width (x, w) or height (y, h).
        low_fraction: Share of detections given a low score in ``[0.15, 0.45]`` (others: ``[0.6, 1]``).
        dim: Embedding size.
        embedding_noise: Standard deviation of the per-dimension noise added to the identity vectors.
    """
    rng = np.random.default_rng(seed)
    identities = gt[:, 1].astype(int)
    prototypes = rng.normal(size=(identities.max() + 1, dim))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    frames = {}
    for frame in np.unique(gt[:, 0]).astype(int):
        rows = gt[gt[:, 0] == frame]
        rows = rows[rng.random(len(rows)) >= drop]
        xywh = rows[:, 2:6].copy()
        scale = np.concatenate([xywh[:, 2:4], xywh[:, 2:4]], axis=1)
        xywh += rng.normal(size=xywh.shape) * jitter * scale
        xywh[:, 2:] = np.maximum(xywh[:, 2:], 2.0)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        scores = rng.uniform(0.6, 1.0, len(rows))
        low = rng.random(len(rows)) < low_fraction
        scores[low] = rng.uniform(0.15, 0.45, int(low.sum()))
        ids = rows[:, 1].astype(int)
        embeddings = prototypes[ids] + rng.normal(size=(len(rows), dim)) * embedding_noise
        frames[int(frame)] = Frame(boxes, scores, embeddings, ids)
    return frames


def score_tracks(gt: np.ndarray, tracks: dict[int, tuple[np.ndarray, np.ndarray]], name: str = "seq") -> dict:
    """MOT metrics of ``{frame: (boxes xyxy, ids)}`` against ground truth."""
    evaluator = MotEvaluator()
    for frame in np.unique(gt[:, 0]).astype(int):
        rows = gt[gt[:, 0] == frame]
        gt_boxes = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
        boxes, ids = tracks.get(frame, (np.zeros((0, 4)), np.zeros(0, dtype=int)))
        evaluator.update(name, frame, gt_boxes, rows[:, 1].astype(int), boxes, ids)
    return evaluator.compute()[name]
