"""Hybrid retrieval: a dense and a sparse candidate list per query, fused into one ranking.

Both lists are fetched from Qdrant (``candidate depth`` chunks each), collapsed to posts (a post
keeps its best chunk and that chunk's rank) and then fused here, client-side, because Qdrant's
built-in ``FusionQuery`` has neither weights nor score normalisation.  Two fusions:

* ``rrf``: weighted reciprocal rank fusion, ``Σ wᵢ / (k + rankᵢ)``, rank from 1; a post missing
  from a list gets nothing from it.  Robust to the incomparable score scales (cosine vs BM25).
* ``minmax`` / ``zscore``: a convex combination ``Σ wᵢ · norm(scoreᵢ)`` of per-list normalised
  scores; a post missing from a list gets that list's floor (0 after min-max, the lowest z).
  Keeps *how much* better the top hit is, which rank fusion throws away.

The functions are pure; :class:`HybridRetriever` wires them to a store, an embedding and the
sparse encoder.  Which defaults win is measured in ``docs/eval.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from qdrant_client import models

from rag.errors import InputError
from rag.settings import Settings
from rag.sparse import SparseEncoder
from rag.store import DOC_ID_KEY, SPARSE, PostStore

K = TypeVar("K", bound=Hashable)
Mode = Literal["dense", "sparse", "hybrid"]
FusionMethod = Literal["rrf", "minmax", "zscore"]
MODES: tuple[str, ...] = ("dense", "sparse", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "minmax", "zscore")


@dataclass(frozen=True)
class FusionConfig:
    """How the dense and sparse lists are merged.

    Defaults = the measured best (docs/eval.md): min-max score fusion 0.6 dense / 0.4 sparse over
    100 candidates per list; it beat dense on every shared set and plain RRF by 3 points on danetqa.
    """

    method: FusionMethod = "minmax"
    dense_weight: float = 0.6
    sparse_weight: float = 0.4
    rrf_k: float = 60.0
    depth: int = 100  # candidates per list, in posts

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise InputError(f"unknown fusion {self.method!r}", hint=f"one of {', '.join(FUSIONS)}")
        if self.dense_weight < 0 or self.sparse_weight < 0:
            raise InputError("fusion weights must be ≥ 0")
        if self.depth < 1 or self.rrf_k < 0:
            raise InputError("fusion depth must be ≥ 1 and rrf_k ≥ 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> FusionConfig:
        return cls(method=settings.fusion, dense_weight=settings.fusion_dense_weight,
                   sparse_weight=settings.fusion_sparse_weight, rrf_k=settings.fusion_rrf_k,
                   depth=settings.fusion_depth)


Ranked = list[tuple[K, float]]


def rrf(rankings: Sequence[Sequence[K]], weights: Sequence[float] | None = None,
        k: float = 60.0) -> Ranked[K]:
    """Weighted reciprocal rank fusion of ranked key lists, best first (ties by first list)."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise InputError("one weight per ranking")
    scores: dict[K, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (k + rank)
    return _sorted(scores)


def normalize(scores: Sequence[float], method: Literal["minmax", "zscore"]) -> list[float]:
    """Per-list score normalisation; a constant list maps to all 1.0 (min-max) or 0.0 (z)."""
    if not scores:
        return []
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        if hi == lo:
            return [1.0] * len(scores)
        return [(s - lo) / (hi - lo) for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0:
        return [0.0] * len(scores)
    return [(s - mean) / std for s in scores]


def score_fusion(lists: Sequence[Sequence[tuple[K, float]]], weights: Sequence[float] | None = None,
                 method: Literal["minmax", "zscore"] = "minmax") -> Ranked[K]:
    """Convex combination of normalised scores; missing keys get the list's floor."""
    weights = weights if weights is not None else [1.0] * len(lists)
    if len(weights) != len(lists):
        raise InputError("one weight per list")
    normed: list[dict[K, float]] = []
    floors: list[float] = []
    for scored in lists:
        values = normalize([s for _, s in scored], method)
        normed.append({key: v for (key, _), v in zip(scored, values, strict=True)})
        floors.append(min(values) if values and method == "zscore" else 0.0)
    keys: dict[K, None] = {}
    for scored in lists:
        keys.update((key, None) for key, _ in scored)
    fused = {
        key: sum(w * n.get(key, floor) for w, n, floor in zip(weights, normed, floors, strict=True))
        for key in keys
    }
    return _sorted(fused)


def fuse(dense: Sequence[tuple[K, float]], sparse: Sequence[tuple[K, float]],
         config: FusionConfig) -> Ranked[K]:
    """Fuse a dense and a sparse ``(key, score)`` list (each best first) per ``config``."""
    dense, sparse = dense[: config.depth], sparse[: config.depth]
    weights = (config.dense_weight, config.sparse_weight)
    if config.method == "rrf":
        return rrf([[k for k, _ in dense], [k for k, _ in sparse]], weights, config.rrf_k)
    return score_fusion([dense, sparse], weights, config.method)


def _sorted(scores: dict[K, float]) -> Ranked[K]:
    # sorted() is stable, so equal scores keep first-seen order (dense list first): deterministic.
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


def collapse(points: Iterable[models.ScoredPoint]) -> list[tuple[str, models.ScoredPoint]]:
    """Chunks → posts: the first (best) chunk of each post, in order."""
    seen: dict[str, models.ScoredPoint] = {}
    for point in points:
        doc_id = str((point.payload or {}).get(DOC_ID_KEY, point.id))
        seen.setdefault(doc_id, point)
    return list(seen.items())


def search_sparse(store: PostStore, vector: models.SparseVector, flt: models.Filter | None,
                  limit: int) -> list[models.ScoredPoint]:
    """Chunks ranked by BM25 (the ``sparse`` vector, IDF applied by Qdrant)."""
    if not vector.indices:  # a query of stopwords only: nothing to match, and no error
        return []
    return store.client.query_points(
        store.collection_name, query=vector, using=SPARSE, query_filter=flt, limit=limit,
        with_payload=True,
    ).points


@dataclass(frozen=True)
class Candidate:
    """One post found by retrieval: its fused score and its best chunk (for the snippet)."""

    doc_id: str
    score: float
    point: models.ScoredPoint


class HybridRetriever:
    """Query → posts by ``dense``, ``sparse`` or fused ``hybrid`` retrieval."""

    # Chunks fetched per wanted post: a long post's chunks collapse into one.
    overfetch = 2

    def __init__(self, store: PostStore, embed_query: Callable[[str], list[float]],
                 encoder: SparseEncoder | None = None,
                 fusion: FusionConfig | None = None) -> None:
        self.store = store
        self.embed_query = embed_query
        self.encoder = encoder or SparseEncoder()
        self.fusion = fusion or FusionConfig()

    def dense(self, query: str, flt: models.Filter | None, limit: int
              ) -> list[tuple[str, models.ScoredPoint]]:
        points = self.store.search_dense(self.embed_query(query), flt, limit * self.overfetch)
        return collapse(points)[:limit]

    def sparse(self, query: str, flt: models.Filter | None, limit: int
               ) -> list[tuple[str, models.ScoredPoint]]:
        points = search_sparse(self.store, self.encoder.encode_query(query), flt,
                               limit * self.overfetch)
        return collapse(points)[:limit]

    def retrieve(self, query: str, mode: Mode = "hybrid", flt: models.Filter | None = None,
                 limit: int = 10, fusion: FusionConfig | None = None) -> list[Candidate]:
        """The best ``limit`` posts for ``query``, best first."""
        if mode not in MODES:
            raise InputError(f"unknown search mode {mode!r}", hint="dense, sparse or hybrid")
        if mode == "dense":
            return [Candidate(d, p.score, p) for d, p in self.dense(query, flt, limit)]
        if mode == "sparse":
            return [Candidate(d, p.score, p) for d, p in self.sparse(query, flt, limit)]
        config = fusion or self.fusion
        depth = max(config.depth, limit)
        return fuse_candidates(self.dense(query, flt, depth), self.sparse(query, flt, depth),
                               replace(config, depth=depth), limit)


def fuse_candidates(dense: Sequence[tuple[str, models.ScoredPoint]],
                    sparse: Sequence[tuple[str, models.ScoredPoint]],
                    config: FusionConfig, limit: int) -> list[Candidate]:
    """Fuse collapsed dense and sparse post lists into the best ``limit`` candidates."""
    best = dict(sparse[: config.depth])
    best.update(dense[: config.depth])  # the dense best chunk wins as snippet when both have it
    fused = fuse([(d, p.score) for d, p in dense], [(d, p.score) for d, p in sparse], config)
    return [Candidate(d, s, best[d]) for d, s in fused[:limit]]
