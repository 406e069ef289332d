"""Shared plumbing of the file readers: decoding, JSON parsing, and the per-record checks.

Both readers (Desktop exports and JSON dumps) decode files the same way, report malformed JSON the
same way, and refuse the same bad records with the same reasons, so those live here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.ids import normalize_channel_id

NO_TEXT = "no text (media-only or empty post)"
INVALID_BYTES = "invalid UTF-8 bytes in text"
LONE_SURROGATES = "text contains unpaired UTF-16 surrogates (broken \\ud800-\\udfff escapes)"

# Invalid bytes are decoded with ``surrogateescape``: each becomes one of U+DC80..U+DCFF, so a
# record can tell *its own* text was damaged (a U+FFFD the author typed is not mistaken for one).
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class SourceText:
    """A file's content decoded as UTF-8 (BOM removed); invalid bytes kept as escaped surrogates."""

    path: Path
    text: str
    has_invalid_bytes: bool


def read_source(path: Path) -> SourceText:
    """Read and decode a file; never fails on bad bytes (see ``_SURROGATES``)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
        invalid = False
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        invalid = True
    return SourceText(path=path, text=text.removeprefix("\ufeff"), has_invalid_bytes=invalid)


def json_error_reason(error: json.JSONDecodeError) -> str:
    """``malformed JSON: <what> at line L, column C`` — the parser's own position."""
    return f"malformed JSON: {error.msg} at line {error.lineno}, column {error.colno}"


def clean_str(value: str) -> str:
    """A metadata string with undecodable bytes shown as U+FFFD (only post texts are refused)."""
    return _SURROGATES.sub("\ufffd", value)


def text_problem(text: str, max_chars: int) -> str | None:
    """Why a post's text cannot be ingested, or None when it is fine."""
    if not text.strip():
        return NO_TEXT
    damaged = _SURROGATES.search(text)
    if damaged is not None:
        # surrogateescape maps bytes 0x80..0xFF to U+DC80..U+DCFF; other surrogates came from
        # "\udXXX" escapes in the JSON itself.
        return INVALID_BYTES if "\udc80" <= damaged.group() <= "\udcff" else LONE_SURROGATES
    if len(text) > max_chars:
        return (
            f"post is {len(text)} characters, over the limit of {max_chars} "
            "(TGRAG_MAX_POST_CHARS)"
        )
    return None


def parse_message_id(value: Any) -> int | None:
    """A positive message id from an int or a string of digits; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def parse_channel_id(value: Any) -> int | None:
    """A bare channel id from ``-100…`` / ``channel…`` / bare forms; None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, dict):
        # Telethon's ``to_dict()`` writes peers as {"_": "PeerChannel", "channel_id": N}.
        value = value.get("channel_id")
        if value is None:
            return None
    try:
        channel_id = normalize_channel_id(value)
    except (TypeError, ValueError):
        return None
    return channel_id or None


class BadDate(ValueError):
    """A date field that is neither unix seconds nor ISO 8601."""


def parse_unix(value: Any) -> int:
    """Unix seconds from an int/float or a numeric string (Desktop's ``date_unixtime``)."""
    if isinstance(value, bool):
        raise BadDate(f"bad date {value!r}: expected unix seconds")
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        seconds = int(float(value))
    else:
        raise BadDate(f"bad date {value!r}: expected unix seconds")
    if seconds <= 0:
        raise BadDate(f"bad date {value!r}: not a positive unix time")
    return seconds


def parse_date(value: Any) -> int:
    """Unix seconds from unix seconds or an ISO 8601 string; a naive ISO time is taken as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_unix(value)
    if not isinstance(value, str):
        raise BadDate(f"bad date {value!r}: expected an ISO 8601 string or unix seconds")
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return parse_unix(text)
    try:
        # Python 3.11 reads "Z", offsets and the "2024-01-02 03:04:05+00:00" form of str(datetime).
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadDate(
            f"bad date {value!r}: expected an ISO 8601 string or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return parse_unix(int(moment.timestamp()))


def optional_int(value: Any) -> int | None:
    """An engagement counter or group id, or None when absent or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def add_links(links: list[str], candidates: list[str]) -> None:
    """Append link targets in order, skipping blanks and ones already present."""
    for link in candidates:
        link = link.strip()
        if link and link not in links:
            links.append(link)
