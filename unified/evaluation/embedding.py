"""Identity-embedding quality as JDE reports it: true-accept rate at fixed false-accept rates.

Every pair of ground-truth-matched embeddings is scored by cosine similarity; pairs of the same
identity are positives, the others negatives. For a target false-accept rate (FAR) the acceptance
threshold is set on the negative similarities, and the true-accept rate (TPR) is the share of positive
pairs above it.

The threshold is the conservative one: the pairs accepted are those strictly above the
``floor(FAR * negatives) + 1``-th largest negative similarity, so the realised FAR never exceeds the
target (ties can only lower it). A FAR that the number of negatives cannot resolve (fewer than
``1 / FAR`` negative pairs) gives ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_FARS = (1e-3, 1e-2, 1e-1)


def _far_key(far: float) -> str:
    return f"FAR={far:g}"


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _pair_similarities(
    embeddings: np.ndarray, identities: np.ndarray, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of positive and negative pairs (all of them, or a deterministic sample)."""
    n = len(embeddings)
    if n * (n - 1) // 2 <= max_pairs:
        rows, cols = np.triu_indices(n, k=1)
        similarity = np.einsum("pd,pd->p", embeddings[rows], embeddings[cols])
        same = identities[rows] == identities[cols]
        return similarity[same], similarity[~same]

    # Too many pairs: keep the (rare, informative) positives and sample negatives uniformly.
    positive_pairs = []
    for identity in np.unique(identities):
        members = np.flatnonzero(identities == identity)
        if len(members) > 1:
            a, b = np.triu_indices(len(members), k=1)
            positive_pairs.append(np.stack([members[a], members[b]], axis=1))
    pos = np.concatenate(positive_pairs) if positive_pairs else np.zeros((0, 2), dtype=np.int64)
    if len(pos) > max_pairs // 2:
        pos = pos[rng.choice(len(pos), size=max_pairs // 2, replace=False)]
    # With a single identity there is no negative pair to draw.
    wanted = max_pairs - len(pos) if len(np.unique(identities)) > 1 else 0
    negatives: list[np.ndarray] = []
    count = 0
    while count < wanted:
        i = rng.integers(0, n, size=2 * (wanted - count))
        j = rng.integers(0, n, size=2 * (wanted - count))
        keep = identities[i] != identities[j]
        pair = np.stack([i[keep], j[keep]], axis=1)[: wanted - count]
        negatives.append(pair)
        count += len(pair)
    neg = np.concatenate(negatives) if negatives else np.zeros((0, 2), dtype=np.int64)
    pos_sim = np.einsum("pd,pd->p", embeddings[pos[:, 0]], embeddings[pos[:, 1]])
    neg_sim = np.einsum("pd,pd->p", embeddings[neg[:, 0]], embeddings[neg[:, 1]])
    return pos_sim, neg_sim


def pair_similarities(
    embeddings: np.ndarray,
    identities: np.ndarray | Sequence[int],
    max_pairs: int = 5_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of same-identity (positive) and other-identity (negative) pairs.

    Args:
        embeddings: ``(N, D)`` embeddings of ground-truth-matched objects (normalised here).
        identities: ``(N,)`` identity of each embedding; negative values (unknown) are left out.
        max_pairs: Above this many pairs, all positives (up to half of it) and a deterministic sample
            of negatives (seeded by ``seed``) are used instead of every pair.
        seed: Seed of the pair sample.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    identities = np.asarray(identities).reshape(-1)
    if embeddings.ndim != 2 or len(embeddings) != len(identities):
        raise ValueError(
            f"embeddings {embeddings.shape} must be (N, D) with N = {len(identities)} identities"
        )
    known = identities >= 0
    embeddings, identities = _normalise(embeddings[known]), identities[known]
    return _pair_similarities(embeddings, identities, max_pairs, np.random.default_rng(seed))


def _tpr(positives: np.ndarray, negatives_desc: np.ndarray, far: float) -> tuple[float, float]:
    """TPR and threshold at one FAR (``nan`` when the negatives cannot resolve it)."""
    if not 0 < far < 1:
        raise ValueError(f"a false-accept rate must lie in (0, 1), got {far}")
    allowed = int(np.floor(far * len(negatives_desc)))
    if allowed < 1 or len(positives) == 0:
        return float("nan"), float("nan")
    threshold = float(negatives_desc[allowed]) if allowed < len(negatives_desc) else -np.inf
    return float(np.mean(positives > threshold)), threshold


def similarity_metrics(
    positives: np.ndarray, negatives: np.ndarray, fars: Sequence[float] = DEFAULT_FARS
) -> dict[str, float]:
    """The metrics of :func:`tpr_at_far` from pair similarities (:func:`pair_similarities`)."""
    out: dict[str, float] = {}
    negatives_desc = np.sort(negatives)[::-1]
    for far in fars:
        key = _far_key(far)
        out[f"TPR@{key}"], out[f"threshold@{key}"] = _tpr(positives, negatives_desc, far)
    out["positive_pairs"] = int(len(positives))
    out["negative_pairs"] = int(len(negatives))
    return out


def tpr_far_curve(
    positives: np.ndarray, negatives: np.ndarray, points: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """TPR at log-spaced FARs from the smallest the negatives resolve (one pair) to 1, for plotting.

    Returns:
        ``(fars, tprs)``, both empty when there is no negative or no positive pair.
    """
    if not len(negatives) or not len(positives):
        return np.zeros(0), np.zeros(0)
    negatives_desc = np.sort(negatives)[::-1]
    low = 1.0 / len(negatives)
    if low >= 1.0:
        return np.zeros(0), np.zeros(0)
    fars = np.unique(np.logspace(np.log10(low), np.log10(1.0 - 1e-9), points))
    return fars, np.array([_tpr(positives, negatives_desc, far)[0] for far in fars])


def tpr_at_far(
    embeddings: np.ndarray,
    identities: np.ndarray | Sequence[int],
    fars: Sequence[float] = DEFAULT_FARS,
    max_pairs: int = 5_000_000,
    seed: int = 0,
) -> dict[str, float]:
    """TPR at each FAR over all embedding pairs.

    Args:
        embeddings: ``(N, D)`` embeddings of ground-truth-matched objects (normalised here).
        identities: ``(N,)`` identity of each embedding; negative values (unknown) are left out.
        fars: Target false-accept rates.
        max_pairs: See :func:`pair_similarities`.
        seed: Seed of the pair sample.

    Returns:
        ``TPR@FAR=<far>`` and ``threshold@FAR=<far>`` (the cosine similarity a pair must exceed) for
        each FAR, plus ``positive_pairs`` and ``negative_pairs`` counts.
    """
    return similarity_metrics(*pair_similarities(embeddings, identities, max_pairs, seed), fars)


class EmbeddingEvaluator:
    """Accumulates ground-truth-matched embeddings and their identities over a split.

    Args:
        fars: Target false-accept rates.
        max_pairs: See :func:`tpr_at_far`.
    """

    def __init__(self, fars: Sequence[float] = DEFAULT_FARS, max_pairs: int = 5_000_000) -> None:
        self.fars = tuple(fars)
        self.max_pairs = max_pairs
        self._embeddings: list[np.ndarray] = []
        self._identities: list[np.ndarray] = []
        #: The positive and negative pair similarities of the last :meth:`compute` (for the TPR-FAR curve).
        self.similarities: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))

    def update(self, embeddings: np.ndarray, identities: np.ndarray | Sequence[int]) -> None:
        """Add ``(n, D)`` embeddings and their ``(n,)`` identities."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        identities = np.asarray(identities).reshape(-1)
        if embeddings.ndim != 2 or len(embeddings) != len(identities):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(identities)} identities")
        self._embeddings.append(embeddings)
        self._identities.append(identities)

    def compute(self) -> dict[str, float]:
        """The metrics of :func:`tpr_at_far` over everything added."""
        if self._embeddings:
            embeddings, identities = np.concatenate(self._embeddings), np.concatenate(self._identities)
        else:
            embeddings, identities = np.zeros((0, 1)), np.zeros(0, dtype=np.int64)
        self.similarities = pair_similarities(embeddings, identities, self.max_pairs)
        return similarity_metrics(*self.similarities, self.fars)


__all__ = [
    "DEFAULT_FARS",
    "EmbeddingEvaluator",
    "pair_similarities",
    "similarity_metrics",
    "tpr_at_far",
    "tpr_far_curve",
]
