"""Online multi-object tracking: a constant-velocity Kalman filter and a JDE-style tracker."""

from unified.tracking.kalman import GATING_THRESHOLD_95, KalmanFilter
from unified.tracking.tracker import TrackedObject, Tracker, TrackerConfig, TrackState

__all__ = ["GATING_THRESHOLD_95", "KalmanFilter", "TrackState", "TrackedObject", "Tracker", "TrackerConfig"]
