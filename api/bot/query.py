"""What a user typed → a command, a query and its inline filters.

Filters are written inside the message, like a search engine's operators:
``@channel`` (a username; repeatable: any of them), ``#tag`` (any of them),
``since:2024-06-01`` and ``until:2024-06-30`` (a day, an ISO time or unix seconds; ``until`` a day
includes that whole day).  Everything else is the query.  A message with tags but no other words
searches for the tags' words (``#ключевая_ставка`` → "ключевая ставка" among posts tagged so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.errors import InputError
from rag.search import parse_date
from rag.tags import normalize_tag

CHANNEL = re.compile(r"^@([A-Za-z][A-Za-z0-9_]{2,31})$")
TAG = re.compile(r"^#(\w[\w-]*)$")
COMMAND = re.compile(r"^/([A-Za-z_]+)(?:@\w+)?(?:\s+|$)(.*)$", re.S)
DATE_KEYS = ("since:", "until:")


@dataclass(frozen=True, slots=True)
class QueryFilters:
    """Filters as the user named them (channels unresolved: the tenant's catalog resolves them)."""

    channels: tuple[str, ...] = ()  # usernames, without the @
    tags: tuple[str, ...] = ()  # normalized (rag.tags)
    since: int | None = None  # unix seconds, inclusive
    until: int | None = None  # unix seconds, inclusive

    @property
    def empty(self) -> bool:
        return not (self.channels or self.tags or self.since is not None
                    or self.until is not None)


@dataclass(frozen=True, slots=True)
class BotQuery:
    text: str
    filters: QueryFilters = field(default_factory=QueryFilters)


def split_command(text: str) -> tuple[str | None, str]:
    """``/search@my_bot курс`` → ``("search", "курс")``; plain text → ``(None, text)``."""
    match = COMMAND.match(text.strip())
    if match is None:
        return None, text.strip()
    return match.group(1).lower(), match.group(2).strip()


def is_question(text: str) -> bool:
    return text.rstrip().endswith(("?", "？"))


def parse_query(text: str) -> BotQuery:
    """Split the filters out of ``text``; a malformed date is an :class:`InputError`."""
    words: list[str] = []
    channels: list[str] = []
    tags: list[str] = []
    since = until = None
    for token in text.split():
        lowered = token.lower()
        if (match := CHANNEL.match(token)) is not None:
            channels.append(match.group(1).lower())
        elif (match := TAG.match(token)) is not None:
            tags.append(normalize_tag(match.group(1)))
        elif lowered.startswith(DATE_KEYS):
            key, _, value = token.partition(":")
            if not value:
                raise InputError(f"{key}: needs a date", hint="e.g. since:2024-06-01")
            if key.lower() == "since":
                since = parse_date(value)
            else:
                until = parse_date(value, end_of_day=True)
        else:
            words.append(token)
    if since is not None and until is not None and since > until:
        raise InputError("since: is after until:", hint="swap the dates")
    query = " ".join(words)
    if not query and tags:
        query = " ".join(t.replace("_", " ") for t in tags)
    return BotQuery(query, QueryFilters(tuple(dict.fromkeys(channels)),
                                        tuple(dict.fromkeys(tags)), since, until))


# /alert's rule prefixes (``/alert words: …``), in English and Russian; no prefix = semantic.
ALERT_RULES = {"words:": "words", "слова:": "words", "mention:": "mention",
               "упоминания:": "mention", "упоминание:": "mention"}


def parse_alert(text: str) -> tuple[str, BotQuery]:
    """``/alert``'s rule and query: ``words: ставки @banki`` → ``("words", …)``; ``mention:``
    (or ``mention`` alone) → the mention rule, whose words are extra keywords; else semantic."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("mention", "упоминания"):
        return "mention", BotQuery("")
    for prefix, rule in ALERT_RULES.items():
        if lowered.startswith(prefix):
            return rule, parse_query(stripped[len(prefix):])
    return "semantic", parse_query(stripped)
