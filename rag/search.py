"""Search: a query and filters → posts (not chunks), best first.

The query is embedded with the index's model and matched against the chunks in Qdrant, filtered by
channel, tags and date in Qdrant itself.  Several chunks of one long post may match; they are
collapsed into one hit per post, scored by its best chunk, whose text becomes the snippet.

Modes: ``dense`` (above), ``sparse`` (BM25 over the ``sparse`` vector, ``rag.sparse``) and
``hybrid`` (both lists fused, ``rag.hybrid``; the default, ``TGRAG_SEARCH_MODE``, chosen on the
eval sets in docs/eval.md).  In sparse and hybrid mode a hit's score is the BM25 or fused score,
so ``min_score`` is on that scale.

Pages: ``offset`` skips that many hits.  What is fetched depends on ``offset + k`` only, so the
page at ``offset=k`` is exactly hits ``k..2k`` of a ``2k`` query.  Near-duplicates (forwards,
cross-posts; ``rag.dedup``) collapse into one hit listing the others in ``copies``, before paging,
so offsets count collapsed hits.  The snippet is the stretch of the best chunk with the query's
words, which ``highlights`` marks (``rag.snippets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any

from qdrant_client import models

from rag.dedup import group_copies
from rag.errors import InputError
from rag.hybrid import FusionConfig, HybridRetriever
from rag.index import Index
from rag.rerank import RankingConfig, post_texts, rerank
from rag.snippets import (  # noqa: F401 - SNIPPET_CHARS re-exported
    SNIPPET_CHARS,
    make_snippet,
    query_stems,
    snippet_with_highlights,
)
from rag.store import DOC_ID_KEY, TEXT_KEY, PostStore
from rag.tags import normalize_tag  # noqa: F401 - re-exported

MODES = ("dense", "sparse", "hybrid")
AVAILABLE_MODES = MODES
MAX_K = 100
MAX_QUERY_CHARS = 2000
# Deepest page start: offset + k + 1 posts, twice that fetched for collapsing, stays ≤ MAX_FETCH.
MAX_OFFSET = 400
# Chunks fetched per wanted post: long posts contribute several chunks, which collapse into one.
OVERFETCH = 4
MAX_FETCH = 1000  # candidate posts
MAX_CHUNKS = 2000

_DATE_HINT = "use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC unless an offset is given) or unix seconds"


def parse_date(value: str | int, *, end_of_day: bool = False) -> int:
    """Unix seconds (UTC) from ``2024-05-01``, ``2024-05-01T10:00[:SS][+03:00]`` or unix seconds.

    With ``end_of_day`` a bare date means its last second, so ``--until 2024-05-01`` includes
    posts of May 1st.
    """
    if isinstance(value, bool):
        raise InputError(f"invalid date {value!r}", hint=_DATE_HINT)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        raise InputError("empty date", hint=_DATE_HINT)
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
            return int(moment.timestamp())
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise InputError(f"invalid date {text!r}", hint=_DATE_HINT) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@dataclass(slots=True)
class SearchFilters:
    """What to restrict a search to.  Empty lists and ``None`` mean no restriction."""

    channel_ids: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # any of them
    since: int | None = None  # unix seconds, inclusive
    until: int | None = None  # unix seconds, inclusive
    min_score: float | None = None
    tenant: str | None = None  # the owner of the posts (rag.tenants); None = the index's tenant

    def validate(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InputError(
                f"since ({_iso(self.since)}) is after until ({_iso(self.until)})",
                hint="swap the dates or drop one of them",
            )

    def for_store(self, store: PostStore) -> models.Filter | None:
        """:meth:`to_qdrant`, without the tenant condition where every point is the tenant's."""
        return self.to_qdrant(tenant_condition=not store.holds_only(self.tenant))

    def to_qdrant(self, *, tenant_condition: bool = True) -> models.Filter | None:
        must: list[Any] = []
        if self.tenant is not None and tenant_condition:
            must.append(models.FieldCondition(key="tenant",
                                              match=models.MatchValue(value=self.tenant)))
        if self.channel_ids:
            must.append(models.FieldCondition(
                key="channel_id", match=models.MatchAny(any=[int(c) for c in self.channel_ids])
            ))
        tags = [t for t in (normalize_tag(t) for t in self.tags) if t]
        if tags:
            must.append(models.FieldCondition(key="tags", match=models.MatchAny(any=tags)))
        if self.since is not None or self.until is not None:
            must.append(models.FieldCondition(
                key="date", range=models.Range(gte=self.since, lte=self.until)
            ))
        return models.Filter(must=must) if must else None


@dataclass(slots=True)
class PostHit:
    """One post in the results (the contract's search JSON shape, see ``to_dict``)."""

    id: str
    channel_id: int
    channel: str
    channel_title: str
    message_id: int
    date: int  # unix seconds; ISO 8601 in to_dict()
    link: str
    score: float
    snippet: str
    tags: list[str]
    highlights: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in snippet
    copies: list[PostHit] = field(default_factory=list)  # near-duplicates, oldest first
    text: str = field(default="", repr=False)  # the best chunk; not serialised

    @property
    def date_iso(self) -> str:
        return _iso(self.date)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel_id": self.channel_id,
            "channel": self.channel,
            "channel_title": self.channel_title,
            "message_id": self.message_id,
            "date": self.date_iso,
            "link": self.link,
            "score": round(self.score, 4),
            "snippet": self.snippet,
            "tags": list(self.tags),
            "highlights": [list(span) for span in self.highlights],
            "copies": [c.copy_dict() for c in self.copies],
        }

    def copy_dict(self) -> dict[str, Any]:
        """This post as another hit's copy: where it is, not what it says."""
        return {"id": self.id, "channel": self.channel, "channel_id": self.channel_id,
                "channel_title": self.channel_title, "message_id": self.message_id,
                "link": self.link, "date": self.date_iso}

    def mark(self, stems: frozenset[str]) -> None:
        """Snippet around the query's words in the best chunk, and their spans."""
        if self.text:
            self.snippet, self.highlights = snippet_with_highlights(self.text, stems)

    @classmethod
    def from_point(cls, point: models.ScoredPoint) -> PostHit:
        p = point.payload or {}
        return cls(
            id=str(p.get(DOC_ID_KEY) or point.id),
            channel_id=int(p.get("channel_id", 0)),
            channel=p.get("channel") or "",
            channel_title=p.get("channel_title") or "",
            message_id=int(p.get("message_id", 0)),
            date=int(p.get("date", 0)),
            link=p.get("link") or "",
            score=float(point.score),
            snippet=make_snippet(p.get(TEXT_KEY) or ""),
            tags=list(p.get("tags") or []),
            text=p.get(TEXT_KEY) or "",
        )


class SearchPage(list[PostHit]):
    """One page of hits, best first (a plain list to callers that want one), and ``next_offset``:
    the ``offset`` of the next page, ``None`` when there is none."""

    next_offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"results": [h.to_dict() for h in self], "next_offset": self.next_offset}


def collapse_copies(hits: list[PostHit], threshold: float) -> list[PostHit]:
    """Near-duplicate hits (best first) → one hit per text, listing the others in ``copies``.

    A group ranks where its best copy ranked and keeps that score, but shows the *oldest* copy
    (the original of a forward or a cross-post, what users expect to open) with its own snippet;
    the copies are close in score by construction, since their texts are.
    """
    out: list[PostHit] = []
    for group in group_copies([h.text or h.snippet for h in hits], threshold):
        members = [hits[i] for i in group]
        main = min(members, key=lambda h: h.date)  # min() keeps the best-ranked of equal dates
        main.score = members[0].score
        main.copies = sorted((h for h in members if h is not main), key=lambda h: h.date)
        out.append(main)
    return out


def validate_offset(offset: int) -> None:
    if not 0 <= offset <= MAX_OFFSET:
        raise InputError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}",
                         hint="the next page starts at the previous response's next_offset")


def validate_query(query: str, k: int, mode: str) -> str:
    text = (query or "").strip()
    if not text:
        raise InputError("empty query", hint="pass the words to search for")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(
            f"query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}",
            hint="shorten the query",
        )
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint="e.g. -k 10")
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if mode not in AVAILABLE_MODES:
        raise InputError(
            f"search mode {mode!r} is not available yet",
            hint=f"use {' or '.join(AVAILABLE_MODES)}",
        )
    return text


class PostSearcher:
    """Searches an opened :class:`Index` and returns posts."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def search(
        self,
        query: str,
        filters: SearchFilters | None = None,
        k: int = 10,
        mode: str | None = None,
        offset: int = 0,
        ranking: RankingConfig | None = None,
    ) -> SearchPage:
        """Hits ``offset .. offset + k`` of the ranking (copies collapsed), best first."""
        mode = mode or self.index.settings.search_mode
        text = validate_query(query, k, mode)
        validate_offset(offset)
        filters = filters or SearchFilters()
        filters.validate()
        if filters.tenant is None:  # a tenant's view of the index sees only its posts
            filters.tenant = self.index.tenant
        # Optional reranker / recency boost (rag.rerank; None = the settings): they reorder the
        # top TGRAG_RERANK_DEPTH posts, then the page is cut.
        ranking = ranking or RankingConfig.from_settings(self.index.settings)
        # One hit more than the page tells whether a next page exists.
        hits = self._ranked(text, filters, mode, ranking.pool(offset + k + 1))
        hits = rerank(text, hits, ranking, lambda top: post_texts(self.index, top))
        page = SearchPage(hits[offset:offset + k])
        page.next_offset = offset + k if len(hits) > offset + k else None
        stems = query_stems(text)
        for hit in page:
            hit.mark(stems)
        return page

    def _ranked(self, text: str, filters: SearchFilters, mode: str, need: int) -> list[PostHit]:
        """At least ``need`` hits (fewer if the index has fewer), best first, copies collapsed."""
        settings = self.index.settings
        collapsing = settings.collapse_duplicates
        if mode == "dense":
            vector = self.index.embedding.model.get_query_embedding(text)
            fetch = lambda n: self._dense(vector, filters, n)  # noqa: E731
        else:
            fetch = lambda n: self._lexical_or_hybrid(text, filters, n, mode)  # noqa: E731
        # Copies take up candidates: fetch twice the hits, more if collapsing left too few.
        limit = min(need * 2 if collapsing else need, MAX_FETCH)
        while True:
            posts, more = fetch(limit)
            hits = collapse_copies(posts, settings.duplicate_threshold) if collapsing else posts
            if len(hits) >= need or not more or limit >= MAX_FETCH:
                return hits
            limit = min(limit * 2, MAX_FETCH)

    def _lexical_or_hybrid(self, text: str, filters: SearchFilters, limit: int,
                           mode: str) -> tuple[list[PostHit], bool]:
        """The best ``limit`` posts, and whether asking for more could find more."""
        config = FusionConfig.from_settings(self.index.settings)
        # Candidate depth in whole blocks of TGRAG_FUSION_DEPTH: min-max fusion normalises over
        # the candidate lists, so a depth growing with every page would reorder earlier pages.
        config = replace(config, depth=config.depth * math.ceil(limit / config.depth))
        retriever = HybridRetriever(
            self.index.store, self.index.embedding.model.get_query_embedding, fusion=config,
        )
        flt = filters.for_store(self.index.store)
        candidates = retriever.retrieve(text, mode, flt, limit)  # type: ignore[arg-type]
        hits: list[PostHit] = []
        for cand in candidates:
            if filters.min_score is not None and cand.score < filters.min_score:
                continue
            hit = PostHit.from_point(cand.point)  # the post's best chunk gives the snippet
            hit.score = cand.score
            hits.append(hit)
        return hits, len(candidates) >= limit

    def _dense(self, vector: list[float], filters: SearchFilters,
               limit: int) -> tuple[list[PostHit], bool]:
        """The best ``limit`` posts, and whether asking for more could find more."""
        flt = filters.for_store(self.index.store)
        chunks = min(limit * OVERFETCH, MAX_CHUNKS)
        while True:
            points = self.index.store.search_dense(vector, flt, chunks)
            hits = collapse(points, filters.min_score)
            more = len(points) >= chunks and chunks < MAX_CHUNKS
            # Fewer posts than asked although Qdrant returned all we asked for: long posts ate the
            # budget, so fetch more.
            if len(hits) >= limit or not more:
                return hits[:limit], more or len(hits) > limit
            chunks = min(chunks * 2, MAX_CHUNKS)


def collapse(points: list[models.ScoredPoint], min_score: float | None = None) -> list[PostHit]:
    """One hit per post, keeping each post's best chunk; best posts first."""
    best: dict[str, models.ScoredPoint] = {}
    for point in points:
        if min_score is not None and point.score < min_score:
            continue
        doc_id = str((point.payload or {}).get(DOC_ID_KEY) or point.id)
        if doc_id not in best or point.score > best[doc_id].score:
            best[doc_id] = point
    ranked = sorted(best.values(), key=lambda p: p.score, reverse=True)
    return [PostHit.from_point(p) for p in ranked]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
