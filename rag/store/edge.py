"""The Qdrant engine in-process (``qdrant-edge-py``): the embedded default, under ``data_dir/edge``.

Every ``qdrant_edge`` call of tgrag is in this module.  One collection is one folder,
``data_dir/edge/<collection>/``, holding

* ``collection.json``: what qdrant-edge has no place for, the collection's metadata — the
  embedding model and dimension (an index built with another model is refused, as on a server),
  the engine version that wrote it and, after a migration, where the points came from;
* ``shard/``: the engine's shard (segments, payload indexes, write-ahead log).

The shard has the same schema as a server collection (:mod:`rag.store.qdrant`): a named dense
vector (cosine), a named sparse vector with ``Modifier.Idf`` (the engine applies BM25's IDF at
query time with the same formula as a server and local mode, ``ln((N − df + 0.5)/(df + 0.5) + 1)``
over the points that have a sparse vector, collection-wide: a filter does not change it) and
payload indexes on ``channel_id``, ``date``, ``tags``, ``doc_id`` and ``tenant`` (``is_tenant``),
so every filter — the tenant condition every search carries included — is an index lookup.

Durability: every update goes to the shard's write-ahead log (memory-mapped files in
``shard/wal``) before it is applied, so a killed process loses nothing it wrote.  The pipeline calls
:meth:`EdgeStore.flush` once per batch, before the docstore commit (never per point); it makes the
batch durable against power loss too by fsyncing the log's files — from Python, which releases the
GIL, so searches in other threads go on (on Linux, fsync writes a file's dirty pages however they
were dirtied, mmap included).  The engine's own ``flush()`` — persist every segment and trim the
log, ~20 fsyncs with the GIL held, which stalls every thread of the process — runs at most once per
``ENGINE_FLUSH_SECONDS`` from there, and at close and after ``optimize``.  An open replays the log
from the last engine flush.

Searches never build the HNSW graph: the engine builds it only in :meth:`EdgeStore.optimize`,
which holds the GIL for its whole run (seconds to minutes).  So only processes that serve nothing
call it — the end of ``tgrag ingest`` / ``tgrag sync``, ``tgrag optimize``, the migration — and the
engine's own thresholds decide what is due: a segment is indexed once it holds more than
``indexing_threshold`` of vectors (10 MB, ~6,500 chunks of 384 floats), vacuumed once a fifth of it
is deleted; otherwise the call returns at once.  Writes made by a serving process (uploads, syncs)
wait in the plain appendable segment, which searches scan exactly, until the next such call.
(README.md, "Index maintenance", has the measurements behind this.)

One process per folder: the engine locks its write-ahead log (the data-folder lock of
:mod:`rag.datadir` already keeps a second tgrag process out; this maps the engine's own refusal
to the same error).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from rag.errors import BackendUnavailable, DataDirLocked, InputError, ModelMismatch
from rag.ids import chunk_number
from rag.store.base import (
    DENSE,
    DENSE_SEARCH_EF,
    DOC_ID_KEY,
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

log = logging.getLogger("tgrag.store")
ENGINE = "qdrant-edge-py 0.9.0"
META_FILE = "collection.json"
SHARD_DIR = "shard"
WAL_DIR = "wal"  # the engine's write-ahead log inside the shard (qdrant-edge 0.9.0's layout)
ENGINE_FLUSH_SECONDS = 300.0  # bounds the log an open replays; each one stalls the process
MAX_CHUNKS_PER_POST = 1000  # chunks_of reads one page: a post never has that many


def payload_indexes() -> list[tuple[str, Any]]:
    """The payload indexes every collection gets (``rag.store.base.INDEXED_FIELDS``)."""
    return [
        ("channel_id", qe.PayloadSchemaType.Integer),
        ("date", qe.PayloadSchemaType.Integer),
        ("tags", qe.PayloadSchemaType.Keyword),
        (DOC_ID_KEY, qe.PayloadSchemaType.Keyword),
        (TENANT_KEY, qe.KeywordIndexParams(is_tenant=True)),
    ]


def shard_config(dim: int) -> qe.EdgeConfig:
    """The shard's schema: named dense (cosine) + sparse (IDF) vectors."""
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )


def read_meta(folder: Path) -> dict[str, Any] | None:
    """A collection folder's metadata, or None when the folder holds no finished collection."""
    try:
        return dict(json.loads((folder / META_FILE).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write the metadata atomically (a crash leaves the old file or the new one, never half)."""
    tmp = folder / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / META_FILE)
    fd = os.open(folder, os.O_RDONLY)  # the rename itself survives a power loss
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_collection(folder: Path, model_name: str, dim: int,
                      extra: dict[str, Any] | None = None) -> qe.EdgeShard:
    """A new, empty collection in ``folder`` (which must not hold one); returns its open shard.

    The metadata file is written last: a folder without it is an interrupted creation, which
    :meth:`EdgeStore.open` clears and redoes."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = qe.EdgeShard.create(str(folder / SHARD_DIR), shard_config(dim))
    for field_name, schema in payload_indexes():
        shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
    shard.flush()
    write_meta(folder, {"engine": ENGINE, "embedding_model": model_name, "dim": dim,
                        **(extra or {})})
    return shard


def load_shard(folder: Path) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(folder / SHARD_DIR))
    except Exception as exc:  # the binding raises plain Exception
        if "WouldBlock" in str(exc):
            raise DataDirLocked(
                f"the embedded index in {folder.resolve()} is open in another process",
                hint="stop the other tgrag process (e.g. `tgrag serve`) or use a Qdrant server",
            ) from exc
        raise BackendUnavailable(f"cannot open the embedded index in {folder.resolve()}: {exc}",
                                 hint="restore the data folder from a backup, or re-ingest into "
                                 "a fresh TGRAG_DATA_DIR") from exc


class EdgeStore(ChunkStoreBase):
    """One embedded collection of post chunks (see the module docstring)."""

    def __init__(self, folder: Path, collection: str, model_name: str, dim: int, *,
                 shard: qe.EdgeShard | None = None) -> None:
        """Open (or create) the collection in ``folder``; ``shard``: one just created there."""
        self.folder = folder
        self.collection = collection
        self.model_name = model_name
        self.dim = dim
        # Writers, flushes and maintenance take it (one engine mutation at a time, and no flush
        # racing a close); searches do not.
        self._lock = threading.RLock()
        self._shard: qe.EdgeShard | None = shard if shard is not None else self._open()
        self._engine_flushed = time.monotonic()

    @classmethod
    def open(cls, root: Path, collection: str, model_name: str, dim: int) -> EdgeStore:
        """The collection ``root/<collection>``, created if missing."""
        return cls(root / collection, collection, model_name, dim)

    # -- the collection -------------------------------------------------------------------------

    def _open(self) -> qe.EdgeShard:
        meta = read_meta(self.folder)
        if meta is None:
            if self.folder.exists():
                self._clear_interrupted_creation()
            return create_collection(self.folder, self.model_name, self.dim)
        if meta.get("embedding_model") != self.model_name or meta.get("dim") != self.dim:
            raise ModelMismatch(
                f"collection {self.collection!r} was built with {meta.get('embedding_model')!r} "
                f"(dim {meta.get('dim')}), not {self.model_name!r} (dim {self.dim})",
                hint="set TGRAG_EMBED_BACKEND/TGRAG_EMBED_MODEL back, or use another "
                "TGRAG_COLLECTION and re-ingest",
            )
        return load_shard(self.folder)

    def _clear_interrupted_creation(self) -> None:
        """A folder without metadata is a creation that died before writing it (the metadata is
        written last) — unless its shard holds points, which is never removed."""
        points = 0
        if (self.folder / SHARD_DIR).exists():
            try:
                shard = qe.EdgeShard.load(str(self.folder / SHARD_DIR))
            except Exception:  # a shard that never finished its own creation
                shard = None
            if shard is not None:
                try:
                    points = int(shard.count(qe.CountRequest(exact=True)))
                finally:
                    shard.close()
        if points:
            raise BackendUnavailable(
                f"{self.folder / META_FILE} is missing, but the index there holds {points} "
                "points", hint=f"restore {META_FILE} from a backup (it names the embedding model "
                "and dimension), or move the folder away and re-ingest")
        shutil.rmtree(self.folder)

    @property
    def shard(self) -> qe.EdgeShard:
        """The engine's shard (for maintenance, tests and benchmarks)."""
        if self._shard is None:
            raise BackendUnavailable(f"the embedded index {self.collection!r} is closed")
        return self._shard

    @property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.folder) or {}

    def check(self) -> None:
        try:
            self.shard.info()
        except BackendUnavailable:
            raise
        except Exception as exc:  # any failure means "not answering"
            raise BackendUnavailable(f"{self.describe()} does not answer: {exc}",
                                     hint="restart tgrag") from exc

    def describe(self) -> str:
        return f"embedded Qdrant (qdrant-edge) in {self.folder.resolve()}"

    def flush(self) -> None:
        """Make every write so far durable (see the module docstring): the write-ahead log
        fsynced, and the engine's full flush when the last one is ``ENGINE_FLUSH_SECONDS`` old."""
        with self._lock:
            if time.monotonic() - self._engine_flushed >= ENGINE_FLUSH_SECONDS:
                self._engine_flush()
                return
            self._sync_wal()

    def _engine_flush(self) -> None:
        self.shard.flush()
        self._engine_flushed = time.monotonic()

    def _sync_wal(self) -> None:
        wal = self.folder / SHARD_DIR / WAL_DIR
        for path in sorted(wal.iterdir()):
            try:
                fd = os.open(path, os.O_RDONLY)
            except (FileNotFoundError, IsADirectoryError):  # a segment the engine just retired
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(wal, os.O_RDONLY)  # the log's new segment files exist durably too
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def optimize(self) -> bool:
        """Run the engine's optimizers until none has work (see the module docstring)."""
        started = time.monotonic()
        with self._lock:
            worked = bool(self.shard.optimize())
            self._engine_flush()
        if worked:
            log.info("embedded index optimized", extra={
                "collection": self.collection, "seconds": round(time.monotonic() - started, 1)})
        return worked

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                shard, self._shard = self._shard, None
                shard.close()  # flushes

    # -- writes ---------------------------------------------------------------------------------

    def _upsert(self, chunks: Sequence[Chunk]) -> None:
        points: list[qe.Point] = []
        for chunk in chunks:
            if len(chunk.dense) != self.dim:
                raise ModelMismatch(f"embedding of {chunk.node_id} has dim {len(chunk.dense)}, "
                                    f"collection expects {self.dim}")
            vector: dict[str, Any] = {DENSE: list(chunk.dense)}
            if chunk.sparse is not None and chunk.sparse.indices:
                vector[SPARSE] = qe.SparseVector(chunk.sparse.indices, chunk.sparse.values)
            points.append(qe.Point(chunk.point_id, vector, chunk.payload()))
        self.upsert_points(points)

    def upsert_points(self, points: list[qe.Point]) -> None:
        """Write engine points as they are (the migration copies them over with this)."""
        self._update(qe.UpdateOperation.upsert_points(points))

    def _delete_stale(self, keep: dict[str, list[str]]) -> None:
        kept = {pid for ids in keep.values() for pid in ids}
        self._update(qe.UpdateOperation.delete_points_by_filter(qe.Filter(
            must=[qe.FieldCondition(key=DOC_ID_KEY, match=qe.MatchAny(list(keep)))],
            must_not=[qe.HasIdCondition(kept)] if kept else None,
        )))

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._update(qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[
                qe.FieldCondition(key=DOC_ID_KEY, match=qe.MatchAny(list(doc_ids)))])))

    def delete_matching(self, flt: StoreFilter) -> None:
        if flt.empty:
            raise InputError("refusing to delete with an empty filter (it would select every "
                             "chunk)")
        selected = edge_filter(flt)
        assert selected is not None
        self._update(qe.UpdateOperation.delete_points_by_filter(selected))

    def _update(self, operation: qe.UpdateOperation) -> None:
        with self._lock:
            self.shard.update(operation)

    # -- reads ----------------------------------------------------------------------------------

    def count(self, flt: StoreFilter | None = None) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True, filter=edge_filter(flt))))

    def chunks_of(self, doc_id: str, *, tenant: str | None = None,
                  with_vectors: bool = False) -> list[StoredChunk]:
        records, _ = self.shard.scroll(qe.ScrollRequest(
            limit=MAX_CHUNKS_PER_POST,
            filter=edge_filter(StoreFilter(tenant=tenant, doc_ids=(doc_id,))),
            with_payload=True, with_vector=with_vectors,
        ))
        found = [stored(r) for r in records]
        return sorted(found, key=lambda c: chunk_number(c.node_id))

    def search_dense(self, vector: Sequence[float], flt: StoreFilter | None,
                     limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        return [stored(p) for p in self.shard.query(qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(list(vector), using=DENSE),
            filter=edge_filter(flt), with_payload=payload_fields(fields),
            params=qe.SearchParams(hnsw_ef=max(DENSE_SEARCH_EF, limit)),
        ))]

    def search_sparse(self, vector: SparseVector, flt: StoreFilter | None,
                      limit: int, *, fields: Sequence[str] | None = None) -> list[StoredChunk]:
        if not vector.indices:  # a query of stopwords only: nothing to match, and no error
            return []
        query = qe.SparseVector(vector.indices, vector.values)
        return [stored(p) for p in self.shard.query(qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(query, using=SPARSE),
            filter=edge_filter(flt), with_payload=payload_fields(fields),
        ))]

    def chunks_by_id(self, point_ids: Sequence[str]) -> list[StoredChunk]:
        if not point_ids:
            return []
        found = {str(r.id): r for r in self.shard.retrieve(list(point_ids), with_payload=True,
                                                           with_vector=False)}
        return [stored(found[pid]) for pid in point_ids if pid in found]

    def scroll(self, flt: StoreFilter | None = None, fields: Sequence[str] | None = None,
               page: int = 2048, *, with_vectors: bool = False) -> Iterator[StoredChunk]:
        offset: Any = None
        payload = payload_fields(fields)
        vectors: bool | list[str] = [DENSE] if with_vectors else False  # never the sparse one
        selected = edge_filter(flt)
        while True:
            records, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=page, filter=selected, with_payload=payload,
                with_vector=vectors,
            ))
            yield from (stored(r) for r in records)
            if offset is None:
                return


def edge_filter(flt: StoreFilter | None) -> qe.Filter | None:
    """Our filter in the engine's terms: every condition, the tenant's always (an index lookup
    on the ``is_tenant`` keyword index, so it costs nothing to keep)."""
    if flt is None:
        return None
    must: list[Any] = []
    if flt.tenant is not None:
        must.append(qe.FieldCondition(key=TENANT_KEY, match=qe.MatchValue(flt.tenant)))
    if flt.channel_ids:
        must.append(qe.FieldCondition(key="channel_id",
                                      match=qe.MatchAny([int(c) for c in flt.channel_ids])))
    if flt.tags:
        must.append(qe.FieldCondition(key="tags", match=qe.MatchAny(list(flt.tags))))
    if flt.since is not None or flt.until is not None:
        must.append(qe.FieldCondition(key="date", range=qe.RangeFloat(
            gte=flt.since, lte=flt.until)))
    if flt.doc_ids:
        must.append(qe.FieldCondition(key=DOC_ID_KEY, match=qe.MatchAny(list(flt.doc_ids))))
    must_not: list[Any] = []
    if flt.exclude_doc_ids:
        must_not.append(qe.FieldCondition(key=DOC_ID_KEY,
                                          match=qe.MatchAny(list(flt.exclude_doc_ids))))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def stored(record: Any) -> StoredChunk:
    return stored_chunk(record, qe.SparseVector)


__all__ = ["ENGINE", "EdgeStore", "create_collection", "edge_filter", "read_meta"]
