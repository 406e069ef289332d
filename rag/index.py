"""The opened index: Redis, the vector store, the embedding model, the docstore, the channel
catalog, and the process's write lock.

``Index.open`` checks that Redis and the vector engine answer and that the collection matches the
embedding model *before* anything is written, so a misconfiguration fails fast with a clear error.

One writer at a time: the pipeline's batches and the deletions each take :attr:`Index.write_lock`
themselves (a crash-safe batch is classify → write → commit, and two interleaved batches could
classify the same post against a docstore the other is about to change).  Tenant views share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from llama_index.storage.docstore.redis import RedisDocumentStore

from rag.backend_start import StartedBackends, start_backends
from rag.catalog import ChannelCatalog
from rag.datadir import DataDirLock
from rag.embeddings import EmbeddingBackend, build_embedding
from rag.ids import DEFAULT_TENANT, catalog_namespace, namespace, tenant_of_doc_id
from rag.redis_backend import close_redis, kvstore, open_redis, recover, wait_loaded
from rag.settings import Settings
from rag.store import ChunkStore, StoreFilter, open_store
from rag.store.vector_store import PostVectorStore


@dataclass
class Index:
    settings: Settings
    redis: redis.Redis
    embedding: EmbeddingBackend
    store: ChunkStore
    docstore: RedisDocumentStore
    catalog: ChannelCatalog
    lock: DataDirLock | None = None
    tenant: str = DEFAULT_TENANT  # searches through this index see only this tenant's posts
    write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    closed: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        purpose: str = "tgrag",
        embedding: EmbeddingBackend | None = None,
        started: StartedBackends | None = None,
    ) -> Index:
        """Open every backend (taking the data-folder lock in embedded mode).  ``started``: the
        first step, already taken by the caller (:func:`rag.backend_start.start_backends`)."""
        started = started or start_backends(settings, purpose)
        r: redis.Redis | None = None
        store: ChunkStore | None = None
        try:
            r = open_redis(settings, started.redis_server)  # it answers before anything is written
            emb = embedding or build_embedding(settings)
            # The engine loads its shard while the embedded Redis loads its data in its own
            # process (each ~1-2 s at 100k posts); then wait for Redis to have it all.
            store = open_store(settings, emb.name, emb.dim)
            wait_loaded(r)
        except BaseException:
            try:
                if store is not None:
                    store.close()
                if r is not None:
                    close_redis(r, settings)
            finally:
                started.abandon()
            raise
        base = namespace(settings.collection)
        docstore = RedisDocumentStore(kvstore(r), namespace=f"{base}:docstore")
        return cls(settings=settings, redis=r, embedding=emb, store=store, docstore=docstore,
                   catalog=ChannelCatalog(r, base), lock=started.lock)

    def for_tenant(self, tenant: str) -> Index:
        """A view of this index for one tenant: same backends and write lock, the tenant's channel
        catalog, and ``tenant`` set so searches and tag counts are filtered to its posts
        (``rag.ids``).  The view does not own the data-folder lock; close the original."""
        if tenant == self.tenant:
            return self
        catalog = ChannelCatalog(self.redis, catalog_namespace(self.namespace, tenant))
        return replace(self, tenant=tenant, catalog=catalog, lock=None)

    @property
    def namespace(self) -> str:
        return namespace(self.settings.collection)

    def vector_store(self) -> PostVectorStore:
        """The store as LlamaIndex sees it (the ingestion pipeline writes through it)."""
        return PostVectorStore(self.store)

    # -- reads ----------------------------------------------------------------------------------

    def post_text(self, doc_id: str) -> str | None:
        """A committed post's full text from the docstore; ``None`` if it is not there."""
        doc = self.docstore.get_document(doc_id, raise_error=False)
        return doc.get_content() if doc is not None else None

    def post_ids(self) -> list[str]:
        """The ids of every committed post of this view's tenant."""
        return [str(d) for d in self.docstore.get_all_document_hashes().values()
                if tenant_of_doc_id(str(d)) == self.tenant]

    def post_count(self) -> int:
        """Posts in the docstore, all tenants (one hash per post)."""
        return len(self.docstore.get_all_document_hashes())

    def stats(self, *, all_tenants: bool = False) -> dict[str, Any]:
        """The contract's stats JSON: this view's tenant (or, for the operator's CLI, every
        tenant's posts and points)."""
        if all_tenants:
            posts, points = self.post_count(), self.store.count()
        else:
            posts = len(self.post_ids())
            points = self.store.count(StoreFilter(tenant=self.tenant))
        return {
            "posts": posts,
            "points": points,
            "embedding_model": self.embedding.name,
            "channels": [c.to_dict() for c in self.catalog.channels()],
        }

    def recover_redis(self) -> bool:
        """Restart the embedded Redis if it died (True when it did); see ``rag.embedded_redis``."""
        return recover(self.redis)

    def close(self) -> None:
        """Close the backends and release the data folder; a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            self.store.close()
            close_redis(self.redis, self.settings)
        finally:
            if self.lock:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
