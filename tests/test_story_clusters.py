"""Average-linkage clustering (rag.story_clusters): what it merges, and the same clusters as the
textbook algorithm (a full search for the closest pair at every step) on random data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rag.story_clusters import average_linkage, mean_direction, unit_rows


def naive_average_linkage(vectors: np.ndarray, threshold: float,
                          weights: list[float] | None = None) -> list[list[int]]:
    """UPGMA by definition: merge the pair with the highest mean pairwise cosine (each item
    counted ``weight`` times) while it is ≥ threshold."""
    x = unit_rows(vectors).astype(np.float64)
    sim = x @ x.T
    w = np.ones(len(x)) if weights is None else np.asarray(weights, float)
    clusters = [[i] for i in range(len(x))]
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for a, b in itertools.combinations(range(len(clusters)), 2):
            ca, cb = clusters[a], clusters[b]
            block = sim[np.ix_(ca, cb)] * np.outer(w[ca], w[cb])
            mean = block.sum() / (w[ca].sum() * w[cb].sum())
            if mean > best:
                best, pair = mean, (a, b)
        if best < threshold or pair is None:
            break
        a, b = pair
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return sorted((sorted(c) for c in clusters), key=lambda c: c[0])


def test_average_linkage_does_not_chain() -> None:
    # A≈B (0.95), B≈C (0.95), A·C = 0.81: single linkage would make one cluster of the three.
    angle = np.arccos(0.95)
    a = [1.0, 0.0]
    b = [np.cos(angle), np.sin(angle)]
    c = [np.cos(2 * angle), np.sin(2 * angle)]
    assert average_linkage([a, b, c], 0.9) == [[0, 1], [2]]
    assert average_linkage([a, b, c], 0.85) == [[0, 1, 2]]  # mean of 0.95 and 0.81 is 0.88


@pytest.mark.parametrize("seed", range(3))
def test_same_clusters_as_the_textbook_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 16))
    points = np.concatenate([c + rng.normal(scale=0.6, size=(6, 16)) for c in centres])
    weights = list(rng.integers(1, 4, size=len(points)).astype(float))
    for threshold in (0.3, 0.6, 0.8):
        assert average_linkage(points, threshold) == naive_average_linkage(points, threshold)
        assert average_linkage(points, threshold, weights) == \
            naive_average_linkage(points, threshold, weights)


def test_edges_and_errors() -> None:
    assert average_linkage([], 0.9) == []
    assert average_linkage([[1.0, 0.0]], 0.9) == [[0]]
    assert average_linkage([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], 0.99) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="cosine"):
        average_linkage([[1.0]], 1.5)
    with pytest.raises(ValueError, match="weights"):
        average_linkage([[1.0], [1.0]], 0.5, weights=[1.0])
    # a zero vector (nothing to compare) stays alone instead of breaking the arithmetic
    assert average_linkage([[0.0, 0.0], [1.0, 0.0]], -0.5) == [[0, 1]]
    assert average_linkage([[0.0, 0.0], [1.0, 0.0]], 0.5) == [[0], [1]]


def test_mean_direction_is_unit_length() -> None:
    v = mean_direction([[3.0, 0.0], [0.0, 1.0]])
    assert np.isclose(np.linalg.norm(v), 1.0) and np.allclose(v, [np.sqrt(0.5), np.sqrt(0.5)])
