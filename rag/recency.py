"""Recency boost: newer posts move up among the top candidates of a search (off by default).

    final = (1 − w) · rel + w · 2^(−age / half_life)

``rel`` is the candidate's relevance min-max normalised over the candidate pool (the best is 1,
the worst 0), ``age`` is how much older the post is than the *newest post in the pool*, and ``w``
the weight (``TGRAG_RECENCY_WEIGHT``).  The newest candidate gets the full ``w``; one a half-life
older gets ``w / 2``.

Why this form (docs/benchmarks.md, *Reranking and recency*):

* Additive on normalised relevance, not multiplicative on raw scores: the raw scale differs by
  mode (dense cosines sit in a 0.75–0.9 band, BM25 is unbounded, fused min-max is 0–1, fused
  z-scores go negative).  A factor ``score · (1 − w + w · decay)`` would be strong on a narrow
  cosine band, weak on a wide one, and would flip sign on negative scores; ``w`` here means the
  same thing in every mode — the fusion normalises the same way for the same reason.
* Age relative to the newest candidate, not to "now": an archive or an eval set whose newest post
  is a year old would otherwise give every post a decay ≈ 0, i.e. no boost at all, and results
  would change with the wall clock.  Relative to the newest match, the boost means "among the
  posts that match, prefer the latest reports", the same today and next year, and a pool of
  equally dated posts (the BEIR eval sets, all dated 0) keeps its order exactly.

The functions are pure; ``rag.rerank`` applies them to the top ``TGRAG_RERANK_DEPTH`` posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.errors import InputError

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Recency:
    """The boost's parameters; ``half_life_days == 0`` or ``weight == 0`` means off."""

    half_life_days: float = 0.0
    weight: float = 0.2

    def __post_init__(self) -> None:
        if self.half_life_days < 0:
            raise InputError(f"recency half-life must be ≥ 0 days, got {self.half_life_days}",
                             hint="0 turns the recency boost off")
        if not 0 <= self.weight <= 1:
            raise InputError(f"recency weight must be between 0 and 1, got {self.weight}")

    @property
    def enabled(self) -> bool:
        return self.half_life_days > 0 and self.weight > 0


def decay(age_seconds: float, half_life_days: float) -> float:
    """``2^(−age / half_life)``: 1 for the newest post, ½ one half-life older (age ≥ 0)."""
    if half_life_days <= 0:
        raise InputError("half-life must be > 0")
    return 2.0 ** (-max(age_seconds, 0.0) / (half_life_days * SECONDS_PER_DAY))


def normalize(scores: Sequence[float]) -> list[float]:
    """Min-max to [0, 1]; a constant list (or one score) maps to all 1.0."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def boosted(scores: Sequence[float], dates: Sequence[int], config: Recency) -> list[float]:
    """The final scores of a candidate pool (relevance scores and unix dates, same order)."""
    if len(scores) != len(dates):
        raise InputError("one date per score")
    if not config.enabled or not scores:
        return list(scores)
    newest = max(dates)
    w = config.weight
    return [(1 - w) * rel + w * decay(newest - d, config.half_life_days)
            for rel, d in zip(normalize(scores), dates, strict=True)]


def order(scores: Sequence[float], dates: Sequence[int], config: Recency) -> list[int]:
    """Indices of the pool, best first after the boost; a tie goes to the newer post, then to
    the earlier position (stable)."""
    final = boosted(scores, dates, config)
    return sorted(range(len(final)), key=lambda i: (-final[i], -dates[i], i))
