"""Mentions in group chats: the account's own @username or user id, or chosen keywords.

A :class:`MentionRule` holds the account's usernames and user ids (the group sync records them
when it connects, ``ingest.telegram.state.AccountIdentity``) and keywords
(``TGRAG_MENTION_KEYWORDS`` or an alert's own words):

* a username matches ``@name`` anywhere, case-insensitively, but not inside a longer name;
* a user id matches a mention by link (Telegram's "text mention", which an account without a
  username gets), recorded per message in the window's metadata;
* a keyword matches by lemma + stem, exactly like the sparse index ("релиз" finds "релиза"); a
  phrase matches as consecutive words.

:class:`MentionMatcher` is the hook the alert checker calls once per committed document:
``matcher(doc_id, text, metadata) -> list[Mention]`` (:class:`MentionHook`).  Only group windows
can match (channel posts have no senders and are the saved searches' business); each message of
the window is matched on its own text, without the sender-name prefix, and the account's own
messages never mention it.  One :class:`Mention` per message and term.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from rag.sparse import shared_analyzer

MentionKind = Literal["username", "user_id", "keyword"]
_USERNAME = re.compile(r"(?<![\w@])@([A-Za-z][A-Za-z0-9_]{2,31})(?![\w])")


@dataclass(frozen=True, slots=True)
class MentionRule:
    """What counts as a mention; build one with :meth:`build`."""

    usernames: frozenset[str] = frozenset()  # lowercase, without "@"
    user_ids: frozenset[int] = frozenset()
    # (the keyword as given, its stems in order); stopword-only keywords are dropped by build
    phrases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def build(cls, usernames: Iterable[str] = (), user_ids: Iterable[int] = (),
              keywords: Iterable[str] = ()) -> MentionRule:
        names = frozenset(u.strip().removeprefix("@").lower() for u in usernames if u.strip())
        phrases: list[tuple[str, tuple[str, ...]]] = []
        for keyword in keywords:
            stems = tuple(shared_analyzer().tokens(keyword))
            if stems and all(p[1] != stems for p in phrases):
                phrases.append((keyword.strip(), stems))
        return cls(usernames=names, user_ids=frozenset(int(i) for i in user_ids),
                   phrases=tuple(phrases))

    def with_keywords(self, keywords: Iterable[str]) -> MentionRule:
        """This rule plus more keywords (e.g. an alert's words)."""
        merged = [k for k, _ in self.phrases] + list(keywords)
        return MentionRule.build(self.usernames, self.user_ids, merged)

    @property
    def empty(self) -> bool:
        return not (self.usernames or self.user_ids or self.phrases)


@dataclass(frozen=True, slots=True)
class Mention:
    """One message of a committed window that mentions ``term``; ``[start, end)`` is the match in
    the document's text (for a user-id mention: the whole message)."""

    doc_id: str
    message_id: int
    sender_id: int | None
    kind: MentionKind
    term: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_terms(rule: MentionRule, text: str) -> list[tuple[MentionKind, str, int, int]]:
    """``(kind, term, start, end)`` of every username and keyword of ``rule`` in ``text``."""
    found: list[tuple[MentionKind, str, int, int]] = []
    if rule.usernames:
        for match in _USERNAME.finditer(text):
            name = match.group(1).lower()
            if name in rule.usernames:
                found.append(("username", f"@{name}", match.start(), match.end()))
    if rule.phrases:
        spans = list(shared_analyzer().spans(text))
        stems = [s for _, _, s in spans]
        for keyword, phrase in rule.phrases:
            n = len(phrase)
            for i in range(len(stems) - n + 1):
                if tuple(stems[i:i + n]) == phrase:
                    found.append(("keyword", keyword, spans[i][0], spans[i + n - 1][1]))
    return sorted(found, key=lambda f: (f[2], f[3]))


class MentionHook(Protocol):
    """What the alert checker calls per committed document (see the module docstring)."""

    def __call__(self, doc_id: str, text: str,
                 metadata: Mapping[str, Any]) -> list[Mention]: ...


class MentionMatcher:
    """The :class:`MentionHook` of one rule."""

    def __init__(self, rule: MentionRule) -> None:
        self.rule = rule

    def with_keywords(self, keywords: Iterable[str]) -> MentionMatcher:
        """This matcher with more keywords (a mention alert's own); itself when there are none."""
        extra = list(keywords)
        return MentionMatcher(self.rule.with_keywords(extra)) if extra else self

    def __call__(self, doc_id: str, text: str, metadata: Mapping[str, Any]) -> list[Mention]:
        if self.rule.empty or metadata.get("chat_type") != "group":
            return []
        out: list[Mention] = []
        for part in _parts(metadata.get("window") or [], len(text)):
            sender = part.get("sender_id")
            if sender is not None and int(sender) in self.rule.user_ids:
                continue  # the account's own message
            start, end, message_id = int(part["start"]), int(part["end"]), int(part["id"])
            seen: set[str] = set()
            for uid in part.get("mentions") or []:
                if int(uid) in self.rule.user_ids and str(uid) not in seen:
                    seen.add(str(uid))
                    out.append(Mention(doc_id, message_id, sender, "user_id", str(uid), start,
                                       end))
            for kind, term, s, e in find_terms(self.rule, text[start:end]):
                if term not in seen:
                    seen.add(term)
                    out.append(Mention(doc_id, message_id, sender, kind, term, start + s,
                                       start + e))
        return out


def _parts(window: Sequence[Mapping[str, Any]], size: int) -> list[Mapping[str, Any]]:
    """The window's message parts whose spans fit the text (a damaged record matches nothing)."""
    return [p for p in window
            if {"id", "start", "end"} <= set(p) and 0 <= int(p["start"]) <= int(p["end"]) <= size]
