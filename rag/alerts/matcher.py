"""Does a committed post match an alert?  One check for the dispatcher and ``alerts test``.

:meth:`AlertMatcher.score` takes the ids of committed posts and returns those that pass the
alert's filters, each with its rule score and verdict (``rag.alerts.model`` defines the rules).
The filters are applied by the store itself (tenant, channels, tags, dates, and the ids), the
semantic score comes from the one retrieval path (``HybridRetriever.dense``: the query embedding,
cached per process, against each post's best chunk), and the words rule reads the committed text
from the docstore.  The dispatcher calls it with the posts of an ingest batch; ``alerts test``
with the candidates a search over the recent posts retrieves, so a rule is tuned on exactly the
check that will run.

Nothing here is specific to channel posts: a check sees a committed document's id, its stored
payload (:attr:`Scored.payload`) and its text.  Group-chat windows (``chat_type="group"`` in their
docstore metadata, with ``window``: each message's id, sender and span) are recorded by the same
pipeline hook into the same outbox and checked here like posts; the ``mention`` rule hands each of
them to a :class:`rag.mentions.MentionMatcher` (``matcher(doc_id, text, metadata)``), built once
per pass by the caller (it reads the account's identity from Redis) and given the alert's own
keywords here; a non-empty list of mentions is a match, whose hit links to the first mentioning
message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rag.alerts.model import Alert, iso
from rag.alerts.words import WordsRule
from rag.errors import InputError
from rag.hybrid import HybridRetriever
from rag.ids import post_link
from rag.index import Index
from rag.mentions import Mention, MentionMatcher
from rag.search import MAX_FETCH, PostHit, collapse_copies
from rag.snippets import ELLIPSIS, SNIPPET_CHARS, snippet_with_highlights
from rag.sparse import shared_analyzer
from rag.store import DOC_ID_KEY, StoredChunk, StoreFilter

WORDS_SCORE = 1.0  # a words match has no degree: every word is there or it is not a match
NEAR = 0.03  # alerts test: semantic posts this far below the threshold are shown as near misses


@dataclass(slots=True)
class Scored:
    """A post an alert looked at: its score under the rule and whether it matches."""

    doc_id: str
    score: float
    matched: bool
    hit: PostHit  # snippet around the query's words in the whole post; ``hit.text`` = the post
    payload: dict[str, Any] = field(default_factory=dict)  # the post's stored metadata

    @property
    def text(self) -> str:
        return self.hit.text


class PostTexts:
    """The committed texts, stems and metadata of the posts one pass looks at, read once for all
    alerts."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._text: dict[str, str | None] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._stems: dict[str, list[str]] = {}

    def _read(self, doc_id: str) -> None:
        doc = self.index.docstore.get_document(doc_id, raise_error=False)
        self._text[doc_id] = doc.get_content() if doc is not None else None
        self._meta[doc_id] = dict(doc.metadata) if doc is not None else {}

    def text(self, doc_id: str) -> str | None:
        if doc_id not in self._text:
            self._read(doc_id)
        return self._text[doc_id]

    def metadata(self, doc_id: str) -> dict[str, Any]:
        """The committed document's metadata (a group window's ``chat_type`` and ``window``)."""
        if doc_id not in self._meta:
            self._read(doc_id)
        return self._meta[doc_id]

    def stems(self, doc_id: str) -> list[str]:
        if doc_id not in self._stems:
            self._stems[doc_id] = shared_analyzer().tokens(self.text(doc_id) or "")
        return self._stems[doc_id]


class AlertMatcher:
    """Checks posts of an index (any tenant: each alert's filter carries its own) against alerts."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.retriever = HybridRetriever(index.store, index.embedding.embed_query)

    def score(self, alert: Alert, doc_ids: Iterable[str], texts: PostTexts | None = None,
              mentions: MentionMatcher | None = None) -> list[Scored]:
        """The posts among ``doc_ids`` that pass the alert's filters, best first, each with its
        score and verdict.  Posts no longer committed (deleted meanwhile) are left out.

        ``mentions`` is what counts as a mention before the alert's own keywords (the account's
        identity and TGRAG_MENTION_KEYWORDS); without it a mention alert matches nothing."""
        ids = tuple(dict.fromkeys(doc_ids))
        if not ids:
            return []
        texts = texts or PostTexts(self.index)
        flt = alert.filters.store_filter(alert.tenant, ids)
        if alert.rule == "mention":
            return self._mentions(alert, flt, texts, mentions)
        if alert.rule == "semantic":
            found, _ = self.retriever.dense(alert.query, flt, len(ids))
            scored = [(doc_id, chunk, chunk.score) for doc_id, chunk in found]
        else:
            firsts: dict[str, StoredChunk] = {}
            for chunk in self.index.store.scroll(flt):
                firsts.setdefault(chunk.doc_id, chunk)  # any chunk: its payload is the post's
            scored = [(doc_id, chunk, WORDS_SCORE) for doc_id, chunk in firsts.items()]
        rule = _words(alert)
        out: list[Scored] = []
        for doc_id, chunk, score in scored:
            text = texts.text(doc_id)
            if text is None:
                continue
            out.append(Scored(doc_id, score, self._matched(alert, rule, score, texts, doc_id),
                              _hit(chunk, score, text, rule.stems if rule else frozenset()),
                              chunk.payload))
        return sorted(out, key=lambda s: (s.matched, s.score), reverse=True)

    def match(self, alert: Alert, doc_ids: Iterable[str], texts: PostTexts | None = None,
              mentions: MentionMatcher | None = None) -> list[Scored]:
        """The posts among ``doc_ids`` that match the alert, best first."""
        return [s for s in self.score(alert, doc_ids, texts, mentions) if s.matched]

    def _mentions(self, alert: Alert, flt: StoreFilter, texts: PostTexts,
                  mentions: MentionMatcher | None) -> list[Scored]:
        hook = mentions.with_keywords(alert.keywords) if mentions is not None else None
        firsts: dict[str, StoredChunk] = {}
        for chunk in self.index.store.scroll(flt):
            firsts.setdefault(chunk.doc_id, chunk)
        out: list[Scored] = []
        for doc_id, chunk in firsts.items():
            text = texts.text(doc_id)
            if text is None:
                continue
            meta = texts.metadata(doc_id)
            # Only group windows can mention the account (the matcher checks it too).
            found = hook(doc_id, text, meta) if hook is not None and \
                meta.get("chat_type") == "group" else []
            hit = _mention_hit(chunk, text, meta, found) if found else _hit(chunk, 0.0, text,
                                                                            frozenset())
            out.append(Scored(doc_id, WORDS_SCORE if found else 0.0, bool(found), hit,
                              chunk.payload))
        return sorted(out, key=lambda s: (s.matched, s.hit.date), reverse=True)

    def candidates(self, alert: Alert, since: int | None,
                   limit: int = MAX_FETCH) -> tuple[list[tuple[str, float]], bool]:
        """Posts of the alert's tenant since ``since`` that could match it (a superset, up to
        ``limit``, with their retrieval score), for ``alerts test``; and whether the limit cut
        them."""
        f = alert.filters
        start = max(x for x in (since, f.since) if x is not None) if (since or f.since) else None
        base = f.store_filter(alert.tenant)
        flt = StoreFilter(tenant=base.tenant, channel_ids=base.channel_ids, tags=base.tags,
                          since=start, until=base.until)
        if alert.rule == "mention":  # any group window of the period may mention the account
            return self._group_windows(flt, limit)
        if alert.rule == "semantic":
            found, more = self.retriever.dense(alert.query, flt, limit)
        else:
            # BM25 retrieves every post with one of the words: all the posts with all of them
            found, more = self.retriever.sparse(alert.query.replace('"', " "), flt, limit)
        return [(doc_id, chunk.score) for doc_id, chunk in found], more

    def _group_windows(self, flt: StoreFilter, limit: int) -> tuple[list[tuple[str, float]], bool]:
        seen: dict[str, float] = {}
        for chunk in self.index.store.scroll(flt, fields=[DOC_ID_KEY, "chat_type"]):
            if chunk.payload.get("chat_type") == "group" and chunk.doc_id not in seen:
                if len(seen) == limit:
                    return list(seen.items()), True
                seen[chunk.doc_id] = WORDS_SCORE
        return list(seen.items()), False

    @staticmethod
    def _matched(alert: Alert, rule: WordsRule | None, score: float, texts: PostTexts,
                 doc_id: str) -> bool:
        if alert.rule == "words":
            assert rule is not None
            return rule.matches(texts.stems(doc_id))
        if score < (alert.threshold or 0):
            return False
        if alert.filters.mode == "hybrid":  # the lexical half must agree: one query word in it
            return rule is not None and not rule.stems.isdisjoint(texts.stems(doc_id))
        return True


def _words(alert: Alert) -> WordsRule | None:
    """The words of the query (the words rule, the hybrid gate, the highlights)."""
    try:
        return WordsRule.parse(alert.query)
    except InputError:  # a dense alert of stopwords only: nothing to highlight
        return None


def _hit(chunk: StoredChunk, score: float, text: str, stems: frozenset[str]) -> PostHit:
    hit = PostHit.from_chunk(chunk, score)
    hit.text = text
    hit.snippet, hit.highlights = snippet_with_highlights(text, stems)
    return hit


def _mention_hit(chunk: StoredChunk, text: str, metadata: dict[str, Any],
                 mentions: list[Mention]) -> PostHit:
    """The window as a hit of its first mentioning message: that message's id and link, and its
    line ("Имя: текст") as the snippet, the mentions in it highlighted."""
    first = mentions[0]
    hit = PostHit.from_chunk(chunk, WORDS_SCORE)
    hit.text = text
    hit.message_id = first.message_id
    hit.link = post_link(hit.channel_id, hit.channel, first.message_id)
    part = next((p for p in metadata.get("window") or [] if p.get("id") == first.message_id),
                None)
    end = int(part["end"]) if part else first.end
    start = text.rfind("\n", 0, int(part["start"]) if part else first.start) + 1
    spans = [(m.start, m.end) for m in mentions
             if m.message_id == first.message_id and m.kind != "user_id"]
    if end - start > SNIPPET_CHARS:  # a long message: the stretch around its first mention
        left = max(start, (spans[0][0] if spans else start) - SNIPPET_CHARS // 3)
        right = min(end, left + SNIPPET_CHARS)
        prefix = ELLIPSIS if left > start else ""
        suffix = ELLIPSIS if right < end else ""
    else:
        left, right, prefix, suffix = start, end, "", ""
    shift = len(prefix) - left
    # Newlines become spaces (same length: the spans stay right), as other snippets are flat.
    hit.snippet = prefix + text[left:right].replace("\n", " ") + suffix
    hit.highlights = [(s + shift, e + shift) for s, e in spans if s >= left and e <= right]
    return hit


@dataclass(slots=True)
class Trial:
    """``alerts test``: what a rule would have matched among the recent posts."""

    alert: Alert
    since: int | None
    checked: int  # candidate posts checked
    capped: bool  # more candidates than were checked
    matches: list[PostHit] = field(default_factory=list)  # newest first, copies collapsed
    near: list[PostHit] = field(default_factory=list)  # semantic: best scores under the bar

    @property
    def since_iso(self) -> str:
        return iso(self.since) or ""

    def to_dict(self) -> dict[str, Any]:
        rule = self.alert.to_dict()
        for key in ("id", "created", "webhook"):
            rule.pop(key)
        return {"alert": rule, "since": iso(self.since), "checked": self.checked,
                "capped": self.capped, "matched": len(self.matches),
                "results": [h.to_dict() for h in self.matches],
                "near_misses": [h.to_dict() for h in self.near]}


def trial(matcher: AlertMatcher, alert: Alert, since: int | None, k: int = 20,
          near: int = 5, mentions: MentionMatcher | None = None) -> Trial:
    """Run ``alert``'s check over the posts since ``since`` (the same check the dispatcher runs,
    on the candidates a search retrieves, or every group window for a mention alert); the newest
    ``k`` matches and ``near`` near misses."""
    found, capped = matcher.candidates(alert, since)
    if alert.rule == "semantic":
        floor = (alert.threshold or 0) - NEAR
        found = [(d, score) for d, score in found if score >= floor]
    scored = matcher.score(alert, [d for d, _ in found], mentions=mentions)
    matched = [s.hit for s in scored if s.matched]
    hits = collapse_copies(matched, matcher.index.settings.duplicate_threshold)
    hits.sort(key=lambda h: h.date, reverse=True)
    misses = [s.hit for s in scored if not s.matched] if alert.rule == "semantic" else []
    return Trial(alert, since, len(scored), capped, hits[:k], misses[:near])
