"""Tracker behaviour on small hand-made scenes: assignment, life cycle, stages, inputs."""

from __future__ import annotations

import numpy as np
import pytest

from unified.config import ConfigError, load_config
from unified.tracking import Tracker, TrackerConfig, TrackState
from unified.tracking.tracker import iou_matrix, linear_assignment


def box(cx: float, cy: float, w: float = 20.0, h: float = 40.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def step(tracker: Tracker, boxes, scores=None, embeddings=None, classes=None):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9) if scores is None else np.asarray(scores, dtype=float)
    return tracker.update(boxes, scores, embeddings, classes)


def ids(active) -> list[int]:
    return [t.track_id for t in active]


# --- assignment ---------------------------------------------------------------------------------------


def test_linear_assignment_leaves_pairs_above_threshold_unmatched():
    cost = np.array([[0.1, 0.5], [0.5, 0.95]])
    # Threshold 0.8: (0,0) alone costs 0.1 + 0.8 (row 1 and column 1 unmatched) < (0,1)+(1,0) = 1.0.
    assert linear_assignment(cost, 0.8) == ([(0, 0)], [1], [1])
    # Threshold 1.0: leaving both unmatched costs 1.0 more, so the cross pairing (1.0) wins over 1.1,
    # and (1,1) = 0.95 would even be allowed but (0,0)+(1,1) = 1.05 is dearer.
    assert linear_assignment(cost, 1.0) == ([(0, 1), (1, 0)], [], [])


def test_linear_assignment_handles_forbidden_and_empty():
    cost = np.array([[np.inf, 0.2], [np.inf, np.inf]])
    assert linear_assignment(cost, 0.5) == ([(0, 1)], [1], [0])
    assert linear_assignment(np.zeros((0, 3)), 0.5) == ([], [], [0, 1, 2])
    assert linear_assignment(np.zeros((2, 0)), 0.5) == ([], [0, 1], [])


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20.0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10.0]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150], [0.25, 100 / 400]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 2)
    assert iou_matrix(np.array([[0, 0, 0, 5.0]]), np.array([[0, 0, 0, 5.0]]))[0, 0] == 0.0  # no 0/0


def test_iou_matrix_equals_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (2, 12, 2))
    boxes = np.concatenate([corners.min(axis=0), corners.max(axis=0)], axis=1)
    expected = box_iou(torch.from_numpy(boxes[:5]), torch.from_numpy(boxes[5:])).numpy()
    np.testing.assert_allclose(iou_matrix(boxes[:5], boxes[5:]), expected, rtol=1e-12)


# --- life cycle ---------------------------------------------------------------------------------------


def test_ids_start_at_one_and_first_frame_is_confirmed_at_once():
    tracker = Tracker()
    assert ids(step(tracker, [box(50, 50), box(150, 50)])) == [1, 2]


def test_a_new_track_is_reported_only_after_a_second_sighting():
    tracker = Tracker()
    step(tracker, [box(50, 50)])
    active = step(tracker, [box(51, 50), box(300, 300)])
    assert ids(active) == [1]
    assert [t.state for t in tracker.tracks] == [TrackState.TRACKED, TrackState.TENTATIVE]
    assert ids(step(tracker, [box(52, 50), box(301, 300)])) == [1, 2]


def test_a_tentative_track_without_a_second_sighting_is_dropped():
    tracker = Tracker()
    step(tracker, [box(50, 50)])
    step(tracker, [box(51, 50), box(300, 300)])
    step(tracker, [box(52, 50)])
    assert ids(step(tracker, [box(53, 50), box(302, 300)])) == [1]
    assert max(t.track_id for t in tracker.tracks) == 3  # the reappearance got a fresh id


def test_identity_survives_a_gap_shorter_than_the_lost_buffer():
    tracker = Tracker(TrackerConfig(lost_buffer=5))
    for i in range(5):
        step(tracker, [box(50 + 3 * i, 50)])
    for _ in range(4):
        assert step(tracker, []) == []
    assert tracker.tracks[0].state == TrackState.LOST
    # The Kalman filter kept the object moving at 3 px per frame while it was unseen.
    assert ids(step(tracker, [box(50 + 3 * 9, 50)])) == [1]


def test_a_track_lost_for_longer_than_the_buffer_is_removed():
    tracker = Tracker(TrackerConfig(lost_buffer=3))
    step(tracker, [box(50, 50)])
    step(tracker, [box(50, 50)])
    for _ in range(4):
        step(tracker, [])
    assert tracker.tracks == []
    step(tracker, [box(50, 50)])
    assert ids(step(tracker, [box(50, 50)])) == [2]


def test_low_score_detections_extend_tracks_but_never_start_them():
    tracker = Tracker()
    step(tracker, [box(50, 50)], [0.9])
    # The object is occluded: only a low-score detection remains; a second low one is elsewhere.
    active = step(tracker, [box(51, 50), box(300, 300)], [0.3, 0.3])
    assert ids(active) == [1]
    assert active[0].score == pytest.approx(0.3)
    assert len(tracker.tracks) == 1
    # Below low_thresh a detection is ignored entirely.
    assert step(tracker, [box(52, 50)], [0.05]) == []


def test_reset_restarts_identities():
    tracker = Tracker()
    step(tracker, [box(50, 50), box(150, 50)])
    tracker.reset()
    assert tracker.frame_id == 0
    assert ids(step(tracker, [box(500, 50)])) == [1]


def test_reported_fields():
    tracker = Tracker()
    (track,) = step(tracker, [box(50, 60)], [0.8], classes=np.array([3]))
    np.testing.assert_allclose(track.box, box(50, 60))
    assert (track.score, track.cls, track.detection_index) == (pytest.approx(0.8), 3, 0)
    (track,) = step(tracker, [box(300, 300), box(51, 60)], [0.95, 0.7], classes=np.array([3, 3]))
    assert track.detection_index == 1


def test_classes_never_mix():
    tracker = Tracker()
    step(tracker, [box(50, 50)], classes=np.array([0]))
    step(tracker, [box(50, 50)], classes=np.array([0]))
    step(tracker, [box(51, 50)], classes=np.array([1]))
    assert tracker.tracks[0].state == TrackState.LOST
    assert tracker.tracks[0].cls == 0


# --- appearance ---------------------------------------------------------------------------------------


def crossing(tracker: Tracker, with_embeddings: bool) -> list[list[int]]:
    """Two people walk towards each other; while they overlap only one detection is seen."""
    rng = np.random.default_rng(0)
    features = np.eye(2, 16)
    timeline = []
    for t in range(30):
        a, b = 40 + 4 * t, 160 - 4 * t
        boxes, idents = [box(a, 50), box(b, 50)], [0, 1]
        if 12 <= t <= 17:  # b hides behind a
            boxes, idents = [box(a, 50)], [0]
        emb = features[idents] + rng.normal(scale=0.05, size=(len(idents), 16)) if with_embeddings else None
        active = step(tracker, boxes, embeddings=emb)
        timeline.append({int(i): t.track_id for t in active for i in [idents[t.detection_index]]})
    return timeline


def test_embeddings_keep_identities_through_a_crossing():
    timeline = crossing(Tracker(), with_embeddings=True)
    assert timeline[0] == {0: 1, 1: 2}
    assert timeline[-1] == {0: 1, 1: 2}


def test_appearance_gate_refuses_a_different_looking_overlapping_detection():
    config = TrackerConfig(appearance_gate=0.5)
    tracker = Tracker(config)
    red, blue = np.eye(2, 8)
    step(tracker, [box(50, 50)], embeddings=red[None])
    step(tracker, [box(50, 50)], embeddings=red[None])
    # Same place, different look: not the same object, so track 1 is lost and a new one starts.
    assert step(tracker, [box(51, 50)], embeddings=blue[None]) == []
    assert [t.state for t in tracker.tracks] == [TrackState.LOST, TrackState.TENTATIVE]
    # Without the gate, IoU alone hands the detection to track 1.
    tracker = Tracker(TrackerConfig(appearance_gate=None))
    step(tracker, [box(50, 50)], embeddings=red[None])
    step(tracker, [box(50, 50)], embeddings=red[None])
    assert ids(step(tracker, [box(51, 50)], embeddings=blue[None])) == [1]


def test_embedding_is_smoothed_by_ema():
    tracker = Tracker(TrackerConfig(feature_momentum=0.9))
    e1, e2 = np.eye(2, 4)
    near = 0.8 * e1 + 0.6 * e2  # cosine 0.8 with e1: matches through appearance
    step(tracker, [box(50, 50)], embeddings=e1[None])
    step(tracker, [box(50, 50)], embeddings=near[None])
    expected = 0.9 * e1 + 0.1 * near
    np.testing.assert_allclose(tracker.tracks[0].feature, expected / np.linalg.norm(expected))


def test_motion_gate_blocks_an_appearance_match_far_away():
    tracker = Tracker()
    e = np.eye(1, 8)
    step(tracker, [box(50, 50)], embeddings=e)
    step(tracker, [box(50, 50)], embeddings=e)
    # Same appearance but 400 px away in one frame: physically implausible, a new object.
    assert step(tracker, [box(450, 50)], embeddings=e) == []
    assert tracker.tracks[0].state == TrackState.LOST


# --- inputs and config --------------------------------------------------------------------------------


def test_bad_inputs_are_rejected_with_the_frame_named():
    tracker = Tracker()
    with pytest.raises(ValueError, match="frame 1: 2 boxes but 1 scores"):
        tracker.update(np.zeros((2, 4)), np.ones(1))
    with pytest.raises(ValueError, match=r"boxes must be \(n, 4\)"):
        tracker.update(np.zeros((2, 5)), np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        tracker.update(np.array([[0, 0, np.nan, 1]]), np.ones(1))
    with pytest.raises(ValueError, match="embeddings"):
        tracker.update(np.array([box(5, 5)]), np.ones(1), np.ones((2, 8)))
    step(tracker, [box(5, 5)], embeddings=np.ones((1, 8)))
    with pytest.raises(ValueError, match="embedding size 4 differs"):
        step(tracker, [box(5, 5)], embeddings=np.ones((1, 4)))


def test_empty_frames_and_degenerate_boxes():
    tracker = Tracker()
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)) == []
    assert tracker.update(np.array([[10, 10, 10, 30.0]]), np.ones(1)) == []  # zero width: skipped
    assert tracker.tracks == []


def test_config_is_validated_and_loads_from_yaml(tmp_path):
    with pytest.raises(ConfigError, match="low_thresh"):
        TrackerConfig(low_thresh=0.7, high_thresh=0.5)
    path = tmp_path / "tracker.yaml"
    path.write_text("high_thresh: 0.4\nlost_buffer: 60\nappearance_gate: null\n")
    config = load_config(TrackerConfig, path, overrides=["fuse_score=false"])
    assert (config.high_thresh, config.lost_buffer, config.appearance_gate, config.fuse_score) == (
        0.4,
        60,
        None,
        False,
    )
    with pytest.raises(ConfigError, match="Did you mean 'lost_buffer'"):
        load_config(TrackerConfig, data={"lost_bufer": 3})
