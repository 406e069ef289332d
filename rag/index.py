"""The opened index: Redis, Qdrant, the embedding model, the docstore and the channel catalog.

``Index.open`` checks that Redis and Qdrant answer and that the collection matches the embedding
model *before* anything is written, so a misconfiguration fails fast with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import redis
from llama_index.storage.docstore.redis import RedisDocumentStore
from qdrant_client import QdrantClient

from rag.catalog import ChannelCatalog
from rag.datadir import DataDirLock
from rag.embeddings import EmbeddingBackend, build_embedding
from rag.redis_backend import close_redis, kvstore, open_redis
from rag.settings import Settings
from rag.store import DEFAULT_TENANT, PostStore, open_qdrant
from rag.tenants import catalog_namespace


@dataclass
class Index:
    settings: Settings
    redis: redis.Redis
    qdrant: QdrantClient
    embedding: EmbeddingBackend
    store: PostStore
    docstore: RedisDocumentStore
    catalog: ChannelCatalog
    lock: DataDirLock | None = None
    tenant: str = DEFAULT_TENANT  # searches through this index see only this tenant's posts

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        purpose: str = "tgrag",
        embedding: EmbeddingBackend | None = None,
    ) -> Index:
        """Open every backend (taking the data-folder lock in embedded mode)."""
        lock = None
        if settings.embedded_qdrant or settings.embedded_redis:
            lock = DataDirLock(settings.data_dir)
            lock.acquire(purpose)
        qdrant: QdrantClient | None = None
        try:
            r = open_redis(settings)
            qdrant = open_qdrant(settings)
            emb = embedding or build_embedding(settings)
            store = PostStore.open(qdrant, settings.collection, emb.name, emb.dim,
                                   track_tenants=settings.embedded_qdrant)
        except BaseException:
            # Close Qdrant too: local mode holds its own lock on the folder until closed, so a
            # refused open (e.g. ModelMismatch) would otherwise block the next one in this process.
            try:
                if qdrant is not None:
                    qdrant.close()
            finally:
                if lock:
                    lock.release()
            raise
        namespace = f"tgrag:{settings.collection}"
        docstore = RedisDocumentStore(kvstore(r), namespace=f"{namespace}:docstore")
        return cls(
            settings=settings, redis=r, qdrant=qdrant, embedding=emb, store=store,
            docstore=docstore, catalog=ChannelCatalog(r, namespace), lock=lock,
        )

    def for_tenant(self, tenant: str) -> Index:
        """A view of this index for one tenant: same backends, the tenant's channel catalog, and
        ``tenant`` set so searches and tag counts are filtered to its posts (``rag.tenants``).
        The view does not own the data-folder lock; close the original, not the view."""
        if tenant == self.tenant:
            return self
        catalog = ChannelCatalog(self.redis, catalog_namespace(self.namespace, tenant))
        return replace(self, tenant=tenant, catalog=catalog, lock=None)

    @property
    def namespace(self) -> str:
        return f"tgrag:{self.settings.collection}"

    def post_count(self) -> int:
        """Posts in the docstore (one hash per post)."""
        return len(self.docstore.get_all_document_hashes())

    def stats(self) -> dict[str, Any]:
        return {
            "posts": self.post_count(),
            "points": self.store.count(),
            "embedding_model": self.embedding.name,
            "channels": [c.to_dict() for c in self.catalog.channels()],
        }

    def close(self) -> None:
        try:
            self.qdrant.close()
            close_redis(self.redis, self.settings)
        finally:
            if self.lock:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
