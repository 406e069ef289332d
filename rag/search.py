"""Search: a query and filters → posts (not chunks), best first.

The query is embedded with the index's model and matched against the chunks in the vector store,
filtered by channel, tags and date in the store itself.  Several chunks of one long post may
match; they are collapsed into one hit per post, scored by its best chunk, whose text becomes the
snippet.  :class:`PostSearcher` is the one search of tgrag: the CLI, the API, QA, the bot and
``tgrag eval retrieval`` all rank through :meth:`PostSearcher.rank`.

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

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from rag.dedup import group_copies
from rag.errors import InputError
from rag.hybrid import MODES, FusionConfig, HybridRetriever, Mode, validate_mode
from rag.hybrid import collapse as collapse_chunks
from rag.index import Index
from rag.rerank import RankingConfig, post_texts, rerank
from rag.snippets import make_snippet, query_stems, snippet_with_highlights
from rag.store import StoredChunk, StoreFilter
from rag.tags import normalize_tag

__all__ = ["MAX_K", "MAX_OFFSET", "MAX_QUERY_CHARS", "MODES", "PostHit", "PostSearcher",
           "SearchFilters", "SearchPage", "parse_date", "parse_filters"]
MAX_K = 100
MAX_QUERY_CHARS = 2000
# Deepest page start: offset + k + 1 posts, twice that fetched for collapsing, stays ≤ MAX_FETCH.
MAX_OFFSET = 400
MAX_FETCH = 1000  # candidate posts

K_HINT = f"a number of posts from 1 to {MAX_K}, e.g. 10"
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

    def to_store(self) -> StoreFilter:
        """The store's filter (tags in their one spelling, ``rag.tags``)."""
        return StoreFilter(
            tenant=self.tenant,
            channel_ids=tuple(int(c) for c in self.channel_ids),
            tags=tuple(t for t in (normalize_tag(t) for t in self.tags) if t),
            since=self.since, until=self.until,
        )


def parse_filters(tags: Iterable[str] = (), since: str | int | None = None,
                  until: str | int | None = None) -> SearchFilters:
    """Filters from what a person typed (tags, ``--since``/``--until``), checked; channels are
    resolved against a catalog by the caller (``api.services.Services.filters``)."""
    filters = SearchFilters(
        tags=list(tags),
        since=parse_date(since) if since not in (None, "") else None,
        until=parse_date(until, end_of_day=True) if until not in (None, "") else None,
    )
    filters.validate()
    return filters


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
    def from_dict(cls, data: dict[str, Any]) -> PostHit:
        """A hit back from :meth:`to_dict` (or a copy from :meth:`copy_dict`), e.g. the snapshot an
        alert notification keeps."""
        date_iso = data.get("date")
        return cls(
            id=str(data.get("id") or ""),
            channel_id=int(data.get("channel_id") or 0),
            channel=data.get("channel") or "",
            channel_title=data.get("channel_title") or "",
            message_id=int(data.get("message_id") or 0),
            date=int(datetime.fromisoformat(date_iso).timestamp()) if date_iso else 0,
            link=data.get("link") or "",
            score=float(data.get("score") or 0.0),
            snippet=data.get("snippet") or "",
            tags=list(data.get("tags") or []),
            highlights=[(int(s), int(e)) for s, e in data.get("highlights") or []],
            copies=[cls.from_dict(c) for c in data.get("copies") or []],
        )

    @classmethod
    def from_chunk(cls, chunk: StoredChunk, score: float | None = None) -> PostHit:
        """The hit a post's best chunk makes (``score``: the post's, else the chunk's)."""
        p = chunk.payload
        return cls(
            id=chunk.doc_id,
            channel_id=int(p.get("channel_id", 0)),
            channel=p.get("channel") or "",
            channel_title=p.get("channel_title") or "",
            message_id=int(p.get("message_id", 0)),
            date=int(p.get("date", 0)),
            link=p.get("link") or "",
            score=float(chunk.score if score is None else score),
            snippet=make_snippet(chunk.text),
            tags=list(p.get("tags") or []),
            text=chunk.text,
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
    """The query text, checked with ``k`` and ``mode`` (before anything is loaded or fetched)."""
    text = (query or "").strip()
    if not text:
        raise InputError("empty query", hint="pass the words to search for")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(
            f"query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}",
            hint="shorten the query",
        )
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint=K_HINT, param="k")
    validate_mode(mode)
    return text


class PostSearcher:
    """Searches an opened :class:`Index` (its tenant's posts) and returns posts.

    ``fusion`` and ``collapse_duplicates`` default to the settings; the evaluation overrides them
    to measure other configurations through this same path.
    """

    def __init__(self, index: Index, *, fusion: FusionConfig | None = None,
                 collapse_duplicates: bool | None = None) -> None:
        self.index = index
        settings = index.settings
        self.collapse_duplicates = (settings.collapse_duplicates if collapse_duplicates is None
                                    else collapse_duplicates)
        self.retriever = HybridRetriever(
            index.store, index.embedding.embed_query,
            fusion=fusion or FusionConfig.from_settings(settings),
        )

    def search(
        self,
        query: str,
        filters: SearchFilters | None = None,
        k: int = 10,
        mode: str | None = None,
        offset: int = 0,
        ranking: RankingConfig | None = None,
    ) -> SearchPage:
        """Hits ``offset .. offset + k`` of the ranking (copies collapsed), best first, each with
        its snippet around the query's words."""
        page = self.rank(query, filters, k, mode, offset, ranking)
        stems = query_stems(query)
        for hit in page:
            hit.mark(stems)
        return page

    def rank(
        self,
        query: str,
        filters: SearchFilters | None = None,
        k: int = 10,
        mode: str | None = None,
        offset: int = 0,
        ranking: RankingConfig | None = None,
    ) -> SearchPage:
        """:meth:`search` without the snippets: the ranking itself (what evaluation scores)."""
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
        hits = self._ranked(text, filters, validate_mode(mode), ranking.pool(offset + k + 1))
        hits = rerank(text, hits, ranking, lambda top: post_texts(self.index, top))
        page = SearchPage(hits[offset:offset + k])
        page.next_offset = offset + k if len(hits) > offset + k else None
        return page

    def _ranked(self, text: str, filters: SearchFilters, mode: Mode, need: int) -> list[PostHit]:
        """At least ``need`` hits (fewer if the index has fewer), best first, copies collapsed."""
        flt = filters.to_store()
        threshold = self.index.settings.duplicate_threshold
        # Copies take up candidates: fetch twice the hits, more if collapsing left too few.
        limit = min(need * 2 if self.collapse_duplicates else need, MAX_FETCH)
        while True:
            found = self.retriever.retrieve(text, mode, flt, limit)
            posts = [PostHit.from_chunk(c.chunk, c.score) for c in found
                     if filters.min_score is None or c.score >= filters.min_score]
            more = found.more and len(posts) == len(found)  # a score cut ends it
            hits = collapse_copies(posts, threshold) if self.collapse_duplicates else posts
            if len(hits) >= need or not more or limit >= MAX_FETCH:
                return hits
            limit = min(limit * 2, MAX_FETCH)


def collapse(chunks: Iterable[StoredChunk], min_score: float | None = None) -> list[PostHit]:
    """One hit per post, keeping each post's best chunk (at or above ``min_score``); best first."""
    kept = (c for c in chunks if min_score is None or c.score >= min_score)
    return [PostHit.from_chunk(c) for _, c in collapse_chunks(kept)]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
