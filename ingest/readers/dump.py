"""JSON and JSONL dumps of posts (Telethon scripts, scrapers, data sets)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.documents import Post
from ingest.readers.base import PostReader, ReadItem, SkippedRecord
from ingest.readers.export import flatten_text, parse_reactions
from ingest.readers.markdown import find_urls, strip_markdown
from ingest.readers.source import (
    MAX_INT,
    BadDate,
    SourceText,
    add_links,
    clean_str,
    json_error_reason,
    optional_count,
    optional_int,
    parse_channel_id,
    parse_date,
    parse_message_id,
    read_source,
    shown,
    text_problem,
)

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
ID_KEYS = ("message_id", "id")
CHANNEL_ID_KEYS = ("channel_id", "sender_id", "peer_id")
# Data sets name files after the channel: "1001000724666_messages.json" → channel 1000724666.
_FILE_CHANNEL_ID = re.compile(r"^(-?\d+)_messages\.(json|jsonl|ndjson)$", re.I)
# "text" is Telethon's markdown rendering; "message" is Telethon's raw text (no markup).
TEXT_KEYS = ("text", "message")
EXPECTED = (
    "expected a JSON array of post objects, an object with \"messages\": [...], "
    "or JSONL (one post object per line)"
)


def looks_like_post(value: Any) -> bool:
    """Whether a JSON value is a post object of a dump (it has a text field and an id)."""
    return isinstance(value, dict) and any(k in value for k in TEXT_KEYS) and any(
        k in value for k in ID_KEYS
    )


def dump_records(data: Any) -> list[Any] | str:
    """The list of post records of a parsed JSON dump, or why the JSON is not a dump."""
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        records: list[Any] = data["messages"]
    elif isinstance(data, list):
        records = data
    elif looks_like_post(data):
        return [data]  # a file holding one post
    elif isinstance(data, dict):
        keys = ", ".join(sorted(map(str, data))[:8])
        return f"a JSON object without \"messages\" (keys: {keys})"
    else:
        return f"the top-level JSON value is {type(data).__name__}, not an array or object"
    if records and not any(looks_like_post(item) for item in records[:50]):
        return "its items are not post objects (no \"text\"/\"message\" with \"message_id\"/\"id\")"
    return records


def looks_like_jsonl(text: str, lines: int = 20) -> bool:
    """Whether one of the first ``lines`` non-empty lines is a complete JSON object on its own."""
    checked = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            if isinstance(json.loads(line), dict):
                return True
        except json.JSONDecodeError:
            pass
        checked += 1
        if checked >= lines:
            break
    return False


def channel_id_from_file_name(path: Path) -> int | None:
    """The channel id encoded in a ``<channel_id>_messages.json`` file name, if any."""
    match = _FILE_CHANNEL_ID.match(path.name)
    return parse_channel_id(match.group(1)) if match else None


class DumpReader(PostReader):
    """Reads a JSON array of posts, an object with ``"messages": [...]``, or JSONL.

    Fields per post (others ignored): ``message_id`` or ``id``; ``text`` (Telethon markdown —
    ``**bold**``, ``__italic__``, ``[text](url)`` — stripped to plain text, link targets and
    bare URLs kept as ``links``; a Desktop-style entity list is flattened) or ``message`` (raw);
    ``date`` (ISO 8601, naive means UTC, or unix seconds); ``channel`` (a title, or ``@username``),
    ``channel_username``, ``channel_title``; the channel id from ``channel_id``, ``sender_id`` or
    ``peer_id`` (``-100…`` or bare), else from a ``<channel_id>_messages.json`` file name;
    optional ``views``, ``forwards``, ``reactions``, ``edited``/``edit_date``, ``forwarded_from``,
    ``grouped_id``.

    Records are named ``message <id>`` (``item <n>`` when the id is missing) in JSON files and
    ``line <n>`` in JSONL, where a malformed line is skipped and the other lines still read.
    """

    def __init__(
        self,
        path: str | Path,
        max_post_chars: int = 65536,
        *,
        source: SourceText | None = None,
        data: Any = None,
        jsonl: bool | None = None,
    ) -> None:
        """``source``/``data``/``jsonl``: what ``open_reader`` already decoded, parsed and
        detected, so a file is parsed once; by default the reader works them out itself."""
        super().__init__(path, max_post_chars)
        self._source = source
        self._data = data
        self._jsonl = jsonl
        self._fallback_channel_id: int | None = None
        self._seen: dict[tuple[int, int], str] = {}  # (channel, message) → where it was first

    def iter_posts(self) -> Iterator[ReadItem]:
        name = str(self.path)
        source = self._source or read_source(self.path)
        self._fallback_channel_id = channel_id_from_file_name(self.path)
        self._seen = {}
        jsonl = self._jsonl
        if jsonl is None:
            jsonl = self.path.suffix.lower() in JSONL_SUFFIXES
        data = self._data
        if not jsonl and data is None:
            try:
                data = json.loads(source.text)
            except json.JSONDecodeError as error:
                if not looks_like_jsonl(source.text):
                    yield SkippedRecord(name, "file", json_error_reason(error))
                    return
                jsonl = True
        if jsonl:
            yield from self._read_lines(source.text, name)
            return
        records = dump_records(data)
        if isinstance(records, str):
            yield SkippedRecord(name, "file", f"not a JSON dump of posts: {records}; {EXPECTED}")
            return
        for position, record in enumerate(records, start=1):
            yield from self._read_record(record, name, f"item {position}", by_id=True)

    def _read_lines(self, text: str, name: str) -> Iterator[ReadItem]:
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which is not a newline.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield SkippedRecord(name, f"line {number}", json_error_reason(error, line=False))
                continue
            yield from self._read_record(record, name, f"line {number}", by_id=False)

    def _read_record(
        self, record: Any, name: str, position: str, *, by_id: bool
    ) -> Iterator[ReadItem]:
        if not isinstance(record, dict):
            yield SkippedRecord(name, position, f"not a JSON object but {type(record).__name__}")
            return
        raw_id = next((record[k] for k in ID_KEYS if k in record), None)
        message_id = parse_message_id(raw_id)
        if message_id is None:
            reason = (
                "no message id (expected \"message_id\" or \"id\")" if raw_id is None
                else f"bad message id {shown(raw_id)}"
            )
            yield SkippedRecord(name, position, reason)
            return
        label = f"message {message_id}" if by_id else f"{position} (message {message_id})"
        item = self._to_post(record, message_id)
        if isinstance(item, str):
            yield SkippedRecord(name, label, item)
            return
        key = (item.channel_id, item.message_id)
        if key in self._seen:
            first = self._seen[key]
            yield SkippedRecord(
                name, label, f"duplicate message id {message_id} ({first}); kept the first"
            )
            return
        self._seen[key] = f"first at {position}"
        yield item

    def _to_post(self, record: dict[str, Any], message_id: int) -> Post | str:
        """The post, or the reason it cannot be one."""
        channel_id = self._channel_id(record)
        if isinstance(channel_id, str):
            return channel_id
        if record.get("date") in (None, ""):
            return "no date (expected \"date\": ISO 8601 or unix seconds)"
        try:
            date = parse_date(record["date"])
        except BadDate as error:
            return str(error)
        text = _text_and_links(record)
        if isinstance(text, str):
            return text
        body, links = text
        problem = text_problem(body, self.max_post_chars)
        if problem is not None:
            return problem
        username, title = _channel_names(record)
        try:
            edited_raw = record.get("edited", record.get("edit_date"))
            edited = parse_date(edited_raw) if edited_raw not in (None, "") else None
        except BadDate:
            edited = None  # a broken edit time is not worth losing the post
        return Post(
            channel_id=channel_id,
            message_id=message_id,
            date=date,
            text=body,
            channel=username,
            channel_title=title,
            edited=edited,
            forwarded_from=_forwarded_from(record.get("forwarded_from", record.get("fwd_from"))),
            grouped_id=optional_int(record.get("grouped_id")),
            views=optional_int(record.get("views")),
            forwards=optional_int(record.get("forwards")),
            reactions=_reactions(record.get("reactions")),
            links=[clean_str(link) for link in links],
        )

    def _channel_id(self, record: dict[str, Any]) -> int | str:
        """The channel id, or the reason there is none."""
        for key in CHANNEL_ID_KEYS:
            if record.get(key) is not None:
                channel_id = parse_channel_id(record[key])
                if channel_id is None:
                    return f"bad channel id {shown(record[key])} in \"{key}\""
                return channel_id
        if self._fallback_channel_id is not None:
            return self._fallback_channel_id
        return (
            "no channel id (expected \"channel_id\", \"sender_id\" or \"peer_id\", "
            "or a file named <channel_id>_messages.json)"
        )


def _text_and_links(record: dict[str, Any]) -> tuple[str, list[str]] | str:
    """Plain text and link targets of a record, or why its text is unusable."""
    if isinstance(record.get("text"), str):
        return strip_markdown(record["text"])
    if isinstance(record.get("text"), list):
        text, links = flatten_text(record["text"])
        add_links(links, find_urls(text))
        return text, links
    if isinstance(record.get("message"), str):
        return record["message"], find_urls(record["message"])
    value = record.get("text", record.get("message"))
    if value is None:
        return "", []  # reported as a media-only or empty post
    return f"bad text: expected a string, got {type(value).__name__}"


def _channel_names(record: dict[str, Any]) -> tuple[str, str]:
    """(username without "@", title): ``channel`` is a title unless it starts with "@"."""
    channel = record.get("channel")
    channel = clean_str(channel.strip()) if isinstance(channel, str) else ""
    username = record.get("channel_username")
    title = record.get("channel_title")
    username = clean_str(username).lstrip("@") if isinstance(username, str) else ""
    title = clean_str(title) if isinstance(title, str) else ""
    if channel.startswith("@"):
        username = username or channel[1:]
    else:
        title = title or channel
    return username, title


def _forwarded_from(value: Any) -> str | None:
    """A forward's source name; Telethon's ``fwd_from`` dict gives ``from_name`` or the peer."""
    if isinstance(value, str):
        return clean_str(value) or None
    if isinstance(value, dict):
        if isinstance(value.get("from_name"), str):
            return clean_str(value["from_name"])
        peer = parse_channel_id(value.get("from_id"))
        return f"channel {peer}" if peer is not None else None
    return None


def _reactions(value: Any) -> dict[str, int]:
    """``{"👍": 3}``, a Desktop-style list, or Telethon's ``{"results": [...]}`` → ``{"👍": 3}``."""
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        reactions: dict[str, int] = {}
        for item in value["results"]:
            reaction = item.get("reaction") if isinstance(item, dict) else None
            count = optional_count(item.get("count")) if isinstance(item, dict) else None
            if not isinstance(reaction, dict) or count is None:
                continue
            key = reaction.get("emoticon") or f"custom:{reaction.get('document_id', '')}"
            reactions[key] = min(reactions.get(key, 0) + count, MAX_INT)
        return reactions
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if optional_count(v) is not None}
    return parse_reactions(value)
