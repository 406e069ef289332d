"""The Qdrant collection of post chunks: schema, model check, idempotent writes, filtered search.

One collection holds every chunk as a point with a named dense vector (``dense``), a named sparse
vector slot (``sparse``, filled by hybrid retrieval) and the post metadata as payload. Point ids are
``uuid5`` of the node id, so writing the same chunk twice overwrites it instead of duplicating it.

Writes are ordered so that a crash never loses a post (unlike LlamaIndex UPSERTS, which deletes a
changed document's vectors before the new ones exist, issue #22639): ``add`` first upserts the new
chunks, then deletes the document's chunks that are not among them.

In local mode the store also keeps the set of tenants that own points (collection metadata
``tenants``, written *before* the first point of a new tenant, never shrunk): local mode checks a
payload filter point by point in Python, and the tenant condition every search carries was 62 % of
a hybrid search at 25k posts (docs/benchmarks.md).  When the index holds one tenant only, that
condition selects every point and :meth:`PostStore.holds_only` lets searches drop it.  Local mode
has a single process per data folder (the data-folder lock), so the cached set cannot go stale.
"""

from __future__ import annotations

import uuid
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from pydantic import PrivateAttr
from qdrant_client import QdrantClient, models

from rag.errors import BackendUnavailable, DataDirLocked, InputError, ModelMismatch
from rag.settings import Settings

POINT_NAMESPACE = uuid.UUID("6f1d2c3e-8a7b-4c5d-9e0f-7a6b5c4d3e2f")
DENSE = "dense"
SPARSE = "sparse"
DEFAULT_TENANT = "default"
# Payload keys that carry the chunk itself rather than post metadata.
TEXT_KEY, NODE_ID_KEY, DOC_ID_KEY = "text", "node_id", "doc_id"


def point_id(node_id: str) -> str:
    """The Qdrant point id (a UUID) of a node id such as ``tg:1000724666:5#0``."""
    return str(uuid.uuid5(POINT_NAMESPACE, node_id))


def open_qdrant(settings: Settings) -> QdrantClient:
    """A Qdrant client for the settings: local mode under data_dir, or a server."""
    if settings.qdrant_url:
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
        return client
    settings.qdrant_path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as exc:  # "Storage folder ... is already accessed by another instance"
        raise DataDirLocked(
            f"Qdrant data in {settings.qdrant_path} is open in another process",
            hint="stop the other tgrag process (e.g. `tgrag serve`) or use a Qdrant server",
        ) from exc


class PostStore(BasePydanticVectorStore):
    """LlamaIndex vector store over one Qdrant collection of post chunks."""

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str
    model_name: str
    dim: int

    _client: QdrantClient = PrivateAttr()
    # Tenants owning points, tracked in local mode only (None = not tracked; see module doc).
    _tenants: frozenset[str] | None = PrivateAttr(default=None)

    def __init__(self, client: QdrantClient, collection_name: str, model_name: str, dim: int):
        super().__init__(collection_name=collection_name, model_name=model_name, dim=dim)
        self._client = client

    @classmethod
    def open(
        cls, client: QdrantClient, collection_name: str, model_name: str, dim: int,
        *, track_tenants: bool = False,
    ) -> PostStore:
        """Open the collection, creating it if needed; refuse one built with another model.

        ``track_tenants`` (local mode only: one process owns the folder) keeps the tenant set.
        """
        store = cls._open(client, collection_name, model_name, dim)
        if track_tenants:
            store._load_tenants()
        return store

    @classmethod
    def _open(
        cls, client: QdrantClient, collection_name: str, model_name: str, dim: int
    ) -> PostStore:
        if client.collection_exists(collection_name):
            meta = client.get_collection(collection_name).config.metadata or {}
            if meta.get("embedding_model") != model_name or meta.get("dim") != dim:
                raise ModelMismatch(
                    f"collection {collection_name!r} was built with "
                    f"{meta.get('embedding_model')!r} (dim {meta.get('dim')}), "
                    f"not {model_name!r} (dim {dim})",
                    hint="set TGRAG_EMBED_BACKEND/TGRAG_EMBED_MODEL back, or use another "
                    "TGRAG_COLLECTION and re-ingest",
                )
        else:
            cls._create(client, collection_name, model_name, dim)
        return cls(client, collection_name, model_name, dim)

    @staticmethod
    def _create(client: QdrantClient, name: str, model_name: str, dim: int) -> None:
        client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"embedding_model": model_name, "dim": dim},
        )
        indexes: list[tuple[str, Any]] = [
            ("channel_id", models.PayloadSchemaType.INTEGER),
            ("date", models.PayloadSchemaType.INTEGER),
            ("tags", models.PayloadSchemaType.KEYWORD),
            (DOC_ID_KEY, models.PayloadSchemaType.KEYWORD),
            ("tenant", models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD,
                                                 is_tenant=True)),
        ]
        with warnings.catch_warnings():
            # Local mode ignores payload indexes (and says so); a server uses them.
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in indexes:
                client.create_payload_index(name, field_name=field, field_schema=schema)

    @property
    def client(self) -> QdrantClient:
        return self._client

    # -- tenants (local mode) -------------------------------------------------------------------

    def holds_only(self, tenant: str | None) -> bool:
        """True when every point belongs to ``tenant``, so a tenant condition can be dropped."""
        return tenant is not None and self._tenants is not None and self._tenants <= {tenant}

    def _load_tenants(self) -> None:
        meta = self._client.get_collection(self.collection_name).config.metadata or {}
        if isinstance(meta.get("tenants"), list):
            self._tenants = frozenset(str(t) for t in meta["tenants"])
            return
        # A collection from before the tenant set: read it off the points once, then keep it.
        found: set[str] = set()
        offset: Any = None
        while True:
            records, offset = self._client.scroll(
                self.collection_name, limit=4096, offset=offset, with_payload=["tenant"],
                with_vectors=False,
            )
            found.update(str((r.payload or {}).get("tenant", DEFAULT_TENANT)) for r in records)
            if offset is None:
                break
        self._record_tenants(found)

    def _record_tenants(self, tenants: set[str]) -> None:
        known = set(self._tenants or ())
        self._client.update_collection(self.collection_name,
                                       metadata={"tenants": sorted(known | tenants)})
        self._tenants = frozenset(known | tenants)

    @classmethod
    def class_name(cls) -> str:
        return "PostStore"

    # -- writes ---------------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Upsert chunks, then drop each post's chunks that this write did not produce."""
        points: list[models.PointStruct] = []
        ids_by_doc: dict[str, list[str]] = defaultdict(list)
        for node in nodes:
            if node.embedding is None:
                raise InputError(f"node {node.node_id} has no embedding")
            if len(node.embedding) != self.dim:
                raise ModelMismatch(
                    f"embedding of {node.node_id} has dim {len(node.embedding)}, "
                    f"collection expects {self.dim}"
                )
            pid = point_id(node.node_id)
            doc_id = node.ref_doc_id or node.node_id
            ids_by_doc[doc_id].append(pid)
            vector: dict[str, Any] = {DENSE: node.embedding}
            sparse = node.metadata.get("_sparse") if node.metadata else None
            if sparse:
                vector[SPARSE] = models.SparseVector(indices=sparse[0], values=sparse[1])
            payload = {k: v for k, v in node.metadata.items() if not k.startswith("_")}
            payload.setdefault("tenant", DEFAULT_TENANT)
            payload[TEXT_KEY] = node.get_content()
            payload[NODE_ID_KEY] = node.node_id
            payload[DOC_ID_KEY] = doc_id
            points.append(models.PointStruct(id=pid, vector=vector, payload=payload))
        if points:
            if self._tenants is not None:
                new = {str(p.payload["tenant"]) for p in points if p.payload} - self._tenants
                if new:  # recorded before the points exist: a crash in between only costs speed
                    self._record_tenants(new)
            self._client.upsert(self.collection_name, points=points, wait=True)
            # One delete for the whole batch: local mode scans every point per filter, so a
            # delete per post would make an ingest quadratic.
            self._delete_points(list(ids_by_doc), keep=[p for ids in ids_by_doc.values()
                                                        for p in ids])
        return [p.id for p in points]  # type: ignore[misc]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every chunk of one post."""
        self._delete_points([ref_doc_id], keep=[])

    def delete_channel(self, channel_id: int, tenant: str) -> None:
        """Delete every chunk of one channel's posts owned by ``tenant`` (one filtered delete)."""
        self._client.delete(
            self.collection_name,
            points_selector=models.FilterSelector(filter=models.Filter(must=[
                models.FieldCondition(key="channel_id", match=models.MatchValue(value=channel_id)),
                models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)),
            ])),
            wait=True,
        )

    def _delete_points(self, doc_ids: list[str], keep: list[str]) -> None:
        """Delete the chunks of ``doc_ids`` except the points ``keep``."""
        must_not: list[Any] = [models.HasIdCondition(has_id=keep)] if keep else []
        self._client.delete(
            self.collection_name,
            points_selector=models.FilterSelector(
                filter=models.Filter(
                    must=[models.FieldCondition(key=DOC_ID_KEY,
                                                match=models.MatchAny(any=doc_ids))],
                    must_not=must_not,
                )
            ),
            wait=True,
        )

    # -- reads ----------------------------------------------------------------------------------

    def count(self, flt: models.Filter | None = None) -> int:
        return self._client.count(self.collection_name, count_filter=flt, exact=True).count

    def points_of(self, doc_id: str) -> list[models.Record]:
        """All chunks of one post (used by tests, stats and 'similar posts')."""
        records, _ = self._client.scroll(
            self.collection_name,
            scroll_filter=models.Filter(must=[
                models.FieldCondition(key=DOC_ID_KEY, match=models.MatchValue(value=doc_id))
            ]),
            limit=1000,
            with_vectors=True,
        )
        return records

    def search_dense(
        self, vector: list[float], flt: models.Filter | None, limit: int
    ) -> list[models.ScoredPoint]:
        return self._client.query_points(
            self.collection_name, query=vector, using=DENSE, query_filter=flt, limit=limit,
            with_payload=True,
        ).points

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """LlamaIndex entry point (so ``VectorStoreIndex.from_vector_store`` works on it)."""
        if query.query_embedding is None:
            raise InputError("PostStore.query needs a query embedding")
        flt = metadata_filters_to_qdrant(query.filters)
        hits = self.search_dense(query.query_embedding, flt, query.similarity_top_k)
        nodes, scores, ids = [], [], []
        for hit in hits:
            payload = dict(hit.payload or {})
            text = payload.pop(TEXT_KEY, "")
            node_id = payload.pop(NODE_ID_KEY, str(hit.id))
            payload.pop(DOC_ID_KEY, None)
            nodes.append(TextNode(id_=node_id, text=text, metadata=payload))
            scores.append(hit.score)
            ids.append(node_id)
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=ids)


_OPS = {
    FilterOperator.GT: "gt", FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt", FilterOperator.LTE: "lte",
}


def metadata_filters_to_qdrant(filters: MetadataFilters | None) -> models.Filter | None:
    """Translate the LlamaIndex filters we support (==, in, ranges) to a Qdrant filter."""
    if not filters or not filters.filters:
        return None
    must: list[Any] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = metadata_filters_to_qdrant(f)
            if sub:
                must.append(sub)
            continue
        if f.operator == FilterOperator.EQ:
            must.append(models.FieldCondition(key=f.key, match=models.MatchValue(value=f.value)))
        elif f.operator in (FilterOperator.IN, FilterOperator.ANY):
            must.append(models.FieldCondition(key=f.key, match=models.MatchAny(any=list(f.value))))
        elif f.operator in _OPS:
            must.append(models.FieldCondition(key=f.key, range=models.Range(**{_OPS[f.operator]:
                                                                                f.value})))
        else:
            raise InputError(f"filter operator {f.operator} is not supported")
    return models.Filter(must=must)
