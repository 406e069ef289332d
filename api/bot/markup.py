"""Telegram HTML: escaping, and the one marker for text that is already HTML.

Telegram's HTML parse mode knows ``<b> <i> <u> <s> <code> <pre> <a href> <blockquote>`` and the
entities ``&lt; &gt; &amp; &quot;``.  Everything that comes from a post, a channel, a query or an
error goes through :func:`escape`; only strings built here from escaped parts are :class:`Html`,
and :func:`api.bot.texts.t` escapes every value that is not.
"""

from __future__ import annotations

import html as _html

from telethon.extensions import html as telegram_html
from telethon.helpers import add_surrogate

MAX_MESSAGE = 4096  # Telegram's limit on a message's text, in UTF-16 units after parsing


class Html(str):
    """A string that is already Telegram HTML (built from escaped parts)."""

    __slots__ = ()


def escape(text: object) -> Html:
    """``text`` shown as-is: ``<b>`` in a post stays the four characters ``<b>``."""
    return Html(_html.escape(str(text), quote=True))


def join(parts: list[Html], sep: str = "") -> Html:
    return Html(_html.escape(sep).join(parts))


def link(url: str, label: object) -> Html:
    return Html(f'<a href="{_html.escape(url, quote=True)}">{escape(label)}</a>')


def bold(text: object) -> Html:
    return Html(f"<b>{escape(text)}</b>")


def cut(text: str, limit: int) -> str:
    """The longest start of ``text`` within ``limit`` UTF-16 units (an emoji counts two)."""
    while len(add_surrogate(text)) > limit:
        over = len(add_surrogate(text)) - limit
        text = text[:len(text) - max(1, over // 2)]
    return text


def visible_length(text: Html) -> int:
    """The message's length as Telegram counts it: UTF-16 units of the text after parsing."""
    plain, _ = telegram_html.parse(text)
    return len(add_surrogate(plain))
