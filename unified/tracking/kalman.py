"""A constant-velocity Kalman filter over boxes, batched over tracks.

State: ``(cx, cy, w, h, vcx, vcy, vw, vh)``, the box centre and size in pixels and their velocities per
frame; measurement: ``(cx, cy, w, h)``. Noise standard deviations scale with the box size (horizontal
terms with the width, vertical with the height), so one set of weights fits near and far objects.
"""

from __future__ import annotations

import numpy as np
from scipy.special import chdtri

#: Squared Mahalanobis distance that a 4-d measurement from the predicted distribution stays under
#: with probability 0.95 (the chi-square quantile; ``chdtri`` inverts its survival function, and
#: spares the import of all of scipy.stats); beyond it a pairing is physically implausible.
GATING_THRESHOLD_95 = float(chdtri(4, 0.05))


class KalmanFilter:
    """Predict, update and gate box states; every method works on a batch of ``n`` tracks.

    Args:
        position_weight: Standard deviation of position and size noise, as a fraction of the box size.
        velocity_weight: Standard deviation of velocity noise, as a fraction of the box size.
    """

    ndim = 4

    def __init__(self, position_weight: float = 1.0 / 20, velocity_weight: float = 1.0 / 160) -> None:
        self.position_weight = position_weight
        self.velocity_weight = velocity_weight
        self.motion = np.eye(2 * self.ndim)
        self.motion[: self.ndim, self.ndim :] = np.eye(self.ndim)
        self.observation = np.eye(self.ndim, 2 * self.ndim)

    @staticmethod
    def _scale(sizes: np.ndarray) -> np.ndarray:
        """``(n, 4)`` per-coordinate scale ``(w, h, w, h)``, floored so noise never vanishes."""
        sizes = np.maximum(np.abs(sizes), 1.0)
        return np.concatenate([sizes, sizes], axis=1)

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks at ``(n, 4)`` measurements with zero velocity and a wide velocity prior.

        Returns:
            ``(mean (n, 8), covariance (n, 8, 8))``.
        """
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, self.ndim)
        mean = np.concatenate([measurements, np.zeros_like(measurements)], axis=1)
        scale = self._scale(measurements[:, 2:])
        std = np.concatenate([2 * self.position_weight * scale, 10 * self.velocity_weight * scale], axis=1)
        return mean, _diag(std**2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead."""
        scale = self._scale(mean[:, 2:4])
        std = np.concatenate([self.position_weight * scale, self.velocity_weight * scale], axis=1)
        mean = mean @ self.motion.T
        covariance = self.motion @ covariance @ self.motion.T + _diag(std**2)
        return mean, covariance

    def project(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted measurement distribution: ``(n, 4)`` mean and ``(n, 4, 4)`` covariance."""
        std = self.position_weight * self._scale(mean[:, 2:4])
        projected_mean = mean @ self.observation.T
        projected_cov = self.observation @ covariance @ self.observation.T + _diag(std**2)
        return projected_mean, projected_cov

    def update(
        self, mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``n`` states with their ``(n, 4)`` measurements."""
        projected_mean, projected_cov = self.project(mean, covariance)
        cross = covariance @ self.observation.T  # (n, 8, 4)
        # gain = cross @ inv(projected_cov), through the Cholesky factor (projected_cov is SPD).
        gain = spd_solve(projected_cov, cross.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = np.asarray(measurements, dtype=np.float64).reshape(-1, self.ndim) - projected_mean
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
        return new_mean, new_cov

    def gating_distance(
        self, mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray
    ) -> np.ndarray:
        """Squared Mahalanobis distance of each of ``m`` measurements to each of ``n`` tracks: ``(n, m)``."""
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, self.ndim)
        if len(mean) == 0 or len(measurements) == 0:
            return np.zeros((len(mean), len(measurements)))
        projected_mean, projected_cov = self.project(mean, covariance)
        diff = measurements[None, :, :] - projected_mean[:, None, :]  # (n, m, 4)
        # d^T S^-1 d = |L^-1 d|^2 with S = L L^T.
        whitened = _forward_substitution(_cholesky(projected_cov), diff.transpose(0, 2, 1))
        return np.sum(whitened**2, axis=1)


# numpy.linalg on stacks of 4x4 matrices goes through multi-threaded LAPACK/BLAS; on a loaded machine
# the thread hand-offs cost milliseconds per call, far more than the arithmetic. These small explicit
# loops over the matrix size are vectorised over the batch and never leave the calling thread.


def _cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack ``(..., k, k)`` of symmetric positive-definite matrices."""
    k = a.shape[-1]
    lower = np.zeros_like(a)
    for j in range(k):
        pivot = a[..., j, j] - np.sum(lower[..., j, :j] ** 2, axis=-1)
        lower[..., j, j] = np.sqrt(np.maximum(pivot, 1e-12))
        for i in range(j + 1, k):
            dot = np.sum(lower[..., i, :j] * lower[..., j, :j], axis=-1)
            lower[..., i, j] = (a[..., i, j] - dot) / lower[..., j, j]
    return lower


def _forward_substitution(lower: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L x = b`` for lower-triangular ``(..., k, k)`` and ``(..., k, m)`` right-hand sides."""
    x = np.zeros(np.broadcast_shapes(lower.shape[:-1], b.shape[:-2] + (b.shape[-2],)) + b.shape[-1:])
    for i in range(lower.shape[-1]):
        dot = np.sum(lower[..., i, :i, None] * x[..., :i, :], axis=-2)
        x[..., i, :] = (b[..., i, :] - dot) / lower[..., i, i, None]
    return x


def _backward_substitution(lower: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L^T x = b`` for lower-triangular ``L``."""
    k = lower.shape[-1]
    x = np.zeros(np.broadcast_shapes(lower.shape[:-1], b.shape[:-2] + (b.shape[-2],)) + b.shape[-1:])
    for i in reversed(range(k)):
        dot = np.sum(lower[..., i + 1 :, i, None] * x[..., i + 1 :, :], axis=-2)
        x[..., i, :] = (b[..., i, :] - dot) / lower[..., i, i, None]
    return x


def spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for a stack of small SPD matrices ``(..., k, k)`` and ``b`` ``(..., k, m)``."""
    lower = _cholesky(a)
    return _backward_substitution(lower, _forward_substitution(lower, b))


def _diag(values: np.ndarray) -> np.ndarray:
    """Stack of diagonal matrices from ``(n, d)`` diagonals."""
    out = np.zeros((*values.shape, values.shape[-1]))
    index = np.arange(values.shape[-1])
    out[:, index, index] = values
    return out


__all__ = ["GATING_THRESHOLD_95", "KalmanFilter", "spd_solve"]
