"""Where the chunks live: the engine-neutral interface (:mod:`rag.store.base`), one class per
engine (:mod:`rag.store.edge` embedded, :mod:`rag.store.qdrant` a server), and
:func:`open_store`, which picks the engine the settings ask for."""

from __future__ import annotations

from rag.settings import Settings
from rag.store.base import (
    DENSE,
    DOC_ID_KEY,
    NODE_ID_KEY,
    SPARSE,
    TENANT_KEY,
    TEXT_KEY,
    Chunk,
    ChunkStore,
    SparseVector,
    StoredChunk,
    StoreFilter,
)


def open_store(settings: Settings, model_name: str, dim: int) -> ChunkStore:
    """The engine for the settings: a Qdrant server (or cluster) when ``TGRAG_QDRANT_URL`` is set,
    else the embedded engine (qdrant-edge) under ``data_dir/edge`` — a collection found only in
    the old local-mode folder is moved into it first (:mod:`rag.store.migration`).  Refuses a
    collection built with another model."""
    if settings.qdrant_url:
        from rag.store.qdrant import QdrantStore

        return QdrantStore.from_settings(settings, model_name, dim)
    from rag.store.migration import open_embedded

    return open_embedded(settings, model_name, dim)


__all__ = [
    "DENSE", "DOC_ID_KEY", "NODE_ID_KEY", "SPARSE", "TENANT_KEY", "TEXT_KEY", "Chunk",
    "ChunkStore", "SparseVector", "StoreFilter", "StoredChunk", "open_store",
]
