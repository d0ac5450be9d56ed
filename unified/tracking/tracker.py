"""A JDE/FairMOT-style online multi-object tracker.

Every frame:

1. Predict every live track one frame ahead with the Kalman filter.
2. High-score detections (``score >= high_thresh``) meet the confirmed tracks, tracked and lost:
   with embeddings, first by appearance fused with motion (``lambda * cosine distance + (1 - lambda)
   * squared Mahalanobis distance``, impossible where the Mahalanobis distance exceeds the chi-square
   95% gate); then, for what is left (and for everything without embeddings), by IoU. With
   embeddings, the IoU stages refuse pairs that look different (``appearance_gate``).
3. Low-score detections (``low_thresh <= score < high_thresh``, often occluded objects) may extend
   tracked tracks left over, by IoU (the second stage of ByteTrack). They never start a track.
   Tracked tracks still unmatched become lost.
4. Tentative tracks (born last frame) take leftover high-score detections by IoU and become confirmed;
   those that find none are dropped.
5. Leftover high-score detections above ``new_track_thresh`` start tentative tracks.
6. Tracks lost for more than ``lost_buffer`` frames are removed; of a lost and a tracked track that
   cover the same object (and look alike, with embeddings), the one with the shorter history goes.

Assignment is Hungarian (``scipy.optimize.linear_sum_assignment``) with a cost threshold: a pair is
matched only if its cost is below the threshold (unmatching a track and a detection costs the threshold).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from unified.config import check
from unified.tracking.kalman import GATING_THRESHOLD_95, KalmanFilter

#: Stands for "impossible" in assignment matrices; finite so the solver always finds a feasible solution.
_FORBIDDEN = 1e6


@dataclass
class TrackerConfig:
    """Tracker thresholds and buffers.

    Attributes:
        high_thresh: Detections at or above this score take part in the first association.
        low_thresh: Detections in ``[low_thresh, high_thresh)`` can only extend tracked tracks;
            detections below it are ignored. Set equal to ``high_thresh`` to disable the second stage.
        new_track_thresh: Least score for an unmatched detection to start a track.
        embedding_match_thresh: Largest fused appearance/motion cost of a match.
        iou_match_thresh: Largest ``1 - IoU`` (score-weighted if ``fuse_score``) of a high-score match.
        low_iou_match_thresh: Largest ``1 - IoU`` of a low-score match.
        tentative_match_thresh: Largest ``1 - IoU`` for a tentative track to be confirmed.
        appearance_weight: ``lambda`` of the fused cost; the rest weighs the Mahalanobis distance.
        appearance_gate: In the high-score IoU stages of embedding mode, a pair whose cosine distance exceeds
            this is refused (an overlapping but different-looking object must not take over a track);
            ``None`` disables the gate.
        gating_threshold: Squared Mahalanobis distance beyond which a pairing is impossible
            (default: chi-square 95% quantile with 4 degrees of freedom).
        fuse_score: Multiply IoU by the detection score in high-score IoU stages, so confident
            detections win ties.
        lost_buffer: Frames a lost track is kept for re-identification before removal.
        feature_momentum: EMA momentum of the track embedding (``f = m * f + (1 - m) * new``).
        duplicate_iou: A lost track overlapping a tracked one by more than this IoU is a duplicate.
        min_box_area: Active tracks with a smaller box area (pixels) are not reported.
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    embedding_match_thresh: float = 0.7
    iou_match_thresh: float = 0.8
    low_iou_match_thresh: float = 0.5
    tentative_match_thresh: float = 0.7
    appearance_weight: float = 0.98
    appearance_gate: float | None = 0.5
    gating_threshold: float = GATING_THRESHOLD_95
    fuse_score: bool = True
    lost_buffer: int = 30
    feature_momentum: float = 0.9
    duplicate_iou: float = 0.85
    min_box_area: float = 0.0

    def __post_init__(self) -> None:
        check(0.0 <= self.low_thresh <= self.high_thresh <= 1.0, "low_thresh", "need 0 <= low <= high <= 1")
        check(0.0 <= self.appearance_weight <= 1.0, "appearance_weight", "must lie in [0, 1]")
        check(0.0 <= self.feature_momentum < 1.0, "feature_momentum", "must lie in [0, 1)")
        check(self.lost_buffer >= 0, "lost_buffer", "must be >= 0")
        check(self.gating_threshold > 0, "gating_threshold", "must be > 0")
        for name in ("iou_match_thresh", "low_iou_match_thresh", "tentative_match_thresh", "duplicate_iou"):
            check(0.0 <= getattr(self, name) <= 1.0, name, "must lie in [0, 1]")


class TrackState(enum.IntEnum):
    """Life cycle of a track."""

    TENTATIVE = 0
    TRACKED = 1
    LOST = 2
    REMOVED = 3


@dataclass(eq=False)
class Track:
    """One tracked object; ``mean`` and ``covariance`` are the Kalman state (cx, cy, w, h + velocities)."""

    track_id: int
    mean: np.ndarray
    covariance: np.ndarray
    score: float
    cls: int | None
    feature: np.ndarray | None
    state: TrackState
    start_frame: int
    last_frame: int
    detection_index: int = -1
    hits: int = 1

    @property
    def box(self) -> np.ndarray:
        """The current box estimate, ``(4,)`` xyxy."""
        return cxcywh_to_xyxy(self.mean[None, :4])[0]


@dataclass(frozen=True)
class TrackedObject:
    """An active track as reported for one frame.

    Attributes:
        track_id: Identity, from 1, unique within one tracker until :meth:`Tracker.reset`.
        box: ``(4,)`` xyxy, the Kalman estimate after this frame's detection.
        score: Score of the detection matched this frame.
        cls: Class of the track (``None`` when classes are not given).
        detection_index: Index of the matched detection in this frame's inputs.
    """

    track_id: int
    box: np.ndarray = field(repr=False)
    score: float
    cls: int | None
    detection_index: int


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` corners to centre and size."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + size / 2, size], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` centre and size to corners (negative sizes are clipped to zero)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = np.maximum(boxes[:, 2:], 0.0) / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes, ``(n, m)``.

    Plain numpy rather than ``torchvision.ops.box_iou``: the tracker is a numpy component, and this
    keeps a tool that tracks a detection file from importing torch and copying arrays every frame.
    """
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def linear_assignment(
    cost: np.ndarray, threshold: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost matching where leaving a row and a column unmatched costs ``threshold``.

    The ``(n, m)`` problem is padded to ``(n + m, m + n)``: every row may pair with its own dummy
    column and every column with its own dummy row at ``threshold / 2`` each, so a real pair is
    chosen only when it is cheaper than leaving both sides unmatched.

    Returns:
        ``(matches [(row, col)], unmatched_rows, unmatched_cols)``, all sorted.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    clean = np.where(np.isfinite(cost), np.minimum(cost, _FORBIDDEN), _FORBIDDEN)
    padded = np.full((n + m, m + n), _FORBIDDEN)
    padded[:n, :m] = clean
    padded[np.arange(n), m + np.arange(n)] = threshold / 2
    padded[n + np.arange(m), np.arange(m)] = threshold / 2
    padded[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(padded)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and clean[r, c] <= threshold]
    matched_rows = {r for r, _ in matches}
    matched_cols = {c for _, c in matches}
    return (
        matches,
        [r for r in range(n) if r not in matched_rows],
        [c for c in range(m) if c not in matched_cols],
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class Tracker:
    """Online tracker: call :meth:`update` once per frame, in order.

    Args:
        config: Thresholds and buffers (defaults when omitted).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.kalman = KalmanFilter()
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart identities at 1 (call between sequences)."""
        self.frame_id = 0
        self.tracks: list[Track] = []
        self._next_id = 1
        self._embedding_dim: int | None = None
        self._corrections: list[tuple[Track, int]] = []

    # --- input checks -------------------------------------------------------------------------------

    def _check_inputs(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        embeddings: np.ndarray | None,
        classes: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        where = f"frame {self.frame_id + 1}"
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{where}: boxes must be (n, 4) xyxy, got shape {boxes.shape}")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if boxes.shape[0] != scores.shape[0]:
            raise ValueError(f"{where}: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"{where}: boxes or scores contain NaN or infinite values")
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float64)
            if embeddings.ndim != 2 or embeddings.shape[0] != boxes.shape[0]:
                raise ValueError(f"{where}: embeddings {embeddings.shape} must be ({boxes.shape[0]}, D)")
            if self._embedding_dim is not None and embeddings.shape[1] != self._embedding_dim:
                raise ValueError(
                    f"{where}: embedding size {embeddings.shape[1]} differs from earlier frames ({self._embedding_dim})"
                )
            self._embedding_dim = embeddings.shape[1]
            embeddings = _unit(embeddings)
        if classes is not None:
            classes = np.asarray(classes).reshape(-1).astype(np.int64)
            if classes.shape[0] != boxes.shape[0]:
                raise ValueError(f"{where}: {classes.shape[0]} classes for {boxes.shape[0]} boxes")
        return boxes, scores, embeddings, classes

    # --- costs --------------------------------------------------------------------------------------

    def _class_gate(
        self, cost: np.ndarray, tracks: list[Track], dets: np.ndarray, classes: np.ndarray | None
    ) -> np.ndarray:
        if classes is None or cost.size == 0:
            return cost
        track_cls = np.array([-1 if t.cls is None else t.cls for t in tracks])
        return np.where(track_cls[:, None] == classes[dets][None, :], cost, np.inf)

    def _appearance(self, tracks: list[Track], dets: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Cosine distance ``(n, m)``; a track that never saw an embedding is at the neutral 1."""
        dim = embeddings.shape[1]
        features = np.stack([t.feature if t.feature is not None else np.zeros(dim) for t in tracks])
        return np.clip(1.0 - features @ embeddings[dets].T, 0.0, 2.0)

    def _iou_cost(
        self,
        tracks: list[Track],
        dets: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray | None,
        embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        track_boxes = np.stack([t.box for t in tracks]) if tracks else np.zeros((0, 4))
        iou = iou_matrix(track_boxes, boxes[dets])
        if scores is not None:
            iou = iou * scores[dets][None, :]
        cost = 1.0 - iou
        gate = self.config.appearance_gate
        if embeddings is not None and gate is not None and cost.size:
            known = np.array([t.feature is not None for t in tracks])[:, None]
            cost = np.where(known & (self._appearance(tracks, dets, embeddings) > gate), np.inf, cost)
        return cost

    def _fused_cost(
        self, tracks: list[Track], dets: np.ndarray, measurements: np.ndarray, embeddings: np.ndarray
    ) -> np.ndarray:
        if not tracks or len(dets) == 0:
            return np.zeros((len(tracks), len(dets)))
        appearance = self._appearance(tracks, dets, embeddings)
        mean = np.stack([t.mean for t in tracks])
        covariance = np.stack([t.covariance for t in tracks])
        motion = self.kalman.gating_distance(mean, covariance, measurements[dets])
        weight = self.config.appearance_weight
        cost = weight * appearance + (1.0 - weight) * motion
        return np.where(motion > self.config.gating_threshold, np.inf, cost)

    # --- track changes ------------------------------------------------------------------------------

    def _predict(self) -> None:
        if not self.tracks:
            return
        mean = np.stack([t.mean for t in self.tracks])
        covariance = np.stack([t.covariance for t in self.tracks])
        not_tracked = np.array([t.state != TrackState.TRACKED for t in self.tracks])
        # An unobserved track should drift with its last motion, not keep growing or shrinking.
        mean[not_tracked, 6:8] = 0.0
        mean, covariance = self.kalman.predict(mean, covariance)
        for track, m, c in zip(self.tracks, mean, covariance):
            track.mean, track.covariance = m, c

    def _apply(
        self,
        track: Track,
        det: int,
        scores: np.ndarray,
        embeddings: np.ndarray | None,
        update_feature: bool,
    ) -> None:
        # The Kalman correction waits for the end of the frame (one batched update): a matched track
        # leaves every later pool of this frame, so nothing reads its state before then.
        self._corrections.append((track, det))
        track.score = float(scores[det])
        track.last_frame = self.frame_id
        track.detection_index = int(det)
        track.hits += 1
        track.state = TrackState.TRACKED
        if update_feature and embeddings is not None:
            new = embeddings[det]
            if track.feature is None:
                track.feature = new.copy()
            else:
                momentum = self.config.feature_momentum
                track.feature = _unit(momentum * track.feature + (1.0 - momentum) * new)

    def _correct(self, measurements: np.ndarray) -> None:
        """Apply this frame's Kalman corrections in one batch."""
        if not self._corrections:
            return
        tracks = [t for t, _ in self._corrections]
        dets = [d for _, d in self._corrections]
        mean, covariance = self.kalman.update(
            np.stack([t.mean for t in tracks]), np.stack([t.covariance for t in tracks]), measurements[dets]
        )
        for track, m, c in zip(tracks, mean, covariance):
            track.mean, track.covariance = m, c
        self._corrections = []

    def _match(
        self,
        tracks: list[Track],
        dets: np.ndarray,
        cost: np.ndarray,
        threshold: float,
        apply: dict,
    ) -> tuple[list[Track], np.ndarray]:
        """Assign, apply matches, return unmatched tracks and unmatched detection indices."""
        matches, free_tracks, free_dets = linear_assignment(cost, threshold)
        for row, col in matches:
            self._apply(tracks[row], int(dets[col]), **apply)
        return [tracks[i] for i in free_tracks], dets[free_dets]

    # --- the frame step ---------------------------------------------------------------------------

    def skip_empty(self, frames: int) -> None:
        """Count ``frames`` frames without detections at once, while the tracker holds no track.

        An empty frame then changes nothing but the frame number, so this is exactly ``frames`` calls of
        :meth:`update` with no detections, at the cost of one.

        Raises:
            ValueError: if a track is held (its age and Kalman state need every frame) or ``frames < 0``.
        """
        if frames < 0:
            raise ValueError(f"cannot skip {frames} frames")
        if self.tracks:
            raise ValueError(f"frame {self.frame_id}: {len(self.tracks)} tracks are held; step every frame")
        self.frame_id += frames

    def update(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        embeddings: np.ndarray | None = None,
        classes: np.ndarray | None = None,
    ) -> list[TrackedObject]:
        """Advance one frame.

        Args:
            boxes_xyxy: ``(n, 4)`` detections, corners in pixels.
            scores: ``(n,)`` detection confidences.
            embeddings: ``(n, D)`` identity embeddings, or ``None`` for motion and IoU only.
            classes: ``(n,)`` class indices; tracks then only take detections of their own class.

        Returns:
            The tracks matched in this frame, confirmed ones only, sorted by id.
        """
        cfg = self.config
        boxes, scores, embeddings, classes = self._check_inputs(boxes_xyxy, scores, embeddings, classes)
        self.frame_id += 1
        measurements = xyxy_to_cxcywh(boxes)
        valid = (measurements[:, 2] > 0) & (measurements[:, 3] > 0)
        high = np.flatnonzero(valid & (scores >= cfg.high_thresh))
        low = np.flatnonzero(valid & (scores >= cfg.low_thresh) & (scores < cfg.high_thresh))
        fuse = scores if cfg.fuse_score else None
        strong = {"scores": scores, "embeddings": embeddings, "update_feature": True}
        weak = {**strong, "update_feature": False}

        self._predict()
        tracked = [t for t in self.tracks if t.state == TrackState.TRACKED]
        lost = [t for t in self.tracks if t.state == TrackState.LOST]
        tentative = [t for t in self.tracks if t.state == TrackState.TENTATIVE]
        pool = tracked + lost

        # Stage 1: high-score detections against confirmed tracks.
        if embeddings is not None:
            cost = self._class_gate(
                self._fused_cost(pool, high, measurements, embeddings), pool, high, classes
            )
            pool, high = self._match(pool, high, cost, cfg.embedding_match_thresh, strong)
        cost = self._class_gate(self._iou_cost(pool, high, boxes, fuse, embeddings), pool, high, classes)
        pool, high = self._match(pool, high, cost, cfg.iou_match_thresh, strong)

        # Stage 2: low-score detections extend tracks that were tracked until now.
        pool = [t for t in pool if t.state == TrackState.TRACKED]
        cost = self._class_gate(self._iou_cost(pool, low, boxes, None), pool, low, classes)
        pool, _ = self._match(pool, low, cost, cfg.low_iou_match_thresh, weak)
        for track in pool:
            track.state = TrackState.LOST

        # Tentative tracks are confirmed by a second sighting or dropped.
        cost = self._class_gate(
            self._iou_cost(tentative, high, boxes, fuse, embeddings), tentative, high, classes
        )
        unconfirmed, high = self._match(tentative, high, cost, cfg.tentative_match_thresh, strong)
        for track in unconfirmed:
            track.state = TrackState.REMOVED

        for det in high:
            if scores[det] >= cfg.new_track_thresh:
                self._start_track(int(det), measurements, scores, embeddings, classes)

        self._correct(measurements)
        for track in self.tracks:
            if track.state == TrackState.LOST and self.frame_id - track.last_frame > cfg.lost_buffer:
                track.state = TrackState.REMOVED
        self._remove_duplicates()
        self.tracks = [t for t in self.tracks if t.state != TrackState.REMOVED]
        return self._report()

    def _start_track(
        self,
        det: int,
        measurements: np.ndarray,
        scores: np.ndarray,
        embeddings: np.ndarray | None,
        classes: np.ndarray | None,
    ) -> None:
        mean, covariance = self.kalman.initiate(measurements[det][None])
        # On the first frame no track can exist yet, so waiting for confirmation guards nothing.
        state = TrackState.TRACKED if self.frame_id == 1 else TrackState.TENTATIVE
        self.tracks.append(
            Track(
                track_id=self._next_id,
                mean=mean[0],
                covariance=covariance[0],
                score=float(scores[det]),
                cls=None if classes is None else int(classes[det]),
                feature=None if embeddings is None else embeddings[det].copy(),
                state=state,
                start_frame=self.frame_id,
                last_frame=self.frame_id,
                detection_index=det,
            )
        )
        self._next_id += 1

    def _remove_duplicates(self) -> None:
        """Remove one of each tracked/lost pair that covers the same object.

        Such a pair arises when an object got a new track while its old one coasted on. The longer
        history is kept (it is the more likely true identity); on a tie the lost track goes. With
        embeddings, a pair that looks different (beyond ``appearance_gate``) is two objects crossing,
        not a duplicate.
        """
        tracked = [t for t in self.tracks if t.state == TrackState.TRACKED]
        lost = [t for t in self.tracks if t.state == TrackState.LOST]
        if not tracked or not lost:
            return
        iou = iou_matrix(np.stack([t.box for t in tracked]), np.stack([t.box for t in lost]))
        gate = self.config.appearance_gate
        for i, j in zip(*np.nonzero(iou > self.config.duplicate_iou)):
            a, b = tracked[i], lost[j]
            if gate is not None and a.feature is not None and b.feature is not None:
                if 1.0 - float(a.feature @ b.feature) > gate:
                    continue
            if b.start_frame < a.start_frame:
                a.state = TrackState.REMOVED
            else:
                b.state = TrackState.REMOVED

    def _report(self) -> list[TrackedObject]:
        out = []
        for track in self.tracks:
            if track.state != TrackState.TRACKED or track.last_frame != self.frame_id:
                continue
            box = track.box
            if (box[2] - box[0]) * (box[3] - box[1]) < self.config.min_box_area:
                continue
            out.append(TrackedObject(track.track_id, box, track.score, track.cls, track.detection_index))
        return sorted(out, key=lambda t: t.track_id)


__all__ = [
    "Track",
    "TrackState",
    "TrackedObject",
    "Tracker",
    "TrackerConfig",
    "cxcywh_to_xyxy",
    "iou_matrix",
    "linear_assignment",
    "xyxy_to_cxcywh",
]
