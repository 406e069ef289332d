"""The data model: one Telegram post → one LlamaIndex ``Document`` with a stable id and hash.

Document id ``tg:<channel_id>:<message_id>`` (``<tenant>/…`` for other tenants; ``rag.ids``).
The hash covers the text and the *stable* metadata only: engagement counters change every
minute and tags are derived, so neither may trigger a re-embedding.  Ids, dates, links and
counters are kept out of the embedded text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llama_index.core.schema import Document

from rag import ids

# Metadata that changes without the post changing (engagement) or is derived by the pipeline (tags,
# edit time): never part of the document hash.
VOLATILE_KEYS = frozenset({"views", "forwards", "reactions", "edited", "tags", "tag_source"})
# What the embedding model and the LLM never see.
NOT_EMBEDDED_KEYS = [
    "channel_id", "channel", "channel_title", "message_id", "date", "date_iso", "link", "tags",
    "tag_source", "edited", "forwarded_from", "grouped_id", "links", "views", "forwards",
    "reactions",
]
NOT_FOR_LLM_KEYS = [
    "channel_id", "message_id", "date", "link", "tag_source", "edited", "grouped_id", "links",
    "views", "forwards", "reactions",
]


@dataclass(slots=True)
class Post:
    """A Telegram channel post as every reader produces it (before it becomes a Document)."""

    channel_id: int
    message_id: int
    date: int  # unix seconds, UTC
    text: str
    channel: str = ""  # username without @, may be empty
    channel_title: str = ""
    edited: int | None = None
    forwarded_from: str | None = None
    grouped_id: int | None = None
    views: int | None = None
    forwards: int | None = None
    reactions: dict[str, int] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # link targets found in the text entities
    # The owner (rag.ids): the default tenant's posts keep the contract's id and the same hash
    # as a CLI ingest, so uploading what the CLI already ingested re-embeds nothing.
    tenant: str = ids.DEFAULT_TENANT

    @property
    def doc_id(self) -> str:
        return ids.doc_id(self.channel_id, self.message_id, self.tenant)

    @property
    def link(self) -> str:
        return ids.post_link(self.channel_id, self.channel, self.message_id)

    def to_document(self) -> PostDocument:
        metadata: dict[str, Any] = {
            "channel_id": self.channel_id,
            "channel": self.channel,
            "channel_title": self.channel_title,
            "message_id": self.message_id,
            "date": self.date,
            "date_iso": datetime.fromtimestamp(self.date, UTC).isoformat(),
            "link": self.link,
            "tags": [],
            "tag_source": "",
            "edited": self.edited,
            "forwarded_from": self.forwarded_from,
            "grouped_id": self.grouped_id,
            "links": list(self.links),
            "views": self.views,
            "forwards": self.forwards,
            "reactions": dict(self.reactions),
        }
        hidden = []
        if self.tenant != ids.DEFAULT_TENANT:
            metadata["tenant"] = self.tenant
            # Never embedded nor shown to the LLM: the same text embeds the same for every tenant.
            hidden = ["tenant"]
        return PostDocument(
            id_=self.doc_id,
            text=self.text,
            metadata=metadata,
            excluded_embed_metadata_keys=[*NOT_EMBEDDED_KEYS, *hidden],
            excluded_llm_metadata_keys=[*NOT_FOR_LLM_KEYS, *hidden],
        )


def stable_hash(text: str, metadata: dict[str, Any]) -> str:
    """Hash of a post's text and stable metadata (see ``VOLATILE_KEYS``)."""
    stable = {k: v for k, v in sorted(metadata.items()) if k not in VOLATILE_KEYS}
    payload = json.dumps([text, stable], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


class PostDocument(Document):
    """A ``Document`` whose hash ignores engagement counters and derived fields.

    ``class_name`` stays ``Document`` so the docstore round-trips it as a plain Document.
    """

    @property
    def hash(self) -> str:  # type: ignore[override]
        return stable_hash(self.text, self.metadata)
