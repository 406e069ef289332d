"""Alerts as the bot shows them: a notification (one post that matched a saved alert) and the
user's list of alerts, as Telegram HTML under 4,096 characters (every value escaped, like
:mod:`api.bot.formatting`, whose post block a notification reuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from api.bot.backend import AlertRow
from api.bot.formatting import day, fits, hit_block, split_blocks
from api.bot.markup import Html, escape, join
from api.bot.texts import Lang, t
from rag.search import PostHit

MAX_QUERY_SHOWN = 200  # characters of an alert's query in a notification's header
MAX_BUTTONS = 50  # remove buttons under one message (Telegram allows 100 buttons)


def describe(rule: str, query: str, lang: Lang) -> Html:
    """``«ключевая ставка», по смыслу`` / ``упоминания аккаунта и «релиз» в группах``."""
    shown = query if len(query) <= MAX_QUERY_SHOWN else query[:MAX_QUERY_SHOWN] + "…"
    if rule == "mention":
        return t(lang, "alert_mention_words", query=shown) if query else t(lang, "alert_mention")
    return t(lang, "alert_words" if rule == "words" else "alert_semantic", query=shown)


def describe_row(row: AlertRow, lang: Lang) -> Html:
    """The alert with its filters: ``«…», по смыслу · @banki · #ипотека · с 01.06.2024``."""
    parts = [describe(row.rule, row.query, lang)]
    parts += [escape(c) for c in row.channels] + [escape(f"#{tag}") for tag in row.tags]
    if row.since is not None:
        parts.append(t(lang, "alert_since", day=day(row.since, lang)))
    if row.until is not None:
        parts.append(t(lang, "alert_until", day=day(row.until, lang)))
    return join(parts, " · ")


def notification_messages(rule: str, query: str, hit: dict[str, Any], lang: Lang) -> list[Html]:
    """A notification: which alert, then the post as in search results (title, date, the
    snippet with the matched words in bold, its link, "также в: …" for its copies)."""
    header = t(lang, "alert_notice", what=describe(rule, query, lang))
    return split_blocks([join([header, hit_block(PostHit.from_dict(hit), lang)], "\n")])


def alerts_messages(rows: Sequence[AlertRow], lang: Lang) -> list[tuple[Html, list[AlertRow]]]:
    """The user's alerts, numbered, each with its ``/unalert`` command: messages, each with the
    alerts it lists (for their remove buttons)."""
    if not rows:
        return [(t(lang, "no_alerts"), [])]
    header = t(lang, "alerts_header", n=len(rows))
    lines = [Html(f"{n}. {describe_row(row, lang)} — <code>/unalert {escape(row.id)}</code>")
             for n, row in enumerate(rows, 1)]
    out: list[tuple[Html, list[AlertRow]]] = []
    current: list[Html] = [header]
    shown: list[AlertRow] = []
    for line, row in zip(lines, rows, strict=True):
        candidate = join([*current, line], "\n")
        if len(shown) == MAX_BUTTONS or not fits(candidate):
            out.append((join(current, "\n"), shown))
            current, shown = [], []
        current.append(line)
        shown.append(row)
    out.append((join(current, "\n"), shown))
    return out

