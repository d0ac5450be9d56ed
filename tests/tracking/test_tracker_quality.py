"""Tracking quality on motmetrics' TUD sequences with jittered, thinned ground-truth detections.

Scenario: 10% of boxes dropped, box noise with a standard deviation of 5% of the box size, 10% of the
detections with a low score (0.15-0.45), three seeds on each of TUD-Stadtmitte (179 frames, 10 people)
and TUD-Campus (71 frames, 8 people, crowded crossings). A perfect tracker on these detections tops
out near MOTA 0.9 (dropped boxes are misses). Measured with the default TrackerConfig (mean of the six
runs): MOTA 0.866 / IDF1 0.893 without embeddings, MOTA 0.868 / IDF1 0.929 with embeddings; the bounds
below leave a margin under the worst single run. supervision 0.30.9 ByteTrack on the same detections:
MOTA 0.862 / IDF1 0.882 at our default thresholds (ours: 0.866 / 0.893), MOTA 0.870 / IDF1 0.902 at its
own defaults (ours at the same thresholds: 0.877 / 0.918).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.tracking.mot_synthetic import SEQUENCES, load_gt, make_detections, score_tracks
from unified.tracking import Tracker, TrackerConfig

SEEDS = (0, 1, 2)


def run_ours(frames, use_embeddings: bool, config: TrackerConfig | None = None) -> dict:
    tracker = Tracker(config)
    out = {}
    for frame in sorted(frames):
        f = frames[frame]
        active = tracker.update(f.boxes, f.scores, f.embeddings if use_embeddings else None)
        out[frame] = (
            np.array([t.box for t in active]).reshape(-1, 4),
            np.array([t.track_id for t in active], dtype=int),
        )
    return out


def run_supervision(frames, activation_threshold: float) -> dict:
    sv = pytest.importorskip("supervision", reason="supervision (extra 'track') is not installed")
    with warnings.catch_warnings():
        # ByteTrack is deprecated in supervision 0.28+ but still the reference we compare with.
        warnings.simplefilter("ignore")
        tracker = sv.ByteTrack(track_activation_threshold=activation_threshold)
        out = {}
        for frame in sorted(frames):
            f = frames[frame]
            dets = sv.Detections(
                xyxy=f.boxes.astype(np.float32),
                confidence=f.scores.astype(np.float32),
                class_id=np.zeros(len(f.boxes), dtype=int),
            )
            tracked = tracker.update_with_detections(dets)
            out[frame] = (tracked.xyxy.reshape(-1, 4), np.asarray(tracked.tracker_id, dtype=int))
    return out


@pytest.fixture(scope="module")
def scenarios():
    cases = []
    for sequence in SEQUENCES:
        gt = load_gt(sequence)
        for seed in SEEDS:
            cases.append((sequence, seed, gt, make_detections(gt, seed)))
    return cases


@pytest.fixture(scope="module")
def default_scores(scenarios):
    return {
        mode: [score_tracks(gt, run_ours(frames, mode == "embeddings")) for _, _, gt, frames in scenarios]
        for mode in ("motion", "embeddings")
    }


@pytest.mark.parametrize(
    "mode, min_mota, min_idf1, mean_idf1",
    [("motion", 0.8, 0.8, 0.86), ("embeddings", 0.8, 0.88, 0.91)],
)
def test_tracker_keeps_identities(default_scores, mode, min_mota, min_idf1, mean_idf1):
    rows = default_scores[mode]
    mota = [r["mota"] for r in rows]
    idf1 = [r["idf1"] for r in rows]
    assert min(mota) >= min_mota, mota
    assert min(idf1) >= min_idf1, idf1
    assert np.mean(idf1) >= mean_idf1, idf1


def test_embeddings_reduce_identity_switches(default_scores):
    motion = sum(r["num_switches"] for r in default_scores["motion"])
    appearance = sum(r["num_switches"] for r in default_scores["embeddings"])
    assert appearance <= 2, appearance
    assert appearance < motion
    assert np.mean([r["idf1"] for r in default_scores["embeddings"]]) > np.mean(
        [r["idf1"] for r in default_scores["motion"]]
    )


def test_no_false_positives_from_true_detections(default_scores):
    # Every detection is a jittered true box, so a reported box is never far from its object.
    for rows in default_scores.values():
        assert sum(r["num_false_positives"] for r in rows) <= 6


@pytest.mark.parametrize("activation_threshold", [0.25, 0.5])
def test_at_least_as_good_as_supervision_bytetrack(scenarios, default_scores, activation_threshold):
    # Same operating point for both: supervision treats scores >= activation as high and starts tracks
    # from activation + 0.1; ours is configured to match (0.5 is our default). Means over six runs.
    config = TrackerConfig(high_thresh=activation_threshold, new_track_thresh=activation_threshold + 0.1)
    if config == TrackerConfig():
        ours = default_scores["motion"]
    else:
        ours = [score_tracks(gt, run_ours(frames, False, config)) for _, _, gt, frames in scenarios]
    theirs = [
        score_tracks(gt, run_supervision(frames, activation_threshold)) for _, _, gt, frames in scenarios
    ]
    tolerance = 0.01
    for metric in ("mota", "idf1"):
        mine, reference = np.mean([r[metric] for r in ours]), np.mean([r[metric] for r in theirs])
        assert mine >= reference - tolerance, (metric, mine, reference)
