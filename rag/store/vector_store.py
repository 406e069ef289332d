"""The store as a LlamaIndex vector store, for ``IngestionPipeline`` (and
``VectorStoreIndex.from_vector_store``): nodes in, :class:`~rag.store.base.Chunk` s out.

It only translates: the engine behind it (any :class:`~rag.store.base.ChunkStore`) owns the
writes and their order.  A node's sparse vector travels in ``metadata["_sparse"]`` (set by
:class:`rag.sparse.SparseEncoder`); keys starting with ``_`` never reach the payload.
"""

from __future__ import annotations

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

from rag.errors import InputError, ModelMismatch
from rag.store.base import (
    DOC_ID_KEY,
    NODE_ID_KEY,
    SPARSE_METADATA_KEY,
    TEXT_KEY,
    Chunk,
    ChunkStore,
    SparseVector,
    StoreFilter,
)


def node_chunk(node: BaseNode, dim: int) -> Chunk:
    """One embedded node as a chunk to write."""
    if node.embedding is None:
        raise InputError(f"node {node.node_id} has no embedding")
    if len(node.embedding) != dim:
        raise ModelMismatch(f"embedding of {node.node_id} has dim {len(node.embedding)}, "
                            f"collection expects {dim}")
    metadata = dict(node.metadata or {})
    sparse = metadata.get(SPARSE_METADATA_KEY)
    return Chunk(
        node_id=node.node_id, doc_id=node.ref_doc_id or node.node_id, text=node.get_content(),
        dense=list(node.embedding),
        sparse=SparseVector(list(sparse[0]), list(sparse[1])) if sparse else None,
        metadata=metadata,
    )


class PostVectorStore(BasePydanticVectorStore):
    """LlamaIndex's view of a :class:`ChunkStore`."""

    stores_text: bool = True
    flat_metadata: bool = False
    _store: Any = PrivateAttr()

    def __init__(self, store: ChunkStore) -> None:
        super().__init__()
        self._store = store

    @classmethod
    def class_name(cls) -> str:
        return "PostVectorStore"

    @property
    def client(self) -> ChunkStore:
        return self._store  # type: ignore[no-any-return]

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Write the chunks; each post's chunks that this write did not produce go away."""
        chunks = [node_chunk(node, self._store.dim) for node in nodes]
        self._store.write(chunks)
        return [c.point_id for c in chunks]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        self._store.delete_docs([ref_doc_id])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Dense search (the filters we support: ==, in and ranges on the indexed fields)."""
        if query.query_embedding is None:
            raise InputError("PostVectorStore.query needs a query embedding")
        hits = self._store.search_dense(query.query_embedding, metadata_filter(query.filters),
                                        query.similarity_top_k)
        nodes, scores, ids = [], [], []
        for hit in hits:
            payload = dict(hit.payload)
            text = str(payload.pop(TEXT_KEY, ""))
            node_id = str(payload.pop(NODE_ID_KEY, hit.id))
            payload.pop(DOC_ID_KEY, None)
            nodes.append(TextNode(id_=node_id, text=text, metadata=payload))
            scores.append(hit.score)
            ids.append(node_id)
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=ids)


def metadata_filter(filters: MetadataFilters | None) -> StoreFilter | None:
    """LlamaIndex filters → a :class:`StoreFilter` (``==``/``in`` on channel_id, tags, tenant,
    doc_id; ranges on date); anything else is an :class:`InputError`."""
    if not filters or not filters.filters:
        return None
    values: dict[str, Any] = {}
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            raise InputError("nested metadata filters are not supported")
        many = list(f.value) if f.operator in (FilterOperator.IN, FilterOperator.ANY) else \
            [f.value]
        if f.operator in (FilterOperator.EQ, FilterOperator.IN, FilterOperator.ANY):
            if f.key == "channel_id":
                values["channel_ids"] = tuple(int(v) for v in many)
            elif f.key == "tags":
                values["tags"] = tuple(str(v) for v in many)
            elif f.key == DOC_ID_KEY:
                values["doc_ids"] = tuple(str(v) for v in many)
            elif f.key == "tenant" and len(many) == 1:
                values["tenant"] = str(many[0])
            else:
                raise InputError(f"filter on {f.key!r} is not supported")
        elif f.key == "date" and f.operator in (FilterOperator.GTE, FilterOperator.GT):
            values["since"] = int(f.value) + (f.operator == FilterOperator.GT)  # type: ignore[arg-type]
        elif f.key == "date" and f.operator in (FilterOperator.LTE, FilterOperator.LT):
            values["until"] = int(f.value) - (f.operator == FilterOperator.LT)  # type: ignore[arg-type]
        else:
            raise InputError(f"filter operator {f.operator} on {f.key!r} is not supported")
    return StoreFilter(**values)
