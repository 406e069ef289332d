"""Removing posts from the index in a crash-safe order: Qdrant, then the docstore, then the catalog.

Qdrant goes first, so a removed post stops being searchable at once.  The docstore and the channel
catalog still list it until their turn, so a crash in between leaves a trace that the next attempt
follows to finish the job (a re-scan of the channel finds the post missing again;
``tgrag channels remove --delete-posts`` run again finds the channel in the catalog).  Every step is
idempotent.  Callers serialize these writes with ingestion (Qdrant's local client is not safe for
concurrent writers).
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.index import Index
from rag.tenants import tenant_doc_id


def delete_posts(index: Index, channel_id: int, message_ids: Sequence[int]) -> None:
    """Remove some posts of a channel (the index's tenant): Qdrant, the docstore, the catalog."""
    ids = sorted(set(message_ids))
    for message_id in ids:
        doc_id = tenant_doc_id(index.tenant, channel_id, message_id)
        index.store.delete(doc_id)
        _forget_document(index, doc_id)
    index.catalog.forget_posts(channel_id, ids)


def delete_channel(index: Index, channel_id: int) -> int:
    """Remove every post of a channel (the index's tenant); returns how many posts it had.

    The posts are those the catalog lists plus any the docstore holds without a catalog entry (a
    crash between the docstore commit and the catalog write); Qdrant is cleared by one filtered
    delete on ``channel_id`` and ``tenant``, which also catches chunks of posts never committed.
    """
    prefix = tenant_doc_id(index.tenant, channel_id, 0).removesuffix("0")
    ids = set(index.catalog.post_ids(channel_id))
    for doc_id in index.docstore.get_all_document_hashes().values():
        tail = doc_id[len(prefix):] if doc_id.startswith(prefix) else ""
        if tail.isdigit():
            ids.add(int(tail))
    index.store.delete_channel(channel_id, index.tenant)
    for message_id in sorted(ids):
        _forget_document(index, tenant_doc_id(index.tenant, channel_id, message_id))
    index.catalog.forget_channel(channel_id)
    return len(ids)


def _forget_document(index: Index, doc_id: str) -> None:
    index.docstore.delete_ref_doc(doc_id, raise_error=False)
    index.docstore.delete_document(doc_id, raise_error=False)
