"""Removing posts from the index in a crash-safe order: the vector store, then the docstore, then
the catalog.

The store goes first, so a removed post stops being searchable at once.  The docstore and the
channel catalog still list it until their turn, so a crash in between leaves a trace that the next
attempt follows to finish the job (a re-scan of the channel finds the post missing again;
``tgrag channels remove --delete-posts`` run again finds the channel in the catalog).  Every step is
idempotent, and each removal holds the index's write lock, like an ingest batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag import ids
from rag.index import Index
from rag.store import StoreFilter


def delete_posts(index: Index, channel_id: int, message_ids: Sequence[int]) -> None:
    """Remove some posts of a channel (the index's tenant): store, docstore, catalog."""
    numbers = sorted(set(message_ids))
    doc_ids = [ids.doc_id(channel_id, m, index.tenant) for m in numbers]
    with index.write_lock:
        index.store.delete_docs(doc_ids)
        index.store.flush()
        for doc_id in doc_ids:
            _forget_document(index, doc_id)
        index.catalog.forget_posts(channel_id, numbers)


def delete_channel(index: Index, channel_id: int) -> int:
    """Remove every post of a channel (the index's tenant); returns how many posts it had.

    The posts are those the catalog lists plus any the docstore holds without a catalog entry (a
    crash between the docstore commit and the catalog write); the store is cleared by one filtered
    delete on ``channel_id`` and ``tenant``, which also catches chunks of posts never committed.
    """
    prefix = ids.doc_id_prefix(channel_id, index.tenant)
    with index.write_lock:
        numbers = set(index.catalog.post_ids(channel_id))
        for doc_id in index.post_ids():
            tail = doc_id[len(prefix):] if doc_id.startswith(prefix) else ""
            if tail.isdigit():
                numbers.add(int(tail))
        index.store.delete_matching(StoreFilter(tenant=index.tenant, channel_ids=(channel_id,)))
        index.store.flush()
        for message_id in sorted(numbers):
            _forget_document(index, ids.doc_id(channel_id, message_id, index.tenant))
        index.catalog.forget_channel(channel_id)
    return len(numbers)


def _forget_document(index: Index, doc_id: str) -> None:
    index.docstore.delete_ref_doc(doc_id, raise_error=False)
    index.docstore.delete_document(doc_id, raise_error=False)
