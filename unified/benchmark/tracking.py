"""Tracker throughput on detections made from a real ground truth (motmetrics' TUD-Stadtmitte).

The detections are the ground-truth boxes jittered, with some missed, some low-score and a few false
positives, drawn from a seeded generator, so both trackers see the same frames every run.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unified.tracking import Tracker, TrackerConfig


@dataclass
class FrameBoxes:
    """One frame of detections: ``boxes`` xyxy pixels ``(n, 4)``, ``scores`` ``(n,)``."""

    boxes: np.ndarray
    scores: np.ndarray


def motmetrics_sequence(name: str = "TUD-Stadtmitte") -> Path:
    """The ground-truth file of one of the sequences bundled with motmetrics.

    Raises:
        FileNotFoundError: if motmetrics or the sequence is not installed.
    """
    spec = importlib.util.find_spec("motmetrics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("motmetrics is not installed: the tracker benchmark needs its bundled data")
    path = Path(spec.origin).parent / "data" / name / "gt.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: motmetrics' bundled {name} ground truth is missing")
    return path


def detections_from_ground_truth(
    gt_path: Path,
    seed: int = 0,
    jitter: float = 0.05,
    miss_rate: float = 0.1,
    low_score_rate: float = 0.15,
    false_per_frame: float = 0.5,
) -> list[FrameBoxes]:
    """Noisy detections made from a MOTChallenge ``gt.txt``, one entry per frame from 1 to the last."""
    table = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    rng = np.random.default_rng(seed)
    last = int(table[:, 0].max())
    extent = np.array(
        [
            table[:, 2].min(),
            table[:, 3].min(),
            (table[:, 2] + table[:, 4]).max(),
            (table[:, 3] + table[:, 5]).max(),
        ]
    )
    frames = []
    for frame in range(1, last + 1):
        rows = table[table[:, 0] == frame]
        rows = rows[rng.random(len(rows)) >= miss_rate]
        xywh = rows[:, 2:6] + rng.normal(0.0, jitter, (len(rows), 4)) * rows[:, [4, 5, 4, 5]]
        scores = np.where(
            rng.random(len(rows)) < low_score_rate,
            rng.uniform(0.1, 0.5, len(rows)),
            rng.uniform(0.6, 1.0, len(rows)),
        )
        false = rng.poisson(false_per_frame)
        if false:
            wh = rng.uniform(30, 90, (false, 2)) * np.array([1.0, 2.5])
            xy = rng.uniform(extent[:2], extent[2:] - wh)
            xywh = np.concatenate((xywh, np.concatenate((xy, wh), axis=1)))
            scores = np.concatenate((scores, rng.uniform(0.1, 0.7, false)))
        boxes = xywh.copy()
        boxes[:, 2:] += boxes[:, :2]
        frames.append(FrameBoxes(boxes.astype(np.float64), scores.astype(np.float64)))
    return frames


def run_ours(frames: list[FrameBoxes], config: TrackerConfig | None = None) -> int:
    """Run our tracker over ``frames``; returns how many distinct track ids it reported."""
    tracker = Tracker(config)
    ids: set[int] = set()
    for f in frames:
        ids.update(t.track_id for t in tracker.update(f.boxes, f.scores))
    return len(ids)


def supervision_available() -> bool:
    return importlib.util.find_spec("supervision") is not None


def run_supervision(frames: list[FrameBoxes]) -> int:
    """Run ``supervision``'s ByteTrack over ``frames`` (default settings); returns the distinct ids."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OpenCV-missing and deprecation notices of supervision 0.30
        import supervision as sv

        tracker = sv.ByteTrack(frame_rate=25)
        ids: set[int] = set()
        for f in frames:
            detections = sv.Detections(
                xyxy=f.boxes.astype(np.float32),
                confidence=f.scores.astype(np.float32),
                class_id=np.zeros(len(f.boxes), dtype=int),
            )
            result = tracker.update_with_detections(detections)
            if result.tracker_id is not None:
                ids.update(int(i) for i in result.tracker_id)
    return len(ids)


__all__ = [
    "FrameBoxes",
    "detections_from_ground_truth",
    "motmetrics_sequence",
    "run_ours",
    "run_supervision",
    "supervision_available",
]
