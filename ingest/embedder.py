"""The pipeline's embedding stage: each distinct chunk text goes to the model once per ingest, and
vectors the store already holds for a chunk text are read back instead of recomputed.

The model is the cost of an ingest (≈ 90 % of it, docs/benchmarks.md), so:

* identical chunk texts (forwards, cross-posts, a channel's recurring announcement) are embedded
  once per run: within a batch by grouping them, across the batches of one ``PostPipeline.ingest``
  through a map *text digest → a post holding a chunk with that text*, whose vector is read back
  from the store when the text comes again;
* a post the docstore already knows (an *updated* one: its text or its stable metadata changed,
  e.g. a renamed channel) gets back the stored vectors of its chunks whose text did not change
  (``ChunkStore.chunks_of(doc_id, with_vectors=True)``); only changed chunks reach the model.

A stored vector stands for a text only when the model embedded exactly that text: the chunk's text
with no metadata (``excluded_embed_metadata_keys`` covers every key, as for every post) and the
stored payload text equal to it.  The collection is bound to one model (``rag.store`` refuses to
open it with another), so a vector read back is this model's.  Reading back never changes what
is written: the same vector the model gave for that text, under the chunk's own point id.

This replaces LlamaIndex's ``IngestionCache``, which kept every batch's nodes with their vectors in
Redis (~34 KB a post) to skip the model for a batch seen before; the vectors are in the store
anyway, and the expensive thing that is not (LLM tags) has its own cache by text
(``ingest.llm_tagging.TagCache``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import PrivateAttr

from rag.store import ChunkStore

log = logging.getLogger("tgrag.ingest")

MAX_REMEMBERED = 1_000_000  # text digests kept per run (~100 bytes each)


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ChunkEmbedder(TransformComponent):
    """Sets ``node.embedding`` on every chunk, calling the model only for texts it cannot reuse.

    ``expect_stored(doc_ids)`` names the posts of the next batch that may have chunks in the store
    (the pipeline calls it after classifying the batch); ``start_run()`` forgets the texts of the
    previous ingest.  ``embedded`` and ``reused`` count chunks since the object was made.
    """

    _model: BaseEmbedding = PrivateAttr()
    _store: ChunkStore = PrivateAttr()
    _stored_docs: set[str] = PrivateAttr(default_factory=set)
    _seen: dict[bytes, str] = PrivateAttr(default_factory=dict)
    _embedded: int = PrivateAttr(default=0)
    _reused: int = PrivateAttr(default=0)

    def __init__(self, model: BaseEmbedding, store: ChunkStore, **data: Any) -> None:
        super().__init__(**data)
        self._model = model
        self._store = store

    @classmethod
    def class_name(cls) -> str:
        return "ChunkEmbedder"

    @property
    def embedded(self) -> int:
        """Chunks whose vector the model computed."""
        return self._embedded

    @property
    def reused(self) -> int:
        """Chunks whose vector was read back or shared with an identical text."""
        return self._reused

    def start_run(self) -> None:
        self._seen.clear()

    def expect_stored(self, doc_ids: Iterable[str]) -> None:
        self._stored_docs = set(doc_ids)

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        # Only a chunk embedded as its plain text can share a vector with a stored chunk.
        plain = [text == node.get_content(metadata_mode=MetadataMode.NONE)
                 for node, text in zip(nodes, texts, strict=True)]
        digests = [text_digest(t) for t in texts]
        known = self._stored_vectors(nodes, texts, digests, plain)
        missing = list(dict.fromkeys(t for t, d in zip(texts, digests, strict=True)
                                     if d not in known))
        if missing:
            vectors = self._model.get_text_embedding_batch(missing, **kwargs)
            known.update(zip(map(text_digest, missing), vectors, strict=True))
        for node, digest, reusable in zip(nodes, digests, plain, strict=True):
            node.embedding = list(known[digest])
            if reusable and len(self._seen) < MAX_REMEMBERED:
                self._seen.setdefault(digest, node.ref_doc_id or node.node_id)
        self._embedded += len(missing)
        self._reused += len(nodes) - len(missing)
        self._stored_docs = set()
        return nodes

    def _stored_vectors(self, nodes: Sequence[BaseNode], texts: list[str], digests: list[bytes],
                        plain: list[bool]) -> dict[bytes, list[float]]:
        """digest → stored vector, for the reusable texts of ``nodes`` that the store holds."""
        wanted = {d for d, ok in zip(digests, plain, strict=True) if ok}
        sources: set[str] = set()
        for node, digest, ok in zip(nodes, digests, plain, strict=True):
            if not ok:
                continue
            doc_id = node.ref_doc_id or node.node_id
            if doc_id in self._stored_docs:
                sources.add(doc_id)  # the post's own chunks, from before this change
            elif digest in self._seen:
                sources.add(self._seen[digest])  # an identical text written earlier in the run
        found: dict[bytes, list[float]] = {}
        for doc_id in sorted(sources):
            for chunk in self._store.chunks_of(doc_id, with_vectors=True):
                digest = text_digest(chunk.text)
                dense = chunk.dense
                if digest in wanted and dense is not None and digest not in found:
                    found[digest] = list(dense)
        if sources:
            log.debug("vectors read back", extra={"posts": len(sources), "texts": len(found)})
        return found
