"""Embedding TPR at fixed FAR on a constructed similarity structure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unified.evaluation.embedding import EmbeddingEvaluator, tpr_at_far


def embeddings_with_gram(gram: np.ndarray) -> np.ndarray:
    """Unit vectors whose pairwise cosine similarities are exactly ``gram``."""
    values, vectors = np.linalg.eigh(gram)
    assert values.min() > 0, "the constructed similarity matrix must be positive definite"
    return vectors * np.sqrt(values)


@pytest.fixture()
def constructed():
    # Three identities with two embeddings each. Positive pairs: 0.9, 0.6, 0.3. Twelve negative pairs:
    # 0.7, 0.55, 0.45, 0.4, 0.1, 0.1, 0.05, 0, 0, 0, -0.05, -0.1.
    gram = np.eye(6)
    pairs = {
        (0, 1): 0.9, (2, 3): 0.6, (4, 5): 0.3,
        (0, 2): 0.7, (1, 2): 0.55, (1, 3): 0.45, (0, 3): 0.4, (0, 4): 0.1, (3, 4): 0.1,
        (1, 5): 0.05, (0, 5): 0.0, (2, 4): 0.0, (3, 5): 0.0, (2, 5): -0.05, (1, 4): -0.1,
    }  # fmt: skip
    for (i, j), value in pairs.items():
        gram[i, j] = gram[j, i] = value
    return embeddings_with_gram(gram), np.array([0, 0, 1, 1, 2, 2])


def test_tpr_at_far_on_hand_computed_case(constructed):
    embeddings, identities = constructed
    out = tpr_at_far(embeddings * 3.0, identities, fars=(0.05, 0.1, 0.2, 0.3, 0.4))  # scale is irrelevant
    assert (out["positive_pairs"], out["negative_pairs"]) == (3, 12)
    # FAR 0.05 of 12 negatives allows no false accept at all: not resolvable.
    assert math.isnan(out["TPR@FAR=0.05"])
    # FAR 0.1 allows floor(1.2) = 1 false accept: accept above the 2nd largest negative, 0.55.
    assert out["threshold@FAR=0.1"] == pytest.approx(0.55)
    assert out["TPR@FAR=0.1"] == pytest.approx(2 / 3)
    assert out["threshold@FAR=0.2"] == pytest.approx(0.45)
    assert out["TPR@FAR=0.2"] == pytest.approx(2 / 3)
    assert out["threshold@FAR=0.3"] == pytest.approx(0.4)
    assert out["TPR@FAR=0.3"] == pytest.approx(2 / 3)
    # FAR 0.4 allows 4 false accepts: threshold 0.1, and the 0.3 positive gets through.
    assert out["threshold@FAR=0.4"] == pytest.approx(0.1)
    assert out["TPR@FAR=0.4"] == pytest.approx(1.0)


def test_unknown_identities_are_left_out(constructed):
    embeddings, identities = constructed
    extra = np.vstack([embeddings, embeddings[:2]])
    out = tpr_at_far(extra, np.r_[identities, -1, -1], fars=(0.1,))
    assert (out["positive_pairs"], out["negative_pairs"]) == (3, 12)
    assert out["TPR@FAR=0.1"] == pytest.approx(2 / 3)


def brute_force_tpr(embeddings, identities, far):
    """The largest TPR whose realised FAR stays within ``far``, over every candidate threshold."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sim = unit @ unit.T
    rows, cols = np.triu_indices(len(unit), k=1)
    same = identities[rows] == identities[cols]
    pos, neg = np.sort(sim[rows, cols][same]), np.sort(sim[rows, cols][~same])
    candidates = np.r_[neg, np.inf]
    # Share of negatives and positives strictly above each candidate threshold.
    far_at = (len(neg) - np.searchsorted(neg, candidates, side="right")) / len(neg)
    tpr_at = (len(pos) - np.searchsorted(pos, candidates, side="right")) / len(pos)
    return float(tpr_at[far_at <= far].max())


def random_identities(seed, n=200, people=20, noise=0.6):
    rng = np.random.default_rng(seed)
    identities = rng.integers(0, people, n)
    prototypes = rng.normal(size=(people, 16))
    return prototypes[identities] + noise * rng.normal(size=(n, 16)), identities


def test_matches_brute_force_definition():
    embeddings, identities = random_identities(0)
    out = tpr_at_far(embeddings, identities)
    for far in (1e-3, 1e-2, 1e-1):
        assert out[f"TPR@FAR={far:g}"] == pytest.approx(brute_force_tpr(embeddings, identities, far)), far
    assert 0 < out["TPR@FAR=0.001"] < out["TPR@FAR=0.1"] < 1  # a case where the FARs differ


def test_subsampled_pairs_are_deterministic_and_close_to_all_pairs():
    embeddings, identities = random_identities(1, n=600)
    full = tpr_at_far(embeddings, identities)
    sample = tpr_at_far(embeddings, identities, max_pairs=60_000, seed=3)
    again = tpr_at_far(embeddings, identities, max_pairs=60_000, seed=3)
    assert sample == again
    assert sample["negative_pairs"] + sample["positive_pairs"] == 60_000
    assert sample["positive_pairs"] == full["positive_pairs"]  # every positive pair is kept
    for far in ("0.01", "0.1"):
        assert sample[f"TPR@FAR={far}"] == pytest.approx(full[f"TPR@FAR={far}"], abs=0.03)


def test_evaluator_accumulates_batches(constructed):
    embeddings, identities = constructed
    evaluator = EmbeddingEvaluator(fars=(0.1,))
    evaluator.update(embeddings[:3], identities[:3])
    evaluator.update(embeddings[3:], identities[3:])
    assert evaluator.compute()["TPR@FAR=0.1"] == pytest.approx(2 / 3)
    assert math.isnan(EmbeddingEvaluator().compute()["TPR@FAR=0.1"])
    with pytest.raises(ValueError, match="identities"):
        evaluator.update(embeddings[:2], identities[:3])
