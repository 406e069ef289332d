"""The ingestion pipeline: read → tag → split → embed → store, deduplicated by a Redis docstore.

A LlamaIndex ``IngestionPipeline`` with a ``RedisDocumentStore`` (``UPSERTS``).  The embedding
stage (``ingest.embedder.ChunkEmbedder``) sends each distinct chunk text of a run to the model
once and reads back from the store the vectors of chunks whose text did not change; nothing else
is cached (LLM tags have their own cache by text).  The order of writes makes a killed ingest safe
to re-run:

1. classify each post against the docstore hash: new, updated or unchanged (unchanged is skipped);
2. tag, split and embed the new and updated posts;
3. upsert their chunks into the vector store under deterministic point ids, then delete the chunks
   each post no longer has (``ChunkStore.write``): an edited post never leaves stale points, and
   its old vectors stay searchable until the new ones exist;
4. only then record the post's hash in the docstore, the commit point (the document body first,
   the hash last, so a recorded hash always comes with its text), after the store has flushed.

A crash before 4 leaves the post unrecorded, so the next run redoes it and overwrites the same
points: exactly one set of points per post, none lost.  An *updated* post still has its old hash
during 2-4, so before step 2 its id goes into a Redis "pending" set, cleared after step 4: if the
next run brings the post back with its old, committed text (an older export, a reverted edit), the
hash matches but the store holds the uncommitted text, and the pending mark makes the run redo it.

A batch runs under the index's write lock (``Index.write_lock``), so batches of several writers
(an upload, a sync, live edits) never interleave inside steps 1-4.

Commit hooks (``on_commit``) are told ``(doc id, hash)`` of each post of step 4, inside the lock,
right before its docstore write: what they record is recorded with the commit, so a kill -9 after
the commit never loses it (the alert outbox, ``rag.alerts.outbox``; a kill before the commit
leaves a record whose hash the docstore does not hold, and the re-run records it again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from llama_index.core.extractors import BaseExtractor
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.schema import BaseNode
from pydantic import PrivateAttr

from ingest.documents import Post
from ingest.embedder import ChunkEmbedder
from ingest.known_names import with_known_names
from ingest.readers.base import ReadItem, SkippedRecord
from ingest.splitting import PostSplitter
from rag.index import Index
from rag.metrics import INGEST_POSTS
from rag.sparse import SparseEncoder

log = logging.getLogger("tgrag.ingest")
# Told (doc id, hash) of the posts a batch is about to commit; raising aborts the commit.
CommitHook = Callable[[list[tuple[str, str]]], None]
LEGACY_CACHE = "ingestion_cache"


class PendingPosts:
    """The ids of posts written to the store but not committed yet (the Redis set
    ``<namespace>:pending``; see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.key = f"{namespace}:pending"

    def mark(self, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        if ids:
            self._r.sadd(self.key, *ids)

    def clear(self, doc_ids: Iterable[str]) -> None:
        ids = list(doc_ids)
        if ids:
            self._r.srem(self.key, *ids)

    def ids(self) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m for m in self._r.smembers(self.key)}


class SafeUpsertPipeline(IngestionPipeline):
    """``UPSERTS`` that classifies but never deletes up front (see module docstring, step 3)."""

    _plan: dict[str, str] = PrivateAttr(default_factory=dict)
    _pending: PendingPosts | None = PrivateAttr(default=None)
    _before_commit: Callable[[], None] | None = PrivateAttr(default=None)
    _on_commit: tuple[CommitHook, ...] = PrivateAttr(default=())
    _on_plan: Callable[[set[str]], None] | None = PrivateAttr(default=None)

    def track_pending(self, pending: PendingPosts,
                      before_commit: Callable[[], None] | None = None,
                      on_plan: Callable[[set[str]], None] | None = None) -> None:
        """Keep the ids of posts written but not yet committed in ``pending``; call
        ``before_commit`` (the store's flush) before each commit, and ``on_plan`` with the posts
        of each batch that may already have chunks in the store (updated or pending ones)."""
        self._pending, self._before_commit, self._on_plan = pending, before_commit, on_plan

    def on_commit(self, hooks: Sequence[CommitHook]) -> None:
        """Call ``hooks`` with the posts of each commit, before it (see the module docstring)."""
        self._on_commit = tuple(hooks)

    def _handle_upserts(self, nodes: Sequence[BaseNode]) -> Sequence[BaseNode]:
        assert self.docstore is not None
        self._plan = {}
        pending = self._pending.ids() if self._pending is not None else set()
        to_run: list[BaseNode] = []
        for node in nodes:
            doc_id = node.ref_doc_id or node.node_id
            existing = self.docstore.get_document_hash(doc_id)
            if existing == node.hash and doc_id not in pending:
                continue
            self._plan[doc_id] = "updated" if existing else "new"
            to_run.append(node)
        if self._pending is not None:
            self._pending.mark(self._plan)  # before any store write (see the module docstring)
        if self._on_plan is not None:
            self._on_plan({d for d, kind in self._plan.items()
                           if kind == "updated" or d in pending})
        return to_run

    def _update_docstore(self, nodes: Sequence[BaseNode], *args: Any, **kwargs: Any) -> None:
        """The commit: ``add_documents`` writes each body, then its hash (no separate hash write).

        LlamaIndex writes all hashes first and the bodies after; a crash in between left a
        committed hash whose body is missing or, for an edit, still the old text.
        """
        assert self.docstore is not None
        if nodes and self._before_commit is not None:
            self._before_commit()  # the chunks are durable before the docstore says "done"
        if nodes:
            committing = [(n.node_id, n.hash) for n in nodes]
            for hook in self._on_commit:
                hook(committing)
        self.docstore.add_documents(nodes, store_text=kwargs.get("store_doc_text", True))
        if self._pending is not None:
            self._pending.clear(n.node_id for n in nodes)

    @property
    def plan(self) -> dict[str, str]:
        """doc id → ``new``/``updated`` for the last run (unchanged posts are absent)."""
        return dict(self._plan)


@dataclass
class IngestReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    embedded_nodes: int = 0  # chunks written with their vectors
    reused_vectors: int = 0  # of them, vectors not computed by the model (see ingest.embedder)
    seconds: float = 0.0
    skipped_records: list[SkippedRecord] = field(default_factory=list)

    @property
    def posts(self) -> int:
        return self.new + self.updated + self.unchanged

    def to_dict(self) -> dict[str, Any]:
        return {
            "new": self.new, "updated": self.updated, "unchanged": self.unchanged,
            "skipped": self.skipped, "embedded_nodes": self.embedded_nodes,
            "reused_vectors": self.reused_vectors, "seconds": round(self.seconds, 3),
            "skipped_records": [str(s) for s in self.skipped_records],
        }


ProgressCallback = Callable[[int, IngestReport], None]


class PostPipeline:
    """Ingests posts into an opened :class:`Index`: tag → split → sparse → embed → store.

    ``tagger`` defaults to the offline keyword tagger with corpus-wide document frequencies in
    Redis (``ingest.llm_tagging.keyword_tagger``); the composition root passes the configured
    one (``api.services.Services.pipeline``), so every ingest path tags alike, and the commit
    hooks (``on_commit``: the alert outbox), so every ingest path is checked against alerts.
    """

    def __init__(
        self,
        index: Index,
        tagger: BaseExtractor | None = None,
        batch_size: int | None = None,
        on_commit: Sequence[CommitHook] = (),
    ) -> None:
        from ingest.llm_tagging import keyword_tagger

        settings = index.settings
        self.index = index
        self.batch_size = batch_size or settings.ingest_batch_size
        emb = index.embedding
        self.splitter = PostSplitter(
            emb.count_tokens, chunk_tokens=min(settings.chunk_tokens, emb.max_tokens - 16)
        )
        self.tagger = tagger or keyword_tagger(settings, index.redis)
        self.sparse = SparseEncoder()
        self.embedder = ChunkEmbedder(emb.model, index.store)
        self.pipeline = SafeUpsertPipeline(
            transformations=[self.tagger, self.splitter, self.sparse, self.embedder],
            vector_store=index.vector_store(),
            docstore=index.docstore,
            docstore_strategy=DocstoreStrategy.UPSERTS,
            disable_cache=True,
        )
        self.pipeline.track_pending(PendingPosts(index.redis, index.namespace),
                                    before_commit=index.store.flush,
                                    on_plan=self.embedder.expect_stored)
        self.pipeline.on_commit(on_commit)
        # Earlier versions kept LlamaIndex's ingestion cache here (~34 KB a post); nothing reads
        # it any more, so it goes (UNLINK frees it in the background; a no-op once gone).
        index.redis.unlink(f"{index.namespace}:{LEGACY_CACHE}")

    def ingest(
        self, items: Iterable[ReadItem], on_progress: ProgressCallback | None = None
    ) -> IngestReport:
        """Ingest posts in batches; ``SkippedRecord`` items are counted and reported."""
        report = IngestReport()
        started = time.perf_counter()
        self.embedder.start_run()  # identical texts are embedded once per ingest
        seen: set[str] = set()
        batch: list[Post] = []
        done = 0
        for item in items:
            if isinstance(item, SkippedRecord):
                report.skipped_records.append(item)
                report.skipped += 1
                continue
            if item.doc_id in seen:
                report.skipped_records.append(SkippedRecord(
                    "", item.doc_id, "duplicate of a post read earlier in this run; kept the first"
                ))
                report.skipped += 1
                continue
            seen.add(item.doc_id)
            batch.append(item)
            if len(batch) >= self.batch_size:
                done += self._run_batch(batch, report)
                batch = []
                if on_progress:
                    on_progress(done, report)
        if batch:
            done += self._run_batch(batch, report)
            if on_progress:
                on_progress(done, report)
        report.seconds = time.perf_counter() - started
        INGEST_POSTS.inc("skipped", amount=report.skipped)
        log.info("ingest done", extra={"report": report.to_dict()})
        return report

    def _run_batch(self, posts: list[Post], report: IngestReport) -> int:
        posts = with_known_names(posts, self.index.catalog)  # before hashing: nothing re-embeds
        docs = [p.to_document() for p in posts]
        with self.index.write_lock:
            reused = self.embedder.reused
            nodes = self.pipeline.run(documents=docs)
            report.reused_vectors += self.embedder.reused - reused
            plan = self.pipeline.plan
            # Idempotent, and done for unchanged posts too, so a crash between the docstore commit
            # and this line heals on the next run.
            self.index.catalog.record_posts(
                [(p.channel_id, p.channel, p.channel_title, p.message_id, p.date) for p in posts]
            )
        new = sum(1 for v in plan.values() if v == "new")
        report.new += new
        report.updated += len(plan) - new
        report.unchanged += len(docs) - len(plan)
        INGEST_POSTS.inc("new", amount=new)
        INGEST_POSTS.inc("updated", amount=len(plan) - new)
        INGEST_POSTS.inc("unchanged", amount=len(docs) - len(plan))
        report.embedded_nodes += sum(1 for n in nodes if n.embedding is not None)
        return len(posts)
