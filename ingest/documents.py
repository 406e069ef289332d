"""The data model: one Telegram post → one LlamaIndex ``Document`` with a stable id and hash.

Document id ``tg:<channel_id>:<message_id>`` (``<tenant>/…`` for other tenants; ``rag.ids``).
The hash covers the text and the *stable* metadata only: engagement counters change every
minute and tags are derived, so neither may trigger a re-embedding.  Ids, dates, links and
counters are kept out of the embedded text.

A group chat's messages are indexed as *windows* of a thread (``ingest.chat_windows``): one Post
per window, id of its first message, with ``chat_type="group"``, the first message's sender and
reply, and the window's messages (``window``: id, sender and span in the text of each).  Channel
posts carry ``chat_type="channel"``, a value the hash leaves out (``HASH_DEFAULTS``), so posts
indexed before the field existed keep their hash and are not re-embedded.
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
# Metadata added after posts were first indexed: left out of the hash while it has this value, so
# an old post's hash still matches and nothing is re-embedded for the new field.
HASH_DEFAULTS: dict[str, Any] = {"chat_type": "channel"}
CHANNEL, GROUP = "channel", "group"
# Group-chat fields (DESIGN's data model), present on group windows only.
GROUP_KEYS = ["sender_id", "sender_name", "reply_to", "thread_id", "window"]
# What the embedding model and the LLM never see (a window's text has the senders' names already).
NOT_EMBEDDED_KEYS = [
    "channel_id", "channel", "channel_title", "message_id", "date", "date_iso", "link", "tags",
    "tag_source", "edited", "forwarded_from", "grouped_id", "links", "views", "forwards",
    "reactions", "chat_type", *GROUP_KEYS,
]
NOT_FOR_LLM_KEYS = [
    "channel_id", "message_id", "date", "link", "tag_source", "edited", "grouped_id", "links",
    "views", "forwards", "reactions", "chat_type", *GROUP_KEYS,
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
    # A group chat's window (see the module docstring); channel posts keep the defaults.
    chat_type: str = CHANNEL
    sender_id: int | None = None  # the first message's sender (a user, or a channel posting)
    sender_name: str = ""
    reply_to: int | None = None  # the message the window's first message replies to
    thread_id: int = 0  # forum topic or comment thread; 0 = the chat's main flow
    window: list[dict[str, Any]] = field(default_factory=list)

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
            "chat_type": self.chat_type,
        }
        if self.chat_type == GROUP:
            metadata.update({
                "sender_id": self.sender_id, "sender_name": self.sender_name,
                "reply_to": self.reply_to, "thread_id": self.thread_id,
                "window": [dict(part) for part in self.window],
            })
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
    stable = {k: v for k, v in sorted(metadata.items())
              if k not in VOLATILE_KEYS and not (k in HASH_DEFAULTS and v == HASH_DEFAULTS[k])}
    payload = json.dumps([text, stable], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


class PostDocument(Document):
    """A ``Document`` whose hash ignores engagement counters and derived fields.

    ``class_name`` stays ``Document`` so the docstore round-trips it as a plain Document.
    """

    @property
    def hash(self) -> str:  # type: ignore[override]
        return stable_hash(self.text, self.metadata)
