"""The data behind the bot's inline buttons (at most 64 bytes, sent back by the user's app).

Nothing is kept on the server for a button: a page or "similar" button names the user's own
message holding the query (its id in the private chat) and the offset, and the bot reads that
message again when the button is pressed.  So buttons keep working across restarts and on any
of several bot processes, and cost no memory; if the message was deleted, the bot says so.

Data comes from the user's app and is untrusted: it is parsed strictly, and everything it names is
looked up in the presser's own chat and tenant, so forged data reaches nothing more.

    p:<query message id>:<offset>                              a page of results
    s:<query message id>:<offset>:<channel id>:<message id>    posts similar to one post
    f:<username> | f:c<channel id>                             follow a channel (admins)
    u:<alert id>                                               remove one of the presser's alerts
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.search import MAX_OFFSET

MAX_DATA = 64
_PAGE = re.compile(rb"^p:(\d{1,12}):(\d{1,4})$")
_SIMILAR = re.compile(rb"^s:(\d{1,12}):(\d{1,4}):(\d{1,16}):(\d{1,12})$")
_FOLLOW = re.compile(rb"^f:([A-Za-z][A-Za-z0-9_]{2,31}|c\d{1,16})$")
_UNALERT = re.compile(rb"^u:([0-9a-f]{12})$")


@dataclass(frozen=True, slots=True)
class PageAction:
    query_message: int
    offset: int


@dataclass(frozen=True, slots=True)
class SimilarAction:
    query_message: int
    offset: int  # the results page to go back to
    channel_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class FollowAction:
    ref: str  # a username, or "c<channel id>"


@dataclass(frozen=True, slots=True)
class UnalertAction:
    alert_id: str  # removed only if it is the presser's own (their tenant and chat)


Action = PageAction | SimilarAction | FollowAction | UnalertAction


def page_data(query_message: int, offset: int) -> bytes:
    return f"p:{query_message}:{offset}".encode()


def similar_data(query_message: int, offset: int, channel_id: int, message_id: int) -> bytes:
    return f"s:{query_message}:{offset}:{channel_id}:{message_id}".encode()


def follow_data(username: str, channel_id: int) -> bytes:
    return f"f:{username}".encode() if username else f"f:c{channel_id}".encode()


def unalert_data(alert_id: str) -> bytes:
    return f"u:{alert_id}".encode()


def parse_action(data: bytes | None) -> Action | None:
    """The button's action; None for anything this bot does not (or no longer) make."""
    if not data or len(data) > MAX_DATA:
        return None
    if (m := _PAGE.match(data)) is not None:
        offset = int(m.group(2))
        return PageAction(int(m.group(1)), offset) if offset <= MAX_OFFSET else None
    if (m := _SIMILAR.match(data)) is not None:
        offset, mid = int(m.group(2)), int(m.group(4))
        if offset > MAX_OFFSET or mid < 1:
            return None
        return SimilarAction(int(m.group(1)), offset, int(m.group(3)), mid)
    if (m := _FOLLOW.match(data)) is not None:
        return FollowAction(m.group(1).decode())
    if (m := _UNALERT.match(data)) is not None:
        return UnalertAction(m.group(1).decode())
    return None
