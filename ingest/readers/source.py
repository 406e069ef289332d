"""Shared plumbing of the file readers: decoding, JSON parsing, and the per-record checks.

Both readers (Desktop exports and JSON dumps) decode files the same way, report malformed JSON the
same way, and refuse the same bad records with the same reasons, so those live here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.ids import normalize_channel_id

NO_TEXT = "no text (media-only or empty post)"
# The largest id or counter Qdrant's integer payloads and Redis scores hold exactly (int64); a
# larger one used to be read and fail later, in the pipeline, taking the whole file with it.
MAX_INT = 2**63 - 1
# 9999-12-31T23:59:59Z: a later time has no ISO form (``date_iso``), so it failed the whole batch.
MAX_UNIX = 253402300799
# A value quoted in a reason is cut here: a reason is one line, whatever the file holds.
MAX_SHOWN_CHARS = 40
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
    return decode_source(path, path.read_bytes())


def decode_source(path: Path, data: bytes) -> SourceText:
    """Decode a file's bytes (read from disk or from a zip) as :func:`read_source` does."""
    try:
        text = data.decode("utf-8")
        invalid = False
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        invalid = True
    return SourceText(path=path, text=text.removeprefix("\ufeff"), has_invalid_bytes=invalid)


def json_error_reason(error: json.JSONDecodeError, *, line: bool = True) -> str:
    """``malformed JSON: <what> at line L, column C`` — the parser's own position (the column only
    for one JSONL line)."""
    where = f"line {error.lineno}, column {error.colno}" if line else f"column {error.colno}"
    # Some parser messages end in "at" already ("Unterminated string starting at").
    joint = " " if error.msg.endswith(" at") else " at "
    return f"malformed JSON: {error.msg}{joint}{where}"


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN_CHARS` characters for a reason."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


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
    """A message id in ``1..MAX_INT`` from an int or a string of digits; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,19}\s*", value):
        value = int(value)
    if isinstance(value, int):
        return value if 0 < value <= MAX_INT else None
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
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return None  # no id is that long; int() of thousands of digits is slow, then refused
    try:
        channel_id = normalize_channel_id(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return channel_id if 0 < channel_id <= MAX_INT else None


class BadDate(ValueError):
    """A date field that is neither unix seconds nor ISO 8601."""


def parse_unix(value: Any) -> int:
    """Unix seconds in ``1..MAX_UNIX`` from an int/float or a numeric string (Desktop's
    ``date_unixtime``); :class:`BadDate` for anything else, never another error."""
    if isinstance(value, bool):
        raise BadDate(f"bad date {shown(value)}: expected unix seconds")
    if isinstance(value, float) and not math.isfinite(value):
        # JSON parsers accept Infinity and NaN; int() of them raises OverflowError/ValueError.
        raise BadDate(f"bad date {shown(value)}: not a finite number")
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*", value):
        whole = value.strip().split(".")[0].lstrip("0")
        # Past 12 digits it is beyond MAX_UNIX anyway; int() of thousands is slow, then refused.
        seconds = int(whole or "0") if len(whole) <= 12 else MAX_UNIX + 1
    else:
        raise BadDate(f"bad date {shown(value)}: expected unix seconds")
    if seconds <= 0:
        raise BadDate(f"bad date {shown(value)}: not a positive unix time")
    if seconds > MAX_UNIX:
        raise BadDate(f"bad date {shown(value)}: after 9999-12-31, not a real time")
    return seconds


def parse_date(value: Any) -> int:
    """Unix seconds from unix seconds or an ISO 8601 string; a naive ISO time is taken as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_unix(value)
    if not isinstance(value, str):
        raise BadDate(f"bad date {shown(value)}: expected an ISO 8601 string or unix seconds")
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return parse_unix(text)
    try:
        # Python 3.11 reads "Z", offsets and the "2024-01-02 03:04:05+00:00" form of str(datetime).
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadDate(
            f"bad date {shown(value)}: expected an ISO 8601 string or unix seconds"
        ) from None
    return parse_unix(moment_seconds(moment, value))


def moment_seconds(moment: datetime, value: Any) -> int:
    """Unix seconds of a parsed time (naive = UTC); :class:`BadDate` when it has none (an offset
    can push year 1 or year 9999 out of the range a timestamp exists for)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp())
    except (OverflowError, ValueError, OSError):
        raise BadDate(f"bad date {shown(value)}: out of range") from None


def optional_int(value: Any) -> int | None:
    """An engagement counter or group id, or None when absent, not a number, or beyond int64
    (what Qdrant and Redis hold)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value):
        value = int(value)
    if isinstance(value, int):
        return value if -MAX_INT <= value <= MAX_INT else None
    return None


def optional_count(value: Any) -> int | None:
    """A reaction count: an int in ``0..MAX_INT``, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_INT else None


def add_links(links: list[str], candidates: list[str]) -> None:
    """Append link targets in order, skipping blanks and ones already present."""
    for link in candidates:
        link = link.strip()
        if link and link not in links:
            links.append(link)
