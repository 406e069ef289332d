"""Digests: a period's posts grouped into stories, ranked, each summed up in 1-2 cited sentences.

* **Posts.** Every post of the tenant dated in ``[since, until]`` (with the channel and tag
  filters of search), read from the vector store with its stored dense vectors: a post's vector
  is the mean direction of its chunks' (nothing is embedded again).  Group-chat windows are left
  out unless a channel filter names their chat: a digest is about what channels published.  At
  most ``TGRAG_DIGEST_MAX_POSTS`` posts, the newest (``Digest.truncated`` says when more were
  there), so one request's memory and time stay bounded.
* **Stories.** Near-duplicate copies first (``rag.dedup.group_copies`` at
  ``TGRAG_DUPLICATE_THRESHOLD``, oldest first, so the original leads), then topic clusters of the
  copy groups' vectors (``rag.story_clusters.average_linkage`` at
  ``TGRAG_DIGEST_CLUSTER_THRESHOLD``, measured on the news set in docs/eval.md, "Digests").
  A story lists one entry per distinct text, oldest first, each with its copies.
* **Ranking.** Every post of a story, copies included, counts its engagement relative to its
  channel's: ``(views + 10·forwards)`` over the median of its channel's posts in the period,
  clipped to [0.25, 4]; a post without counters counts 1.  So a story many channels carry ranks
  high, and so does one post read far more than its channel's usual; big channels do not win by
  their size alone.  Ties: more channels, then the newest.
* **Summaries.** With an LLM, one request per story: a Russian prompt with the story's posts as
  numbered sources asks for a title and one or two sentences citing them as ``[n]``; every
  citation that is not one of the sources is removed (``rag.qa.clean_citations``).  Offline, or
  when the LLM fails or refuses, the summary is extractive: ``SentenceSelector.summarise``, the
  component extractive answers use.  ``[n]`` is the n-th entry of the story's ``posts``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import median
from typing import Any, Literal

import numpy as np
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from rag.dedup import group_copies
from rag.errors import InputError
from rag.ids import chunk_number
from rag.index import Index
from rag.llm import finish_reason
from rag.metrics import LLM_CALLS
from rag.qa import CITATION, clean_citations
from rag.search import SearchFilters, parse_date
from rag.sentences import Passage, SentenceSelector, cite, is_content_free, split_sentences
from rag.store import StoredChunk
from rag.story_clusters import average_linkage, mean_direction, unit_rows

log = logging.getLogger("tgrag.digest")

Mode = Literal["generative", "extractive"]
DEFAULT_SINCE = "1d"
MAX_PERIOD_DAYS = 366
FORWARD_WEIGHT = 10  # one forward says about as much as ten views
ENGAGEMENT_CLIP = (0.25, 4.0)
SUMMARY_SOURCES = 6  # posts of a story given to the LLM / the summariser: the most central
SOURCE_CHARS = 1200  # per source in the prompt
TITLE_CHARS = 90
SUMMARY_CHARS = 400  # the offline summary's sentences together
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)  # 90m 12h 1d 2w
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MARKUP = re.compile(r"\*\*|__|~~|`|\|\|")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_TRAILING_TAGS = re.compile(r"(?:[ \t]*[#@][\w.-]+)+[ \t]*$", re.MULTILINE)
_TAG_OR_LINK = re.compile(r"(?<!\w)[#@][\w.]+|(?:https?://|www\.|t\.me/)\S+", re.IGNORECASE)

SYSTEM_PROMPT = (
    "Ты составляешь дайджест новостей из Telegram-каналов. Тебе дают пронумерованные посты об "
    "одном сюжете. Напиши короткий заголовок сюжета (до 80 символов, без ссылок) и сводку в одно "
    "или два предложения. После каждого утверждения сводки ставь номер поста в квадратных "
    "скобках, например [1] или [2][3]. Ссылайся только на номера из списка и используй только "
    "факты из постов. Ответь строго в двух строках:\nЗаголовок: …\nСводка: …"
)
_TITLE_LINE = re.compile(r"^\W*заголовок\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_SUMMARY_LINE = re.compile(r"^\W*(?:сводка|кратко)\W*:\s*(.+)", re.IGNORECASE | re.MULTILINE |
                           re.DOTALL)


# -- the period -----------------------------------------------------------------------------------


def parse_period(since: str | int | None = DEFAULT_SINCE, until: str | int | None = None, *,
                 now: float | None = None) -> tuple[int, int]:
    """``(since, until)`` in unix seconds from what a person typed.

    ``since``: a duration back from ``until`` (``90m``, ``12h``, ``1d``, ``2w``) or a date
    (``2024-05-01``, ``2024-05-01T10:00``, unix seconds); ``until``: a date (a bare date means
    its end) or nothing for now.
    """
    end = (parse_date(until, end_of_day=True) if until not in (None, "")
           else int(now if now is not None else time.time()))
    text = DEFAULT_SINCE if since in (None, "") else since
    match = DURATION.match(str(text)) if not isinstance(text, int) else None
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds <= 0:
            raise InputError(f"--since {text!r} is an empty period", hint="e.g. --since 1d")
        start = end - int(seconds)
    else:
        try:
            start = parse_date(text)
        except InputError as err:
            raise InputError(f"invalid --since {text!r}",
                             hint="a duration (90m, 12h, 1d, 2w) or a date (YYYY-MM-DD, "
                                  "YYYY-MM-DDTHH:MM, unix seconds)") from err
    if start > end:
        raise InputError(f"since ({_iso(start)}) is after until ({_iso(end)})",
                         hint="swap the dates or drop one of them")
    if end - start > MAX_PERIOD_DAYS * 86400:
        raise InputError(f"a digest covers at most {MAX_PERIOD_DAYS} days",
                         hint="pick a shorter period, e.g. --since 7d")
    return start, end


# -- the posts and stories ------------------------------------------------------------------------


@dataclass(slots=True)
class DigestPost:
    """One post of the period, with its stored vector (unit length) and engagement."""

    id: str
    channel_id: int
    channel: str
    channel_title: str
    message_id: int
    date: int
    link: str
    text: str
    vector: np.ndarray = field(repr=False)
    views: int | None = None
    forwards: int | None = None
    copies: list[DigestPost] = field(default_factory=list)  # near-duplicates, oldest first

    @property
    def name(self) -> str:
        """The channel as the ask JSON names it: the username, else the title."""
        return self.channel or self.channel_title or str(self.channel_id)

    def to_dict(self, *, with_copies: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "channel": self.name, "message_id": self.message_id,
            "link": self.link, "date": _iso(self.date), "channel_id": self.channel_id,
            "channel_title": self.channel_title, "views": self.views, "forwards": self.forwards,
        }
        if with_copies:
            out["copies"] = [c.to_dict(with_copies=False) for c in self.copies]
        return out


@dataclass(slots=True)
class Story:
    """Posts about one thing: one entry per distinct text, oldest first, each with its copies."""

    posts: list[DigestPost]
    score: float = 0.0
    title: str = ""
    summary: str = ""
    mode: Mode = "extractive"
    removed_citations: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Posts, copies included."""
        return sum(1 + len(p.copies) for p in self.posts)

    @property
    def channels(self) -> int:
        return len({q.channel_id for p in self.posts for q in (p, *p.copies)})

    @property
    def newest(self) -> int:
        return max(q.date for p in self.posts for q in (p, *p.copies))

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "summary": self.summary,
                "posts": [p.to_dict() for p in self.posts], "size": self.size,
                "channels": self.channels, "score": round(self.score, 3), "mode": self.mode}


@dataclass(slots=True)
class Digest:
    """The contract's digest JSON (``to_dict``): the period and its stories, best first."""

    since: int
    until: int
    stories: list[Story]
    posts: int = 0  # posts of the period that were grouped
    truncated: bool = False  # the period had more than TGRAG_DIGEST_MAX_POSTS posts
    stories_total: int = 0  # stories before the cut to the requested number

    @property
    def mode(self) -> Mode:
        modes = {s.mode for s in self.stories}
        return "generative" if modes == {"generative"} else "extractive"

    def to_dict(self) -> dict[str, Any]:
        return {"since": _iso(self.since), "until": _iso(self.until),
                "stories": [s.to_dict() for s in self.stories], "posts": self.posts,
                "stories_total": self.stories_total, "truncated": self.truncated,
                "mode": self.mode}


def group_stories(texts: Sequence[str], vectors: Sequence[Sequence[float]] | np.ndarray, *,
                  copy_threshold: float, topic_threshold: float) -> list[list[list[int]]]:
    """Stories of posts (given oldest first): each a list of copy groups, each a list of post
    indexes led by its oldest copy.  Stories come in the order of their oldest post."""
    if len(texts) != len(vectors):
        raise ValueError("one vector per text")
    if not texts:
        return []
    copies = group_copies(texts, copy_threshold)
    rows = unit_rows(vectors)
    units = np.stack([mean_direction(rows[g]) for g in copies])
    clusters = average_linkage(units, topic_threshold)
    return [[copies[u] for u in cluster] for cluster in clusters]


def rank_stories(stories: list[Story]) -> list[Story]:
    """Scores every story (see the module docstring) and sorts them, best first."""
    usual: dict[int, list[float]] = defaultdict(list)
    for story in stories:
        for p in story.posts:
            for q in (p, *p.copies):
                value = _engagement(q)
                if value is not None:
                    usual[q.channel_id].append(value)
    medians = {c: median(v) for c, v in usual.items() if v}
    low, high = ENGAGEMENT_CLIP
    for story in stories:
        score = 0.0
        for p in story.posts:
            for q in (p, *p.copies):
                value, typical = _engagement(q), medians.get(q.channel_id)
                score += (min(high, max(low, value / typical))
                          if value is not None and typical else 1.0)
        story.score = score
    return sorted(stories, key=lambda s: (s.score, s.channels, s.newest), reverse=True)


def _engagement(post: DigestPost) -> float | None:
    if post.views is None and post.forwards is None:
        return None
    return float((post.views or 0) + FORWARD_WEIGHT * (post.forwards or 0))


# -- summaries ------------------------------------------------------------------------------------


class StorySummariser:
    """Title and 1-2 cited sentences for a story: by the LLM when there is one, else extractive."""

    def __init__(self, llm: LLM | None = None, selector: SentenceSelector | None = None) -> None:
        self.llm = llm
        self.selector = selector or SentenceSelector()
        self.llm_failed = False  # once it failed (after its own retries), not again this digest

    def summarise(self, story: Story) -> None:
        """Fills ``story.title``, ``summary``, ``mode`` and ``removed_citations``."""
        sources = central_posts(story, SUMMARY_SOURCES)
        if self.llm is not None and not self.llm_failed:
            try:
                if self._generative(story, sources):
                    return
            except Exception as exc:  # a digest is never lost to a failing LLM
                LLM_CALLS.inc("digest", "error")
                # Down or misconfigured: each further story would wait out the same timeouts and
                # retries, so the rest of this digest is extractive at once.
                self.llm_failed = True
                log.warning("digest: the LLM failed (%s); the remaining summaries are "
                            "extractive", exc)
        self._extractive(story, sources)

    def _generative(self, story: Story, sources: list[int]) -> bool:
        assert self.llm is not None
        blocks = []
        for local, n in enumerate(sources, 1):
            p = story.posts[n - 1]
            who = p.channel_title or p.channel or str(p.channel_id)
            blocks.append(f"[{local}] {who}, {_iso(p.date)[:10]}\n{p.text[:SOURCE_CHARS]}")
        messages = [ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT),
                    ChatMessage(role=MessageRole.USER, content="Посты:\n\n" + "\n\n".join(blocks))]
        response = self.llm.chat(messages)
        if finish_reason(response) == "blacklist":
            LLM_CALLS.inc("digest", "refused")
            return False
        LLM_CALLS.inc("digest", "ok")
        text = (response.message.content or "").strip()
        title_match, summary_match = _TITLE_LINE.search(text), _SUMMARY_LINE.search(text)
        summary = summary_match.group(1) if summary_match else _TITLE_LINE.sub("", text)
        summary, removed = clean_citations(" ".join(summary.split()), len(sources))
        # Back from the prompt's numbers to the story's: [k] → the k-th source's place in posts.
        summary = CITATION.sub(lambda m: "".join(
            f"[{sources[int(k) - 1]}]" for k in re.findall(r"\d+", m.group(1))), summary)
        if not summary.strip():
            return False
        title = CITATION.sub("", title_match.group(1)).strip(" .«»\"") if title_match else ""
        story.title = _trim(title, TITLE_CHARS) if title else headline(story, sources)
        story.summary = summary.strip()
        story.mode = "generative"
        story.removed_citations = removed
        return True

    def _extractive(self, story: Story, sources: list[int]) -> None:
        n, lead = headline_sentence(story, sources)
        story.title = _title(lead)
        passages = []
        for k in sources:
            text = _plain(story.posts[k - 1].text)
            if k == n:  # the title says it already: the summary should say more, if it can
                text = text.replace(lead, " ", 1)
            passages.append(Passage(k, text, story.posts[k - 1].date))
        picks = self.selector.summarise(passages, max_sentences=2, max_chars=SUMMARY_CHARS)
        # Nothing else to say (one post of one sentence): the sentence itself, cited.
        story.summary = cite(picks) if picks else f"{_trim(lead, 300)} [{n}]"
        story.mode = "extractive"
        story.removed_citations = []


def central_posts(story: Story, limit: int) -> list[int]:
    """The numbers (1-based, in ``story.posts``) of its ``limit`` posts closest to its centre:
    the most central first, then the others in story order (oldest first)."""
    vectors = np.stack([p.vector for p in story.posts])
    sims = vectors @ mean_direction(vectors)
    top = [int(i) for i in np.argsort(-sims, kind="stable")[:limit]]
    return [top[0] + 1] + sorted(i + 1 for i in top[1:])


def headline_sentence(story: Story, sources: Sequence[int]) -> tuple[int, str]:
    """The first sentence with content of the most central post that has one (its number and
    the sentence, markup removed): the title a digest shows without an LLM."""
    for n in sources:
        for sentence in split_sentences(_plain(story.posts[n - 1].text)):
            if not is_content_free(sentence):
                return n, sentence
    first = sources[0]
    return first, " ".join(_plain(story.posts[first - 1].text).split()) or "…"


def headline(story: Story, sources: Sequence[int]) -> str:
    return _title(headline_sentence(story, sources)[1])


def _title(sentence: str) -> str:
    bare = _TAG_OR_LINK.sub(" ", sentence)
    return _trim(bare.strip().rstrip(".!…").rstrip(), TITLE_CHARS) or _trim(sentence, TITLE_CHARS)


def _plain(text: str) -> str:
    """The text without markdown, its links' anchors kept, and without the hashtags and
    @mentions that end a line ("… похолодает до +15. #погода", "… выше 113 рублей. @banksta")."""
    return _TRAILING_TAGS.sub("", _MARKUP.sub("", _MD_LINK.sub(r"\1", text)))


def _trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:—-") + "…"


# -- building a digest ----------------------------------------------------------------------------


class DigestBuilder:
    """Builds the digest of one tenant's view of the index (see the module docstring)."""

    def __init__(self, index: Index, llm: LLM | None = None, *,
                 selector: SentenceSelector | None = None) -> None:
        self.index = index
        self.settings = index.settings
        self.summariser = StorySummariser(llm, selector)

    def build(self, filters: SearchFilters, *, since: int, until: int,
              stories: int | None = None,
              on_story: Callable[[int, int], None] | None = None) -> Digest:
        """The digest of the posts ``filters`` selects in ``[since, until]``; ``stories`` caps
        how many are summarised (default ``TGRAG_DIGEST_STORIES``); ``on_story(done, total)``
        reports the summaries' progress (an LLM takes seconds per story)."""
        limit = self.settings.digest_stories if stories is None else stories
        if not 1 <= limit <= 100:
            raise InputError(f"stories must be between 1 and 100, got {limit}",
                             hint="e.g. --stories 10")
        filters.since, filters.until = since, until
        filters.validate()
        if filters.tenant is None:
            filters.tenant = self.index.tenant
        posts, truncated = self.read_posts(filters)
        groups = group_stories([p.text for p in posts], [p.vector for p in posts],
                               copy_threshold=self.settings.duplicate_threshold,
                               topic_threshold=self.settings.digest_cluster_threshold)
        found = [Story([_with_copies(posts, g) for g in story]) for story in groups]
        ranked = rank_stories(found)
        chosen = ranked[:limit]
        for done, story in enumerate(chosen, 1):
            self.summariser.summarise(story)
            if on_story is not None:
                on_story(done, len(chosen))
        return Digest(since, until, chosen, posts=len(posts), truncated=truncated,
                      stories_total=len(ranked))

    def read_posts(self, filters: SearchFilters) -> tuple[list[DigestPost], bool]:
        """The period's posts, oldest first, each with its mean chunk vector; and whether the
        cap (``TGRAG_DIGEST_MAX_POSTS``, the newest kept) cut some.

        One pass over the store; memory stays within twice the cap whatever the period holds:
        past that the oldest posts are dropped and anything older is skipped from then on (a
        post's chunks share its date, so a dropped post never comes back in part)."""
        cap = self.settings.digest_max_posts
        kept: dict[str, _Parts] = {}
        floor: tuple[int, str] | None = None  # the newest post dropped so far
        truncated = False
        for chunk in self.index.store.scroll(filters.to_store(), with_vectors=True):
            if chunk.dense is None:
                continue
            payload = chunk.payload
            if payload.get("chat_type") == "group" and not filters.channel_ids:
                continue
            key = (int(payload.get("date", 0)), chunk.doc_id)
            if floor is not None and key <= floor:
                truncated = True
                continue
            parts = kept.get(chunk.doc_id)
            if parts is None:
                parts = kept[chunk.doc_id] = _Parts(key, payload)
            parts.add(chunk)
            if len(kept) > 2 * cap:
                floor = _drop_oldest(kept, cap)
                truncated = True
        if len(kept) > cap:
            _drop_oldest(kept, cap)
            truncated = True
        ordered = sorted(kept.values(), key=lambda parts: parts.key)
        return [self._post(parts) for parts in ordered], truncated

    def _post(self, parts: _Parts) -> DigestPost:
        doc_id, p = parts.key[1], parts.payload
        try:
            text = self.index.post_text(doc_id)
        except Exception:  # a docstore hiccup: the chunks hold the text too
            text = None
        if text is None:
            text = "\n\n".join(t for _, t in sorted(parts.texts))
        return DigestPost(
            id=doc_id, channel_id=int(p.get("channel_id", 0)), channel=p.get("channel") or "",
            channel_title=p.get("channel_title") or "", message_id=int(p.get("message_id", 0)),
            date=parts.key[0], link=p.get("link") or "", text=text,
            vector=mean_direction(np.stack(parts.vectors)),
            views=_count(p.get("views")), forwards=_count(p.get("forwards")),
        )


class _Parts:
    """One post's chunks as they come from the store: float32 vectors and texts, and the first
    chunk's payload without its text."""

    __slots__ = ("key", "payload", "texts", "vectors")

    def __init__(self, key: tuple[int, str], payload: dict[str, Any]) -> None:
        self.key = key
        self.payload = {k: v for k, v in payload.items() if k != "text"}
        self.texts: list[tuple[int, str]] = []
        self.vectors: list[np.ndarray] = []

    def add(self, chunk: StoredChunk) -> None:
        self.vectors.append(np.asarray(chunk.dense, dtype=np.float32))
        self.texts.append((chunk_number(chunk.node_id), chunk.text))


def _drop_oldest(kept: dict[str, _Parts], cap: int) -> tuple[int, str]:
    """Keep the ``cap`` newest posts; the key of the newest one dropped."""
    order = sorted(kept.values(), key=lambda parts: parts.key)
    dropped = order[:len(order) - cap]
    for parts in dropped:
        del kept[parts.key[1]]
    return dropped[-1].key


def _with_copies(posts: list[DigestPost], group: list[int]) -> DigestPost:
    lead = posts[group[0]]
    lead.copies = [posts[i] for i in group[1:]]
    return lead


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
