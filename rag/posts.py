"""One post and its neighbours: ``get_post`` (the full post) and ``similar_posts`` ("more like
this").

"More like this" collapses near-duplicates like search does (``rag.dedup``), and the source
post's own copies (its forwards and cross-posts) are not "similar posts": they are listed apart,
in ``copies``.

All three work on a tenant's view of the index (:meth:`rag.index.Index.for_tenant`): the post is
looked up under the tenant's document id and every store read carries the tenant filter, so a
tenant can neither read nor be recommended another tenant's posts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rag.dedup import jaccard, shingles
from rag.errors import InputError, NotFoundError
from rag.hybrid import HybridRetriever
from rag.ids import doc_id as post_doc_id
from rag.index import Index
from rag.search import (
    K_HINT,
    MAX_FETCH,
    MAX_K,
    PostHit,
    SearchFilters,
    collapse,
    collapse_copies,
)
from rag.store import DOC_ID_KEY, NODE_ID_KEY, TENANT_KEY, TEXT_KEY, StoredChunk, StoreFilter

# Chunk vectors of the source post used as queries (a post rarely has more than a few chunks).
MAX_QUERY_CHUNKS = 8
FIND_POST_HINT = "search for the post first: each hit names its channel and message id"
PAYLOAD_HIDDEN = {TEXT_KEY, NODE_ID_KEY, DOC_ID_KEY, TENANT_KEY, "date_iso"}


@dataclass(slots=True)
class Post:
    """A whole post as stored: text, metadata, tags and link."""

    id: str
    channel_id: int
    channel: str
    channel_title: str
    message_id: int
    date: int
    link: str
    text: str
    tags: list[str]
    chunks: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "channel_id": self.channel_id, "channel": self.channel,
            "channel_title": self.channel_title, "message_id": self.message_id,
            "date": datetime.fromtimestamp(self.date, UTC).isoformat(), "link": self.link,
            "text": self.text, "tags": list(self.tags), "chunks": self.chunks,
            "metadata": dict(self.metadata),
        }


def resolve_post_id(index: Index, channel: str, message_id: int) -> str:
    """The tenant's document id of ``channel``/``message_id``; an unknown channel is not found."""
    if message_id < 1:
        raise InputError(f"message id must be positive, got {message_id}")
    try:
        channel_id = index.catalog.resolve(channel)
    except InputError as err:
        raise NotFoundError(err.message, hint=err.hint) from None
    return post_doc_id(channel_id, message_id, index.tenant)


def get_post(index: Index, channel: str, message_id: int) -> Post:
    """The full post ``channel``/``message_id`` of the index's tenant."""
    doc_id = resolve_post_id(index, channel, message_id)
    records = index.store.chunks_of(doc_id, tenant=index.tenant)
    if not records:
        raise NotFoundError(f"no post {message_id} in channel {channel!r}",
                            hint=FIND_POST_HINT)
    payload = dict(records[0].payload)
    text = index.post_text(doc_id)
    if text is None:  # not committed yet (an ingest in flight): rebuild from the chunks
        text = "\n\n".join(r.text for r in records)
    metadata = {k: v for k, v in payload.items() if k not in PAYLOAD_HIDDEN}
    return Post(
        id=doc_id, channel_id=int(payload.get("channel_id", 0)),
        channel=payload.get("channel") or "", channel_title=payload.get("channel_title") or "",
        message_id=int(payload.get("message_id", message_id)), date=int(payload.get("date", 0)),
        link=payload.get("link") or "", text=text, tags=list(payload.get("tags") or []),
        chunks=len(records), metadata=metadata,
    )


@dataclass(slots=True)
class Similar:
    """"More like this": the nearest posts (copies collapsed) and the source post's own copies."""

    hits: list[PostHit]
    copies: list[PostHit]  # near-duplicates of the source post, oldest first

    def to_dict(self) -> dict[str, Any]:
        return {"results": [h.to_dict() for h in self.hits],
                "copies": [c.copy_dict() for c in self.copies]}


def similar_posts(index: Index, channel: str, message_id: int, k: int = 10,
                  filters: SearchFilters | None = None) -> Similar:
    """Posts closest to ``channel``/``message_id``, by its stored chunk vectors (not re-embedded);
    the post itself is excluded, and so are its copies (returned apart).  A candidate's score is
    its best chunk against any source chunk.
    """
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint=K_HINT, param="k")
    doc_id = resolve_post_id(index, channel, message_id)
    records = index.store.chunks_of(doc_id, tenant=index.tenant, with_vectors=True)
    if not records:
        raise NotFoundError(f"no post {message_id} in channel {channel!r}",
                            hint=FIND_POST_HINT)
    filters = filters or SearchFilters()
    filters.validate()
    filters.tenant = index.tenant
    flt = replace(filters.to_store(), exclude_doc_ids=(doc_id,))
    vectors = [r.dense for r in records[:MAX_QUERY_CHUNKS] if r.dense]
    retriever = HybridRetriever(index.store, index.embedding.embed_query)
    settings = index.settings
    if not settings.collapse_duplicates:
        return Similar(_nearest(retriever, vectors, flt, k)[0][:k], [])
    threshold = settings.duplicate_threshold
    source = [shingles(r.text) for r in records]
    limit = k * 4
    while True:
        posts, more = _nearest(retriever, vectors, flt, limit)
        own: list[PostHit] = []
        rest: list[PostHit] = []
        for hit in posts:
            text = shingles(hit.text)
            is_copy = any(jaccard(text, s) >= threshold for s in source)
            (own if is_copy else rest).append(hit)
        hits = collapse_copies(rest, threshold)
        # Copies ate the candidates: widen until k remain or the collection has no more.
        if len(hits) >= k or not more or limit >= MAX_FETCH:
            return Similar(hits[:k], sorted(own, key=lambda h: h.date))
        limit = min(limit * 2, MAX_FETCH)


def _nearest(retriever: HybridRetriever, vectors: list[list[float]], flt: StoreFilter,
             limit: int) -> tuple[list[PostHit], bool]:
    """Posts nearest to any of ``vectors`` (``limit`` posts each), best first, and whether
    a larger ``limit`` could find more."""
    chunks: list[StoredChunk] = []
    more = False
    for vector in vectors:
        posts, found_more = retriever.dense(vector, flt, limit)
        more = more or found_more
        chunks += [chunk for _, chunk in posts]
    return collapse(chunks), more
