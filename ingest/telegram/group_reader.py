"""Reading a group chat (a supergroup or a small group) through the real ``TelegramClient``:
messages → :class:`~ingest.chat_windows.ChatMessage` (sender, reply, thread), oldest first.

Only chats :meth:`TelegramReader.resolve` accepted as groups get here (followed with ``--group``);
a private chat never does.  The windows are built from these messages by
``ingest.chat_windows`` and synced by ``ingest.telegram.group_sync``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from telethon import TelegramClient, types, utils

from ingest.chat_windows import ChatMessage
from ingest.telegram.reader import ChannelRef, ReadStats, extract_links
from rag.ids import normalize_channel_id


def sender_of(message: Any) -> tuple[int | None, str]:
    """The sender's id (a user, or a channel or the group itself posting) and display name."""
    peer = getattr(message, "from_id", None)
    if isinstance(peer, types.PeerUser):
        sender_id: int | None = peer.user_id
    elif isinstance(peer, types.PeerChannel):
        sender_id = normalize_channel_id(peer.channel_id)
    elif isinstance(peer, types.PeerChat):
        sender_id = peer.chat_id
    else:  # an anonymous admin: the group itself (its signature, if any, names the admin)
        sender_id = None
    entity = getattr(message, "sender", None)  # resolved by Telethon from the reply's users/chats
    name = utils.get_display_name(entity) if entity is not None else ""
    return sender_id, name or (getattr(message, "post_author", None) or "")


def thread_and_reply(message: Any) -> tuple[int, int | None]:
    """``(thread_id, reply_to)``: the forum topic or comment thread (0 = the main flow) and the
    message replied to (None for a plain message, or a topic's message that is no reply)."""
    header = getattr(message, "reply_to", None)
    if not isinstance(header, types.MessageReplyHeader):
        return 0, None
    top = header.reply_to_top_id
    if header.forum_topic and not top:
        return header.reply_to_msg_id or 0, None  # in a topic, replying to nothing in it
    return top or 0, header.reply_to_msg_id


def chat_message(message: types.Message) -> ChatMessage:
    sender_id, sender_name = sender_of(message)
    thread_id, reply_to = thread_and_reply(message)
    text = message.message or ""
    mentioned = tuple(dict.fromkeys(
        e.user_id for e in message.entities or []
        if isinstance(e, types.MessageEntityMentionName)))
    edited = message.edit_date
    return ChatMessage(
        message_id=message.id, date=int(message.date.timestamp()), text=text,
        sender_id=sender_id, sender_name=sender_name, reply_to=reply_to, thread_id=thread_id,
        edited=int(edited.timestamp()) if edited is not None else None,
        mentioned_ids=mentioned, links=tuple(extract_links(text, message.entities)),
    )


class GroupReader:
    """Reads a group chat's text messages through an already connected client."""

    def __init__(self, client: TelegramClient) -> None:
        self.client = client
        self.stats = ReadStats()

    async def iter_messages(self, chat: ChannelRef, *, min_id: int = 0,
                            offset_date: datetime | None = None) -> AsyncIterator[ChatMessage]:
        """Text messages after ``min_id`` (or since ``offset_date``), oldest first; service and
        media-only messages are counted in ``self.stats`` and skipped."""
        self.stats = stats = ReadStats()
        async for message in self.client.iter_messages(
            chat.entity, min_id=min_id, offset_date=offset_date, reverse=True,
        ):
            stats.messages += 1
            stats.max_seen = max(stats.max_seen, message.id)
            if not isinstance(message, types.Message):
                stats.service += 1
                continue
            if not (message.message or "").strip():
                stats.empty += 1
                continue
            stats.posts += 1
            yield chat_message(message)
        stats.consumed_upto = stats.max_seen

    async def newest(self, chat: ChannelRef, limit: int) -> list[types.Message]:
        """The chat's last ``limit`` messages, newest first (for ``--backfill``)."""
        return [m async for m in self.client.iter_messages(chat.entity, limit=limit)]
