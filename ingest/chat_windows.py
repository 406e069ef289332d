"""Group-chat messages → windows of a thread → one :class:`Post` per window.

A chat message alone ("да, завтра в 10") gives search and alerts too little context, so a group
chat is indexed in *windows*.  A window is a run of consecutive messages of the chat that

* belong to one thread (``thread_id``: a forum topic or a channel post's comment thread, what
  Telegram calls the reply's top message; anything else is the chat's main flow, thread 0, and a
  plain reply stays in the flow with its ``reply_to`` recorded),
* follow each other by at most ``TGRAG_GROUP_WINDOW_MINUTES`` minutes,
* and fit together in ``TGRAG_GROUP_WINDOW_CHARS`` characters of window text, at most
  :data:`MAX_MESSAGES` messages (a longer message is a window of its own).

The rule is greedy and looks only forward from a window's first message, and a window ends where
the next one starts, so re-reading a chat from any window's first message rebuilds exactly the
windows after it: ``ingest.telegram.group_sync`` re-reads from such a boundary after new messages,
edits and deletions.  An edited message changes its window's text (same id, re-embedded once); a
deleted one leaves its window (a window losing its first message comes back under the next
message's id, the old id is deleted), and both may move the later boundaries, which the re-read
follows.

The window's text is one line per message, ``Имя: текст`` (the sender's name helps both the
reader and the search); its ``window`` metadata gives each message's id, sender and the
``[start, end)`` of the message's own text in the window's text, so ``rag.mentions`` can tell who
wrote what.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.documents import GROUP, Post
from rag import ids
from rag.settings import Settings

MAX_MESSAGES = 50  # per window: keeps the window's metadata small in a burst of "+1"s


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One text message of a group chat, as the window builder needs it."""

    message_id: int
    date: int  # unix seconds
    text: str
    sender_id: int | None = None
    sender_name: str = ""
    reply_to: int | None = None
    thread_id: int = 0
    edited: int | None = None
    mentioned_ids: tuple[int, ...] = ()  # users mentioned by a link to them (no @username)
    links: tuple[str, ...] = field(default_factory=tuple)

    @property
    def prefix(self) -> str:
        return f"{self.sender_name}: " if self.sender_name else ""

    @property
    def line(self) -> str:
        return self.prefix + self.text


@dataclass(frozen=True, slots=True)
class WindowRule:
    """When a message joins the window before it (see the module docstring)."""

    gap: float  # seconds
    max_chars: int
    max_messages: int = MAX_MESSAGES

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowRule:
        return cls(gap=settings.group_window_minutes * 60, max_chars=settings.group_window_chars)

    def joins(self, window: Sequence[ChatMessage], chars: int, message: ChatMessage) -> bool:
        if not window:
            return True
        last = window[-1]
        return (message.thread_id == last.thread_id
                and message.date - last.date <= self.gap
                and chars + 1 + len(message.line) <= self.max_chars
                and len(window) < self.max_messages)


class WindowBuilder:
    """The greedy rule over messages pushed in id order: :meth:`push` returns the window a
    message closes (it starts the next one), :meth:`flush` the last, open one."""

    def __init__(self, rule: WindowRule) -> None:
        self.rule = rule
        self._open: list[ChatMessage] = []
        self._chars = 0

    def push(self, message: ChatMessage) -> list[ChatMessage] | None:
        closed = None
        if not self.rule.joins(self._open, self._chars, message):
            closed, self._open, self._chars = self._open, [], 0
        self._chars += len(message.line) + (1 if self._open else 0)
        self._open.append(message)
        return closed

    def flush(self) -> list[ChatMessage] | None:
        window, self._open, self._chars = self._open, [], 0
        return window or None


def windows(messages: Iterable[ChatMessage], rule: WindowRule) -> Iterator[list[ChatMessage]]:
    """The windows of messages given in id order."""
    builder = WindowBuilder(rule)
    for message in messages:
        closed = builder.push(message)
        if closed:
            yield closed
    last = builder.flush()
    if last:
        yield last


def window_post(chat_id: int, username: str, title: str, window: Sequence[ChatMessage],
                tenant: str = ids.DEFAULT_TENANT) -> Post:
    """The Post of one window: id and date of its first message, one line per message."""
    first = window[0]
    lines: list[str] = []
    parts: list[dict[str, Any]] = []
    offset = 0
    links: list[str] = []
    for message in window:
        start = offset + len(message.prefix)
        part: dict[str, Any] = {"id": message.message_id, "sender_id": message.sender_id,
                                "start": start, "end": start + len(message.text)}
        if message.mentioned_ids:
            part["mentions"] = list(message.mentioned_ids)
        parts.append(part)
        lines.append(message.line)
        offset += len(message.line) + 1
        links.extend(url for url in message.links if url not in links)
    edits = [m.edited for m in window if m.edited is not None]
    return Post(
        channel_id=chat_id, message_id=first.message_id, date=first.date, text="\n".join(lines),
        channel=username, channel_title=title, edited=max(edits) if edits else None,
        links=links, tenant=tenant, chat_type=GROUP, sender_id=first.sender_id,
        sender_name=first.sender_name, reply_to=first.reply_to, thread_id=first.thread_id,
        window=parts,
    )  # its doc_id is ids.window_doc_id(chat_id, first.message_id, tenant)
