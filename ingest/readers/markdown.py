"""Telegram (Telethon) markdown → plain text plus the link targets it carried.

Telethon's ``message.text`` renders entities as ``**bold**``, ``__italic__``, ``~~strike~~``,
```` `code` ````, ```` ```pre``` ```` and ``[text](url)``; JSON dumps made with it store that form.
Search and embeddings want the plain text, and the targets of ``[text](url)`` would otherwise be
lost, so they are returned as links together with the bare URLs of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ingest.readers.source import add_links

# Code first: its content is literal (``**kwargs`` inside code is not bold).
_CODE = re.compile(r"```(.*?)```|`([^`\n]+)`", re.S)
# [text](url): the text may hold one level of brackets ("[Lead [SRE]](…)", seen in real dumps) and
# the url one level of parentheses (Wikipedia-style "…/Foo_(bar)").
_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(((?:[^()\s]|\([^()\s]*\))+)\)")
# Bare URLs; "*" and "~" are left out so a URL wrapped in markup does not swallow the delimiters.
_URL = re.compile(r"https?://[^\s<>\"'«»*~\[\]()]+")
_URL_TRAILING = ".,;:!?'\"»)_"
_DELIMITERS = ("**", "__", "~~")
# Targets that are not web links: Telethon writes user mentions and custom emoji as [text](target).
_NOT_LINKS = ("tg://user", "emoji/")
# Protected spans are swapped for private-use placeholders while delimiters are removed.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def strip_markdown(text: str) -> tuple[str, list[str]]:
    """Plain text of Telethon markdown, and the link targets (``[text](url)`` and bare URLs)."""
    spans: list[str] = []
    links: list[str] = []

    def protect(value: str) -> str:
        spans.append(value)
        return f"\ue000{len(spans) - 1}\ue001"

    text = _CODE.sub(lambda m: protect(m.group(1) if m.group(1) is not None else m.group(2)), text)

    def link(match: re.Match[str]) -> str:
        target = match.group(2)
        if not target.startswith(_NOT_LINKS):
            add_links(links, [target])
        return protect(_strip_delimiters(match.group(1)))

    text = _LINK.sub(link, text)
    text = _URL.sub(lambda m: _protect_url(m.group(0), protect, links), text)
    text = _strip_delimiters(text)
    # Placeholders nest (a link's text may hold code), so restore until none is left.
    while _PLACEHOLDER.search(text):
        text = _PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], text)
    return text, links


def find_urls(text: str) -> list[str]:
    """The bare http(s) URLs of a plain text, in order, without duplicates."""
    links: list[str] = []
    for match in _URL.finditer(text):
        add_links(links, [match.group(0).rstrip(_URL_TRAILING)])
    return links


def _protect_url(url: str, protect: Callable[[str], str], links: list[str]) -> str:
    bare = url.rstrip(_URL_TRAILING)
    add_links(links, [bare])
    return protect(bare) + url[len(bare):]


def _strip_delimiters(text: str) -> str:
    for delimiter in _DELIMITERS:
        if delimiter not in text:
            continue
        escaped = re.escape(delimiter)
        literal = re.compile(rf"(?<=\w){escaped}(?=\w)")
        kept: list[str] = []
        if text.count(delimiter) % 2:
            # An odd count means one is not markup: a word-internal one, like a censored "е**л",
            # is text the author typed.
            match = literal.search(text)
            if match is not None:
                kept.append(delimiter)
                text = f"{text[:match.start()]}\ue002{text[match.end():]}"
        text = re.sub(rf"{escaped}(.+?){escaped}", r"\1", text, flags=re.S)
        if delimiter == "**":
            # A stray bold marker left unpaired (e.g. a truncated post) is still markup.
            text = text.replace("**", "")
        for value in kept:
            text = text.replace("\ue002", value, 1)
    return text
