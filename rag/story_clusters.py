"""Topic clusters of post embeddings: average-linkage agglomerative clustering on cosine (numpy).

Digests (``rag.digest``) group a period's posts into stories: near-duplicate copies first
(``rag.dedup``), then these clusters of the copy groups' embeddings.  Average linkage merges the
two clusters whose *mean* pairwise cosine is highest while it stays ≥ ``threshold``: unlike single
linkage it does not chain (A≈B, B≈C, A≉C gives one cluster only when A and C are close enough on
average), and unlike k-means it needs no number of clusters, which a day of news does not have.
The threshold was measured on the news set (docs/eval.md, "Digests").

Cost: one n×n float32 matrix (n ≤ a few thousand: 2,000 units are 16 MB) and one O(n) update per
merge; each unit keeps its best neighbour, and average linkage is *reducible* (a merged cluster is
never closer to a third one than the nearer of its two parts was), so only the units whose best
neighbour was one of the merged two need a new search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


def unit_rows(vectors: Sequence[Sequence[float]] | Matrix) -> Matrix:
    """``vectors`` as float32 rows of unit length (a zero row stays zero)."""
    x = np.array(vectors, dtype=np.float32, ndmin=2)
    if x.size == 0:
        return x.reshape(0, 0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def mean_direction(vectors: Sequence[Sequence[float]] | Matrix) -> Matrix:
    """The unit-length mean of unit-length ``vectors`` (a post's chunks, a group's posts)."""
    rows = unit_rows(vectors)
    return unit_rows(rows.mean(axis=0, keepdims=True))[0]


def average_linkage(vectors: Sequence[Sequence[float]] | Matrix, threshold: float,
                    weights: Sequence[float] | None = None) -> list[list[int]]:
    """Clusters of ``vectors`` (indexes), merged while their average cosine is ≥ ``threshold``.

    ``weights`` (default 1 each) say how many items each vector stands for, e.g. the posts of a
    copy group, in the average.  Clusters come ordered by their smallest index, members sorted.
    """
    if not -1 <= threshold <= 1:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    x = unit_rows(vectors)
    n = len(x)
    if n == 0:
        return []
    size = np.ones(n, dtype=np.float64) if weights is None else np.array(weights, np.float64)
    if size.shape != (n,) or (size <= 0).any():
        raise ValueError("weights must be one positive number per vector")
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    members: list[list[int]] = [[i] for i in range(n)]
    best = sim.argmax(axis=1)
    best_sim = sim[np.arange(n), best]
    active = np.ones(n, dtype=bool)
    while n > 1:
        i = int(best_sim.argmax())
        if best_sim[i] < threshold:
            break
        j = int(best[i])
        # Lance-Williams for average linkage: the merged row is the size-weighted mean.
        row = ((size[i] * sim[i] + size[j] * sim[j]) / (size[i] + size[j])).astype(np.float32)
        sim[i], sim[:, i] = row, row
        sim[i, i] = -np.inf
        sim[j], sim[:, j] = -np.inf, -np.inf
        size[i] += size[j]
        members[i] += members[j]
        members[j] = []
        active[j] = False
        best_sim[j] = -np.inf
        stale = np.flatnonzero(active & ((best == i) | (best == j)))
        stale = np.union1d(stale, [i])
        best[stale] = sim[stale].argmax(axis=1)
        best_sim[stale] = sim[stale, best[stale]]
    return sorted((sorted(m) for m in members if m), key=lambda m: m[0])
