"""Telegram Desktop JSON exports: a single chat's ``result.json`` or a full-account export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ingest.documents import Post
from ingest.readers.base import PostReader, ReadItem, SkippedRecord
from ingest.readers.source import (
    MAX_INT,
    BadDate,
    SourceText,
    add_links,
    clean_str,
    json_error_reason,
    moment_seconds,
    optional_count,
    parse_channel_id,
    parse_message_id,
    parse_unix,
    read_source,
    shown,
    text_problem,
)
from rag.errors import InputError

RESULT_FILE = "result.json"
CHANNELS_FILE = "channels.json"
# Only broadcast channels are posts; groups and personal chats are conversations of people who never
# published them, so a full-account export's other chats are left out on purpose.
CHANNEL_TYPES = frozenset({"public_channel", "private_channel"})
# Entity types whose target is a web link: the visible text of a bare link, the href of a text link.
_LINK_TEXT_TYPES = frozenset({"link"})
_LINK_HREF_TYPES = frozenset({"text_link"})


ChannelNames = dict[int, dict[str, str]]  # channel id → {"username", "title"}


def is_export(data: Any) -> bool:
    """Whether parsed JSON looks like a Desktop export (single chat or full account)."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("chats"), dict) or isinstance(data.get("left_chats"), dict):
        return True
    messages = data.get("messages")
    if not isinstance(messages, list):
        return False
    if "type" in data or ("name" in data and "id" in data):
        return True
    # A chat object missing its header fields: recognise Desktop's own message fields.
    first = next((m for m in messages[:20] if isinstance(m, dict)), {})
    return "date_unixtime" in first or first.get("type") in ("message", "service")


def flatten_text(value: Any) -> tuple[str, list[str]]:
    """Plain text of a Desktop ``text``/``text_entities`` value, and the link targets in it.

    ``value`` is a string, or a list of strings and entity objects ``{"type", "text", "href"}``.
    """
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        return str(value), []
    parts: list[str] = []
    links: list[str] = []
    for piece in value:
        if isinstance(piece, str):
            parts.append(piece)
            continue
        if not isinstance(piece, dict):
            continue
        text = piece.get("text")
        text = text if isinstance(text, str) else ""
        parts.append(text)
        kind = piece.get("type")
        if kind in _LINK_TEXT_TYPES:
            add_links(links, [text])
        elif kind in _LINK_HREF_TYPES and isinstance(piece.get("href"), str):
            add_links(links, [piece["href"]])
    return "".join(parts), links


def parse_reactions(value: Any) -> dict[str, int]:
    """``[{"type": "emoji", "emoji": "👍", "count": 3}, …]`` → ``{"👍": 3}``.

    Custom emoji have no character: they are keyed ``custom:<document_id>``; paid (star) reactions
    ``paid``.
    """
    reactions: dict[str, int] = {}
    if not isinstance(value, list):
        return reactions
    for item in value:
        if not isinstance(item, dict):
            continue
        count = optional_count(item.get("count"))
        if count is None:
            continue
        kind = item.get("type")
        if kind == "emoji" and isinstance(item.get("emoji"), str):
            key = item["emoji"]
        elif kind == "custom_emoji":
            key = f"custom:{item.get('document_id', '')}"
        else:
            key = str(kind or "unknown")
        reactions[key] = min(reactions.get(key, 0) + count, MAX_INT)
    return reactions


def load_channel_names(path: Path) -> tuple[ChannelNames, SkippedRecord | None]:
    """The optional ``channels.json`` beside ``result.json``: channel id → username and title.

    Exports do not carry usernames, so this file supplies them (for ``t.me/<username>`` links).
    Accepted shapes: ``{"<id>": {"username", "title"}}``, ``{"<id>": "username"}``, or a list of
    ``{"id", "username", "title"}`` (also under a ``"channels"`` key).
    """
    if not path.is_file():
        return {}, None
    return parse_channel_names(read_source(path), str(path))


def parse_channel_names(
    source: SourceText, name: str
) -> tuple[ChannelNames, SkippedRecord | None]:
    """:func:`load_channel_names` of a ``channels.json`` already read (``name``: how to cite it)."""
    try:
        data = json.loads(source.text)
    except json.JSONDecodeError as error:
        return {}, SkippedRecord(
            name, "file", f"{json_error_reason(error)}; usernames unknown, links use t.me/c/"
        )
    if isinstance(data, dict) and isinstance(data.get("channels"), list):
        data = data["channels"]
    entries: list[tuple[Any, Any]] = []
    if isinstance(data, dict):
        entries = list(data.items())
    elif isinstance(data, list):
        entries = [(item.get("id"), item) for item in data if isinstance(item, dict)]
    names: ChannelNames = {}
    for raw_id, info in entries:
        channel_id = parse_channel_id(raw_id)
        if channel_id is None:
            continue
        if isinstance(info, str):
            info = {"username": info}
        if not isinstance(info, dict):
            continue
        username = info.get("username") or ""
        title = info.get("title") or ""
        names[channel_id] = {
            "username": clean_str(str(username)).lstrip("@"),
            "title": clean_str(str(title)),
        }
    return names, None


class ExportReader(PostReader):
    """Reads a Telegram Desktop JSON export (``result.json``, or the folder that holds it).

    * Single-chat export: top level ``{"name", "type", "id", "messages"}``.
    * Full-account export: ``chats.list`` and ``left_chats.list``, each a list of such chats.

    Only channels (``public_channel``, ``private_channel``) are read; other chats of a full-account
    export are ignored silently, and a single-chat export of a group or personal chat yields one
    file-level :class:`SkippedRecord` saying so.  A chat without ``type`` is read as a channel.

    Per message: service messages (``type == "service"``) are ignored silently (joins, pins and
    title changes are not posts); posts with no text are skipped; ``date_unixtime`` is the date
    (``date`` is the exporter's local time, used only as a fallback); ``edited_unixtime``,
    ``forwarded_from`` and ``reactions`` are kept; link targets of ``link``/``text_link`` entities
    go to ``Post.links``.  Usernames come from an optional ``channels.json`` beside ``result.json``
    (see :func:`load_channel_names`); without one, links use ``https://t.me/c/<id>/<message_id>``.
    """

    def __init__(
        self,
        path: str | Path,
        max_post_chars: int = 65536,
        *,
        source: SourceText | None = None,
        data: Any = None,
        channel_names: tuple[ChannelNames, SkippedRecord | None] | None = None,
        name: str | None = None,
    ) -> None:
        """``source``/``data``: the already decoded and parsed file (``open_reader`` passes them
        so a file is parsed once).  ``channel_names`` (what :func:`load_channel_names` returns)
        and ``name`` (how records cite the file) are for exports read from elsewhere, a zip."""
        super().__init__(path, max_post_chars)
        self._source = source
        self._data = data
        self._channel_names = channel_names
        self._name = name

    @property
    def sources(self) -> list[str]:
        return [self._name or str(self.result_path)]

    @property
    def result_path(self) -> Path:
        """The ``result.json`` this reader reads (``path`` may be the export folder)."""
        return self.path / RESULT_FILE if self.path.is_dir() else self.path

    def iter_posts(self) -> Iterator[ReadItem]:
        result = self.result_path
        name = self._name or str(result)
        if not result.is_file():
            raise InputError(
                f"{self.path}: no {RESULT_FILE} here",
                hint="pass a Telegram Desktop export folder or its result.json",
            )
        source = self._source or read_source(result)
        data = self._data
        if data is None:
            try:
                data = json.loads(source.text)
            except json.JSONDecodeError as error:
                yield SkippedRecord(name, "file", json_error_reason(error))
                return
        if not is_export(data):
            yield SkippedRecord(
                name, "file",
                "not a Telegram Desktop export: expected \"messages\" with "
                "\"name\"/\"type\"/\"id\", or \"chats\".\"list\"",
            )
            return
        names, problem = self._channel_names or load_channel_names(result.parent / CHANNELS_FILE)
        if problem is not None:
            yield problem
        if "messages" in data:
            chat_type = data.get("type")
            if chat_type is not None and chat_type not in CHANNEL_TYPES:
                yield SkippedRecord(
                    name, "file",
                    f"chat type {chat_type!r} is not a channel; only "
                    f"{', '.join(sorted(CHANNEL_TYPES))} exports are read",
                )
                return
            yield from self._read_chat(data, name, names, label_prefix="")
            return
        for section in ("chats", "left_chats"):
            block = data.get(section)
            chats = block.get("list") if isinstance(block, dict) else None
            if not isinstance(chats, list):
                continue
            for chat in chats:
                if not isinstance(chat, dict) or chat.get("type") not in CHANNEL_TYPES:
                    continue
                # Message ids repeat across chats, so records of a full export name their chat.
                prefix = f"chat {chat.get('id', '?')} "
                yield from self._read_chat(chat, name, names, label_prefix=prefix)

    def _read_chat(
        self, chat: dict[str, Any], name: str, names: ChannelNames, label_prefix: str
    ) -> Iterator[ReadItem]:
        messages = chat.get("messages")
        if not isinstance(messages, list):
            return
        chat_id = parse_channel_id(chat.get("id"))
        title = chat.get("name") if isinstance(chat.get("name"), str) else ""
        seen: dict[tuple[int, int], str] = {}
        for position, message in enumerate(messages, start=1):
            if not isinstance(message, dict):
                yield SkippedRecord(name, f"{label_prefix}item {position}", "not a JSON object")
                continue
            if message.get("type") == "service":
                continue
            message_id = parse_message_id(message.get("id"))
            if message_id is None:
                reason = "message has no id" if "id" not in message else (
                    f"bad message id {shown(message.get('id'))}"
                )
                yield SkippedRecord(name, f"{label_prefix}item {position}", reason)
                continue
            label = f"{label_prefix}message {message_id}"
            item = self._to_post(message, message_id, chat_id, title, names)
            if isinstance(item, str):
                yield SkippedRecord(name, label, item)
                continue
            key = (item.channel_id, item.message_id)
            if key in seen:
                yield SkippedRecord(
                    name, label, f"duplicate message id {message_id} ({seen[key]}); kept the first"
                )
                continue
            seen[key] = f"first at item {position}"
            yield item

    def _to_post(
        self,
        message: dict[str, Any],
        message_id: int,
        chat_id: int | None,
        title: str,
        names: ChannelNames,
    ) -> Post | str:
        """The post, or the reason it cannot be one."""
        # from_id "channel<id>" names the channel when the chat object has no usable id.
        channel_id = chat_id if chat_id is not None else parse_channel_id(message.get("from_id"))
        if channel_id is None:
            return "no channel id (neither the chat \"id\" nor a \"from_id\" like channel<id>)"
        try:
            date = _message_date(message, "date")
        except BadDate as error:
            return str(error)
        if date is None:
            return "message has no date (no \"date_unixtime\" or \"date\")"
        text, links = flatten_text(message.get("text"))
        if not text and message.get("text_entities"):
            text, links = flatten_text(message.get("text_entities"))
        problem = text_problem(text, self.max_post_chars)
        if problem is not None:
            return problem
        _, entity_links = flatten_text(message.get("text_entities"))
        add_links(links, entity_links)
        try:
            edited = _message_date(message, "edited")
        except BadDate:
            edited = None  # a broken edit time is not worth losing the post
        known = names.get(channel_id, {})
        forwarded = message.get("forwarded_from")
        return Post(
            channel_id=channel_id,
            message_id=message_id,
            date=date,
            text=text,
            channel=known.get("username", ""),
            channel_title=clean_str(title or known.get("title", "")),
            edited=edited,
            forwarded_from=clean_str(forwarded) if isinstance(forwarded, str) else None,
            reactions=parse_reactions(message.get("reactions")),
            links=[clean_str(link) for link in links],
        )


def _message_date(message: dict[str, Any], field: str) -> int | None:
    """``<field>_unixtime`` (UTC), else ``<field>``; None when neither is present."""
    unix = message.get(f"{field}_unixtime")
    if unix not in (None, ""):
        return parse_unix(unix)
    local = message.get(field)
    if local in (None, ""):
        return None
    if not isinstance(local, str):
        raise BadDate(f"bad {field} {shown(local)}: expected \"2024-01-02T03:04:05\"")
    # Old exports have only the local-time "date" and no zone: the exporter's zone is unknown, so it
    # is read as UTC (off by the exporter's UTC offset at most).
    try:
        moment = datetime.fromisoformat(local)
    except ValueError:
        raise BadDate(f"bad {field} {shown(local)}: expected \"2024-01-02T03:04:05\"") from None
    return parse_unix(moment_seconds(moment, local))
