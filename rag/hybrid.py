"""Hybrid retrieval: a dense and a sparse candidate list per query, fused into one ranking.

Both lists are fetched from Qdrant (``candidate depth`` chunks each), collapsed to posts (a post
keeps its best chunk and that chunk's rank) and then fused here, client-side, because Qdrant's
built-in ``FusionQuery`` has neither weights nor score normalisation.  Two fusions:

* ``rrf``: weighted reciprocal rank fusion, ``Σ wᵢ / (k + rankᵢ)``, rank from 1; a post missing
  from a list gets nothing from it.  Robust to the incomparable score scales (cosine vs BM25).
* ``minmax`` / ``zscore``: a convex combination ``Σ wᵢ · norm(scoreᵢ)`` of per-list normalised
  scores; a post missing from a list gets that list's floor (0 after min-max, the lowest z).
  Keeps *how much* better the top hit is, which rank fusion throws away.

The fusion functions are pure; :class:`HybridRetriever` wires them to a store, an embedding and
the sparse encoder, and is the one retrieval every surface and the evaluation go through (via
:class:`rag.search.PostSearcher`).  Which defaults win is measured in ``docs/eval.md``.

Each list is fetched from the store as chunks and collapsed into posts, a post keeping its best
chunk (the first: lists come best first).  A list asks for a measured number of chunks per post
it wants (``DENSE_CHUNKS_PER_POST``, ``SPARSE_CHUNKS_PER_POST``) and asks again, for twice as
many, while the store returned everything asked for yet fewer posts than wanted (long posts ate
the budget); the posts found are the same whatever the first ask, only the cost differs.

Candidates come with one payload field, ``doc_id`` (what collapsing needs); only the posts that
end up in the answer get their whole payloads (texts, metadata), in one
:meth:`~rag.store.ChunkStore.chunks_by_id` call.  The engine spends ~10–20 µs reading a payload,
so fetching hybrid's candidates with their texts (2 × 400 chunks, as it once did) cost more than
the searches themselves (docs/benchmarks.md, "Search latency").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar, cast

from rag.errors import InputError
from rag.settings import Settings
from rag.sparse import SparseEncoder
from rag.store import DOC_ID_KEY, ChunkStore, StoredChunk, StoreFilter

K = TypeVar("K", bound=Hashable)
Mode = Literal["dense", "sparse", "hybrid"]
FusionMethod = Literal["rrf", "minmax", "zscore"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "minmax", "zscore")
MAX_CHUNKS = 2000  # per list and query
CANDIDATE_FIELDS = (DOC_ID_KEY,)  # the payload a candidate chunk is fetched with
# Chunks a list asks for first, per post wanted.  A long post's chunks lie close together, so a
# dense list brings several at once: 100 posts took 126–132 chunks at the median and 168–178 at
# the 90th percentile, 252 at most (100 queries, 25k and 100k posts); a BM25 list took exactly 100
# for 95 % of them (bench/hnsw_recall.py).  Too few costs a second call, too many more payloads.
DENSE_CHUNKS_PER_POST = 2.0
SPARSE_CHUNKS_PER_POST = 1.25


def first_ask(posts: int, per_post: float) -> int:
    """Chunks a list asks for first to find ``posts`` posts."""
    return min(int(posts * per_post) + 4, MAX_CHUNKS)


def validate_mode(mode: str) -> Mode:
    """The retrieval mode, checked (the one place modes are validated)."""
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    return cast(Mode, mode)


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


def collapse(chunks: Iterable[StoredChunk]) -> list[tuple[str, StoredChunk]]:
    """Chunks → posts: each post's best chunk, best posts first (equal scores keep their order,
    so a list that came best first keeps each post's first chunk)."""
    best: dict[str, StoredChunk] = {}
    for chunk in chunks:
        doc_id = chunk.doc_id  # a property: read once (hundreds of chunks per query)
        kept = best.get(doc_id)
        if kept is None or chunk.score > kept.score:
            best[doc_id] = chunk
    return sorted(best.items(), key=lambda kv: kv[1].score, reverse=True)


@dataclass(frozen=True)
class Candidate:
    """One post found by retrieval: its (fused) score and its best chunk (for the snippet)."""

    doc_id: str
    score: float
    chunk: StoredChunk


class Retrieved(list[Candidate]):
    """The best posts, best first (a plain list to callers that want one), and ``more``: whether
    asking for more could find more."""

    more: bool = False

    @classmethod
    def of(cls, candidates: list[Candidate], more: bool) -> Retrieved:
        found = cls(candidates)
        found.more = more
        return found


PostList = list[tuple[str, StoredChunk]]


class HybridRetriever:
    """Query → posts by ``dense``, ``sparse`` or fused ``hybrid`` retrieval."""

    def __init__(self, store: ChunkStore, embed_query: Callable[[str], list[float]],
                 encoder: SparseEncoder | None = None,
                 fusion: FusionConfig | None = None) -> None:
        self.store = store
        self.embed_query = embed_query
        self.encoder = encoder or SparseEncoder()
        self.fusion = fusion or FusionConfig()

    def dense(self, query: str | Sequence[float], flt: StoreFilter | None,
              limit: int, *, whole: bool = True) -> tuple[PostList, bool]:
        """The ``limit`` posts nearest to the query (a text, or an embedding already made).

        ``whole``: their chunks with whole payloads; else with ``doc_id`` only (for fusion)."""
        vector = self.embed_query(query) if isinstance(query, str) else list(query)
        posts, more = self._posts(
            lambda n: self.store.search_dense(vector, flt, n, fields=CANDIDATE_FIELDS), limit,
            DENSE_CHUNKS_PER_POST)
        return (self.whole(posts) if whole else posts), more

    def sparse(self, query: str, flt: StoreFilter | None, limit: int, *,
               whole: bool = True) -> tuple[PostList, bool]:
        """The ``limit`` best posts by BM25 (``whole`` as for :meth:`dense`)."""
        vector = self.encoder.encode_query(query)
        posts, more = self._posts(
            lambda n: self.store.search_sparse(vector, flt, n, fields=CANDIDATE_FIELDS), limit,
            SPARSE_CHUNKS_PER_POST)
        return (self.whole(posts) if whole else posts), more

    def whole(self, posts: PostList) -> PostList:
        """The posts with their chunks' whole payloads (scores kept); a post deleted since it
        was found is left out."""
        found = {c.id: c.payload for c in self.store.chunks_by_id([c.id for _, c in posts])}
        return [(doc_id, StoredChunk(c.id, found[c.id], c.score)) for doc_id, c in posts
                if c.id in found]

    @staticmethod
    def _posts(fetch: Callable[[int], list[StoredChunk]], limit: int,
               per_post: float) -> tuple[PostList, bool]:
        chunks = first_ask(limit, per_post)
        while True:
            found = fetch(chunks)
            posts = collapse(found)
            exhausted = len(found) < chunks
            # Fewer posts than asked although the store returned all we asked for: long posts ate
            # the budget, so ask for more chunks.
            if len(posts) >= limit or exhausted or chunks >= MAX_CHUNKS:
                more = len(posts) > limit or (not exhausted and chunks < MAX_CHUNKS)
                return posts[:limit], more
            chunks = min(chunks * 2, MAX_CHUNKS)

    def retrieve(self, query: str, mode: Mode = "hybrid", flt: StoreFilter | None = None,
                 limit: int = 10, fusion: FusionConfig | None = None) -> Retrieved:
        """The best ``limit`` posts for ``query``, best first."""
        validate_mode(mode)
        if mode != "hybrid":
            posts, more = (self.dense if mode == "dense" else self.sparse)(query, flt, limit)
            return Retrieved.of([Candidate(d, c.score, c) for d, c in posts], more)
        config = fusion or self.fusion
        # Candidate depth in whole blocks of the configured depth: min-max fusion normalises over
        # the candidate lists, so a depth growing with every page would reorder earlier pages.
        depth = config.depth * math.ceil(limit / config.depth)
        dense, dense_more = self.dense(query, flt, depth, whole=False)
        sparse, sparse_more = self.sparse(query, flt, depth, whole=False)
        fused = fuse_candidates(dense, sparse, replace(config, depth=depth), limit)
        chunks = dict(self.whole([(c.doc_id, c.chunk) for c in fused]))
        more = len(fused) >= limit and (dense_more or sparse_more or
                                        len({d for d, _ in dense} | {d for d, _ in sparse}) > limit)
        return Retrieved.of([Candidate(c.doc_id, c.score, chunks[c.doc_id]) for c in fused
                             if c.doc_id in chunks], more)


def fuse_candidates(dense: Sequence[tuple[str, StoredChunk]],
                    sparse: Sequence[tuple[str, StoredChunk]],
                    config: FusionConfig, limit: int) -> list[Candidate]:
    """Fuse collapsed dense and sparse post lists into the best ``limit`` candidates."""
    best = dict(sparse[: config.depth])
    best.update(dense[: config.depth])  # the dense best chunk wins as snippet when both have it
    fused = fuse([(d, c.score) for d, c in dense], [(d, c.score) for d, c in sparse], config)
    return [Candidate(d, s, best[d]) for d, s in fused[:limit]]
