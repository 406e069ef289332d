"""The Qdrant engine through ``qdrant-client``: a Qdrant server or cluster (``TGRAG_QDRANT_URL``).

Every ``qdrant_client`` call of tgrag is in this module.  The collection has a named dense vector
(cosine), a named sparse vector with ``Modifier.IDF`` (BM25 at query time), payload indexes on
the filtered fields (``tenant`` marked ``is_tenant``), and records the embedding model and
dimension in its metadata so an index built with another model is refused.  A new collection
takes its sharding from the settings (``TGRAG_QDRANT_SHARD_NUMBER``, ``…_REPLICATION_FACTOR``,
``…_WRITE_CONSISTENCY``); Qdrant itself spreads the shards and replicas over a cluster's nodes.

The same class also opens qdrant-client's *local mode* (a folder, pure Python), which tgrag no
longer uses as an engine: the migration reads data folders built with it
(:mod:`rag.store.migration`), the tests use it as a stand-in for a server (it speaks the server's
client API; no Qdrant server ships as a Python or Debian package), and the benchmarks compare it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from rag.errors import BackendUnavailable, DataDirLocked, InputError, ModelMismatch
from rag.ids import chunk_number
from rag.settings import Settings
from rag.store.base import (
    DENSE,
    DENSE_SEARCH_EF,
    DOC_ID_KEY,
    NODE_ID_KEY,
    SPARSE,
    TENANT_KEY,
    Chunk,
    ChunkStoreBase,
    SparseVector,
    StoredChunk,
    StoreFilter,
    payload_fields,
    stored_chunk,
)

MAX_CHUNKS_PER_POST = 1000  # chunks_of reads one page: a post never has that many


def open_client(settings: Settings) -> tuple[QdrantClient, str]:
    """A client for the server the settings name, and where it is."""
    if not settings.qdrant_url:
        raise InputError("no Qdrant server configured", hint="set TGRAG_QDRANT_URL")
    client = QdrantClient(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        timeout=10,
    )
    try:
        client.get_collections()
    except Exception as exc:  # httpx/grpc errors vary by transport
        raise BackendUnavailable(
            f"Qdrant is not reachable at {settings.qdrant_url}: {exc}",
            hint="start Qdrant (docker compose up qdrant) or unset TGRAG_QDRANT_URL",
        ) from exc
    return client, f"Qdrant at {settings.qdrant_url}"


def open_local_client(path: Path) -> QdrantClient:
    """qdrant-client's local mode on ``path`` (the migration, tests and benchmarks only)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # "Local mode is not recommended for more than 20,000 points": tgrag only reads it.
            warnings.simplefilter("ignore", UserWarning)
            return QdrantClient(path=str(path))
    except RuntimeError as exc:  # "Storage folder ... is already accessed by another instance"
        raise DataDirLocked(
            f"Qdrant local-mode data in {path.resolve()} is open in another process",
            hint="stop the other tgrag process (e.g. `tgrag serve`)",
        ) from exc


@dataclass(frozen=True)
class Sharding:
    """How a new server collection is spread over a cluster (Qdrant's own parameters)."""

    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> Sharding:
        return cls(settings.qdrant_shard_number, settings.qdrant_replication_factor,
                   settings.qdrant_write_consistency)


class QdrantStore(ChunkStoreBase):
    """One Qdrant collection of post chunks (see the module docstring)."""

    def __init__(self, client: QdrantClient, collection: str, model_name: str, dim: int,
                 *, where: str = "Qdrant", sharding: Sharding | None = None,
                 exact: bool = False) -> None:
        self._client = client
        # Local mode scans every point (and warns about search params it cannot use).
        self._exact = exact
        self.collection = collection
        self.model_name = model_name
        self.dim = dim
        self._where = where
        self._sharding = sharding or Sharding()
        self._open()

    @classmethod
    def from_settings(cls, settings: Settings, model_name: str, dim: int) -> QdrantStore:
        """The collection on the server ``TGRAG_QDRANT_URL`` names."""
        client, where = open_client(settings)
        try:
            return cls(client, settings.collection, model_name, dim, where=where,
                       sharding=Sharding.from_settings(settings))
        except BaseException:
            client.close()
            raise

    @classmethod
    def local(cls, path: Path, collection: str, model_name: str, dim: int) -> QdrantStore:
        """The collection in a local-mode folder (see the module docstring for who needs it)."""
        client = open_local_client(path)
        try:
            return cls(client, collection, model_name, dim,
                       where=f"Qdrant local mode in {path.resolve()}", exact=True)
        except BaseException:
            # Local mode holds its own lock on the folder until closed, so a refused open (e.g.
            # ModelMismatch) would otherwise block the next one in this process.
            client.close()
            raise

    @property
    def client(self) -> QdrantClient:
        """The underlying client (for tests and benchmarks that inspect the engine itself)."""
        return self._client

    # -- the collection -------------------------------------------------------------------------

    def _open(self) -> None:
        """Create the collection if needed; refuse one built with another model."""
        client, name = self._client, self.collection
        if client.collection_exists(name):
            meta = client.get_collection(name).config.metadata or {}
            if meta.get("embedding_model") != self.model_name or meta.get("dim") != self.dim:
                raise ModelMismatch(
                    f"collection {name!r} was built with {meta.get('embedding_model')!r} "
                    f"(dim {meta.get('dim')}), not {self.model_name!r} (dim {self.dim})",
                    hint="set TGRAG_EMBED_BACKEND/TGRAG_EMBED_MODEL back, or use another "
                    "TGRAG_COLLECTION and re-ingest",
                )
            return
        client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=self.dim,
                                                       distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"embedding_model": self.model_name, "dim": self.dim},
            shard_number=self._sharding.shard_number,
            replication_factor=self._sharding.replication_factor,
            write_consistency_factor=self._sharding.write_consistency_factor,
        )
        indexes: list[tuple[str, Any]] = [
            ("channel_id", models.PayloadSchemaType.INTEGER),
            ("date", models.PayloadSchemaType.INTEGER),
            ("tags", models.PayloadSchemaType.KEYWORD),
            (DOC_ID_KEY, models.PayloadSchemaType.KEYWORD),
            (TENANT_KEY, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD,
                                                   is_tenant=True)),
        ]
        with warnings.catch_warnings():
            # Local mode ignores payload indexes (and says so); a server uses them.
            warnings.simplefilter("ignore", UserWarning)
            for field_name, schema in indexes:
                client.create_payload_index(name, field_name=field_name, field_schema=schema)

    def check(self) -> None:
        try:
            self._client.get_collection(self.collection)
        except Exception as exc:  # any failure means "not answering"
            raise BackendUnavailable(f"{self._where} does not answer: {exc}",
                                     hint="check that Qdrant is running") from exc

    def describe(self) -> str:
        return self._where

    def flush(self) -> None:
        """Nothing to do: every write here waits for the engine (``wait=True``), and local mode
        persists each write as it is made."""

    def optimize(self) -> bool:
        """Nothing to do: a server's optimizers run in its background threads."""
        return False

    def close(self) -> None:
        self._client.close()

    # -- writes ---------------------------------------------------------------------------------

    def _upsert(self, chunks: Sequence[Chunk]) -> None:
        points: list[models.PointStruct] = []
        for chunk in chunks:
            if len(chunk.dense) != self.dim:
                raise ModelMismatch(f"embedding of {chunk.node_id} has dim {len(chunk.dense)}, "
                                    f"collection expects {self.dim}")
            vector: dict[str, Any] = {DENSE: chunk.dense}
            if chunk.sparse is not None and chunk.sparse.indices:
                vector[SPARSE] = models.SparseVector(indices=chunk.sparse.indices,
                                                     values=chunk.sparse.values)
            points.append(models.PointStruct(id=chunk.point_id, vector=vector,
                                             payload=chunk.payload()))
        self._client.upsert(self.collection, points=points, wait=True)

    def _delete_stale(self, keep: dict[str, list[str]]) -> None:
        # One delete for the whole batch: local mode scans every point per filter, so a delete
        # per post would make an ingest quadratic.
        kept = [pid for ids in keep.values() for pid in ids]
        self._delete(models.Filter(
            must=[models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(any=list(keep)))],
            must_not=[models.HasIdCondition(has_id=kept)] if kept else [],
        ))

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._delete(models.Filter(must=[models.FieldCondition(
                key=DOC_ID_KEY, match=models.MatchAny(any=list(doc_ids)))]))

    def delete_matching(self, flt: StoreFilter) -> None:
        if flt.empty:
            raise InputError("refusing to delete with an empty filter (it would select every "
                             "chunk)")
        self._delete(self._filter(flt))

    def _delete(self, flt: models.Filter | None) -> None:
        self._client.delete(self.collection, points_selector=models.FilterSelector(filter=flt),
                            wait=True)

    # -- reads ----------------------------------------------------------------------------------

    def count(self, flt: StoreFilter | None = None) -> int:
        return self._client.count(self.collection, count_filter=self._filter(flt),
                                  exact=True).count

    def chunks_of(self, doc_id: str, *, tenant: str | None = None,
                  with_vectors: bool = False) -> list[StoredChunk]:
        records, _ = self._client.scroll(
            self.collection,
            scroll_filter=self._filter(StoreFilter(tenant=tenant, doc_ids=(doc_id,))),
            limit=MAX_CHUNKS_PER_POST, with_payload=True, with_vectors=with_vectors,
        )
        found = [_stored(r) for r in records]
        return sorted(found, key=lambda c: chunk_number(c.node_id))

    def search_dense(self, vector: Sequence[float], flt: StoreFilter | None,
                     limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        return [_stored(p) for p in self._client.query_points(
            self.collection, query=list(vector), using=DENSE, query_filter=self._filter(flt),
            limit=limit, with_payload=payload_fields(fields),
            search_params=None if self._exact else models.SearchParams(
                hnsw_ef=max(DENSE_SEARCH_EF, limit)),
        ).points]

    def search_sparse(self, vector: SparseVector, flt: StoreFilter | None,
                      limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        if not vector.indices:  # a query of stopwords only: nothing to match, and no error
            return []
        query = models.SparseVector(indices=vector.indices, values=vector.values)
        return [_stored(p) for p in self._client.query_points(
            self.collection, query=query, using=SPARSE, query_filter=self._filter(flt),
            limit=limit, with_payload=payload_fields(fields),
        ).points]

    def chunks_by_id(self, point_ids: Sequence[str]) -> list[StoredChunk]:
        if not point_ids:
            return []
        found = {str(r.id): r for r in self._client.retrieve(
            self.collection, ids=list(point_ids), with_payload=True, with_vectors=False)}
        return [_stored(found[pid]) for pid in point_ids if pid in found]

    def scroll(self, flt: StoreFilter | None = None, fields: Sequence[str] | None = None,
               page: int = 2048, *, with_vectors: bool = False) -> Iterator[StoredChunk]:
        offset: Any = None
        payload = payload_fields(fields)
        vectors: bool | list[str] = [DENSE] if with_vectors else False  # never the sparse one
        while True:
            records, offset = self._client.scroll(
                self.collection, scroll_filter=self._filter(flt), limit=page, offset=offset,
                with_payload=payload, with_vectors=vectors,
            )
            yield from (_stored(r) for r in records)
            if offset is None:
                return

    # -- filters --------------------------------------------------------------------------------

    def _filter(self, flt: StoreFilter | None) -> models.Filter | None:
        """Our filter in Qdrant's terms, every condition included (the tenant's always)."""
        if flt is None:
            return None
        must: list[Any] = []
        if flt.tenant is not None:
            must.append(models.FieldCondition(key=TENANT_KEY,
                                              match=models.MatchValue(value=flt.tenant)))
        if flt.channel_ids:
            must.append(models.FieldCondition(key="channel_id", match=models.MatchAny(
                any=[int(c) for c in flt.channel_ids])))
        if flt.tags:
            must.append(models.FieldCondition(key="tags", match=models.MatchAny(
                any=list(flt.tags))))
        if flt.since is not None or flt.until is not None:
            must.append(models.FieldCondition(key="date", range=models.Range(
                gte=flt.since, lte=flt.until)))
        if flt.doc_ids:
            must.append(models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(
                any=list(flt.doc_ids))))
        must_not: list[Any] = []
        if flt.exclude_doc_ids:
            must_not.append(models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(
                any=list(flt.exclude_doc_ids))))
        if not must and not must_not:
            return None
        return models.Filter(must=must or None, must_not=must_not or None)


def _stored(record: Any) -> StoredChunk:
    return stored_chunk(record, models.SparseVector)


__all__ = ["NODE_ID_KEY", "QdrantStore", "Sharding", "open_client", "open_local_client"]
