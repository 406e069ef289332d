"""The store interface: what the rest of tgrag may ask of a vector engine, in our own types.

One collection holds every chunk of every post of every tenant: a named dense vector, a named
sparse (BM25) vector, and a payload of the post's metadata plus ``text``, ``node_id``, ``doc_id``
and ``tenant``.  Engines implement :class:`ChunkStore`; nothing outside ``rag/store`` imports an
engine's library, so a second engine plugs in here and nowhere else.

Writes keep one crash-safe order, defined once in :class:`ChunkStoreBase.write`: upsert the new
chunks first, then delete each post's chunks this write did not produce.  A crash in between leaves
the post with its new chunks and maybe some stale ones, never with none (unlike LlamaIndex's
UPSERTS, which deletes a changed document's vectors before the new ones exist, issue #22639), and
the pipeline's next run redoes the post.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rag.ids import DEFAULT_TENANT, point_id

DENSE = "dense"
SPARSE = "sparse"
# Payload keys that carry the chunk itself rather than post metadata.
TEXT_KEY, NODE_ID_KEY, DOC_ID_KEY, TENANT_KEY = "text", "node_id", "doc_id", "tenant"
# The node metadata key a chunk's sparse vector travels in from the encoder to the store ("_" keeps
# it out of the payload).
SPARSE_METADATA_KEY = "_sparse"
# Payload fields with an index in every engine (filters and deletes use them).
INDEXED_FIELDS = ("channel_id", "date", "tags", DOC_ID_KEY, TENANT_KEY)
# Candidates an HNSW dense search explores (``hnsw_ef``; at least its limit).  With the engine's
# default, a 129-chunk dense list held 85 % of the exact top-10 posts at 100k posts (92 % at 25k);
# with 400, 98 % (what the 400-chunk asks got before candidates were sized to posts), for ~1.3 ms
# more (`bench/hnsw_recall.py`, docs/benchmarks.md).  Exact scans (small segments) ignore it.
DENSE_SEARCH_EF = 400


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse vector: term ids (sorted, unique) and their weights."""

    indices: list[int]
    values: list[float]


@dataclass(slots=True)
class Chunk:
    """One chunk to write: its ids, its text, its vectors and its post's metadata."""

    node_id: str
    doc_id: str
    text: str
    dense: list[float]
    sparse: SparseVector | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        return point_id(self.node_id)

    def payload(self) -> dict[str, Any]:
        payload = {k: v for k, v in self.metadata.items() if not k.startswith("_")}
        payload.setdefault(TENANT_KEY, DEFAULT_TENANT)
        payload[TEXT_KEY] = self.text
        payload[NODE_ID_KEY] = self.node_id
        payload[DOC_ID_KEY] = self.doc_id
        return payload


@dataclass(slots=True)
class StoredChunk:
    """A chunk read back: point id, payload, and (searches) its score or (asked for) vectors."""

    id: str
    payload: dict[str, Any]
    score: float = 0.0
    vector: dict[str, Any] | None = None

    @property
    def doc_id(self) -> str:
        return str(self.payload.get(DOC_ID_KEY) or self.id)

    @property
    def text(self) -> str:
        return str(self.payload.get(TEXT_KEY) or "")

    @property
    def node_id(self) -> str:
        return str(self.payload.get(NODE_ID_KEY) or self.id)

    @property
    def dense(self) -> list[float] | None:
        return (self.vector or {}).get(DENSE)


def stored_chunk(record: Any, sparse_type: type) -> StoredChunk:
    """An engine's record or scored point as a :class:`StoredChunk` (ids as strings).

    Both engines' records have ``id``, ``payload``, ``vector`` (a dense list, or named vectors
    whose sparse ones are ``sparse_type`` with ``indices``/``values``) and, when scored, ``score``.
    """
    raw = record.vector
    vector: dict[str, Any] | None = None
    if isinstance(raw, dict):
        vector = {name: SparseVector(list(v.indices), list(v.values))
                  if isinstance(v, sparse_type) else v for name, v in raw.items()}
    elif raw is not None:
        vector = {DENSE: raw}
    return StoredChunk(id=str(record.id), payload=dict(record.payload or {}),
                       score=float(getattr(record, "score", 0.0) or 0.0), vector=vector)


def payload_fields(fields: Sequence[str] | None) -> bool | list[str]:
    """The engines' payload selector for ``fields``: those keys, or the whole payload (None)."""
    return list(fields) if fields is not None else True


@dataclass(frozen=True, slots=True)
class StoreFilter:
    """Which chunks: all conditions must hold; empty tuples and ``None`` mean "any"."""

    tenant: str | None = None
    channel_ids: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()  # any of them
    since: int | None = None  # unix seconds, inclusive
    until: int | None = None  # unix seconds, inclusive
    doc_ids: tuple[str, ...] = ()  # any of them
    exclude_doc_ids: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.tenant is not None or self.channel_ids or self.tags
                    or self.since is not None or self.until is not None or self.doc_ids
                    or self.exclude_doc_ids)


@runtime_checkable
class ChunkStore(Protocol):
    """A vector engine holding one collection of post chunks (see the module docstring)."""

    collection: str
    model_name: str
    dim: int

    def write(self, chunks: Sequence[Chunk]) -> None:
        """Upsert ``chunks``; then drop each of their posts' chunks not among them."""

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of these posts."""

    def delete_matching(self, flt: StoreFilter) -> None:
        """Delete every chunk the filter selects (must not be empty)."""

    def count(self, flt: StoreFilter | None = None) -> int:
        """Exact number of chunks the filter selects."""

    def chunks_of(self, doc_id: str, *, tenant: str | None = None,
                  with_vectors: bool = False) -> list[StoredChunk]:
        """Every chunk of one post (of ``tenant`` when given), in chunk order."""

    def search_dense(self, vector: Sequence[float], flt: StoreFilter | None,
                     limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        """Chunks nearest to ``vector`` (cosine), best first, with only ``fields`` of their
        payloads (all if None)."""

    def search_sparse(self, vector: SparseVector, flt: StoreFilter | None,
                      limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        """Chunks ranked by BM25 (the sparse vector, IDF applied by the engine), best first,
        with only ``fields`` of their payloads (all if None)."""

    def chunks_by_id(self, point_ids: Sequence[str]) -> list[StoredChunk]:
        """The chunks with these point ids, whole payloads, no vectors, in the order given; an
        id the store no longer holds is left out.

        A search asks for candidates with ``fields=(DOC_ID_KEY,)`` and reads the winners' payloads
        here: reading a payload costs the engine ~15 µs a point, so a hybrid search fetching 800
        candidates with their texts spent most of its time there (docs/benchmarks.md)."""

    def scroll(self, flt: StoreFilter | None = None, fields: Sequence[str] | None = None,
               page: int = 2048, *, with_vectors: bool = False) -> Iterator[StoredChunk]:
        """Every chunk the filter selects, with only ``fields`` of the payload (all if None),
        and with ``with_vectors`` its dense vector (``StoredChunk.dense``)."""

    def flush(self) -> None:
        """Make every write so far durable (the pipeline calls it at its commit points)."""

    def optimize(self) -> bool:
        """Bring the search index up to date with the writes so far; True if there was work.

        The embedded engine builds its HNSW graph only here, blocking (and holding the GIL) for
        as long as that takes, so only processes that serve nothing call it (the maintenance
        policy in README.md); a server optimizes by itself in the background (no-op)."""

    def check(self) -> None:
        """Raise :class:`rag.errors.BackendUnavailable` when the engine does not answer."""

    def describe(self) -> str:
        """Where the data lives, for messages (``Qdrant local mode in data/qdrant``)."""

    def close(self) -> None:
        """Release the engine (files, connections)."""


class ChunkStoreBase:
    """Shared behaviour of the engines: the crash-safe write order, defined once."""

    collection: str
    model_name: str
    dim: int

    def write(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        keep: dict[str, list[str]] = defaultdict(list)
        for chunk in chunks:
            keep[chunk.doc_id].append(chunk.point_id)
        self._upsert(chunks)
        self._delete_stale(keep)

    def _upsert(self, chunks: Sequence[Chunk]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _delete_stale(self, keep: dict[str, list[str]]) -> None:  # pragma: no cover - abstract
        """Delete the chunks of each post ``keep`` names except the point ids it lists."""
        raise NotImplementedError
