"""The batched constant-velocity Kalman filter against textbook one-track formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from unified.tracking.kalman import GATING_THRESHOLD_95, KalmanFilter


def test_gating_threshold_is_the_chi_square_95_quantile():
    assert GATING_THRESHOLD_95 == pytest.approx(9.4877, abs=1e-4)
    assert chi2.cdf(GATING_THRESHOLD_95, df=4) == pytest.approx(0.95)


def random_states(rng, n):
    kf = KalmanFilter()
    boxes = np.column_stack([rng.uniform(50, 500, (n, 2)), rng.uniform(20, 200, (n, 2))])
    mean, cov = kf.initiate(boxes)
    for _ in range(3):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, boxes + rng.normal(scale=3.0, size=boxes.shape))
    return kf, mean, cov


def test_batched_update_equals_textbook_single_track_update():
    rng = np.random.default_rng(0)
    kf, mean, cov = random_states(rng, 5)
    measurements = mean[:, :4] + rng.normal(scale=5.0, size=(5, 4))
    new_mean, new_cov = kf.update(mean, cov, measurements)
    h = np.eye(4, 8)
    for i in range(5):
        r = np.diag((kf.position_weight * np.r_[mean[i, 2:4], mean[i, 2:4]]) ** 2)
        s = h @ cov[i] @ h.T + r
        gain = cov[i] @ h.T @ np.linalg.inv(s)
        np.testing.assert_allclose(new_mean[i], mean[i] + gain @ (measurements[i] - h @ mean[i]), rtol=1e-9)
        np.testing.assert_allclose(new_cov[i], (np.eye(8) - gain @ h) @ cov[i], rtol=1e-7, atol=1e-9)


def test_batched_gating_distance_equals_single_mahalanobis():
    rng = np.random.default_rng(1)
    kf, mean, cov = random_states(rng, 3)
    measurements = mean[:2, :4] + rng.normal(scale=10.0, size=(2, 4))
    distance = kf.gating_distance(mean, cov, measurements)
    assert distance.shape == (3, 2)
    projected_mean, projected_cov = kf.project(mean, cov)
    for i in range(3):
        for j in range(2):
            d = measurements[j] - projected_mean[i]
            assert distance[i, j] == pytest.approx(d @ np.linalg.inv(projected_cov[i]) @ d)
    # The predicted measurement itself is at distance zero.
    assert kf.gating_distance(mean, cov, projected_mean).diagonal() == pytest.approx(np.zeros(3), abs=1e-9)


def test_constant_velocity_is_learned_and_extrapolated():
    kf = KalmanFilter()
    velocity = np.array([4.0, -2.0, 0.5, 1.0])
    box = np.array([[100.0, 200.0, 50.0, 120.0]])
    mean, cov = kf.initiate(box)
    for step in range(1, 30):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, box + step * velocity)
    np.testing.assert_allclose(mean[0, 4:], velocity, atol=0.05)
    predicted, _ = kf.predict(mean, cov)
    np.testing.assert_allclose(predicted[0, :4], box[0] + 30 * velocity, atol=0.2)


def test_uncertainty_grows_while_unobserved_and_shrinks_on_update():
    kf = KalmanFilter()
    mean, cov = kf.initiate(np.array([[100.0, 100.0, 40.0, 80.0]]))
    predicted_mean, predicted_cov = kf.predict(mean, cov)
    assert np.trace(predicted_cov[0]) > np.trace(cov[0])
    _, updated_cov = kf.update(predicted_mean, predicted_cov, predicted_mean[:, :4])
    assert np.trace(updated_cov[0]) < np.trace(predicted_cov[0])
    assert np.all(np.linalg.eigvalsh(updated_cov[0]) > 0)
