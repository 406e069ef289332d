"""Results, answers and channel lists as Telegram HTML messages under 4,096 characters.

Every piece of post text, title, query and error is escaped (:mod:`api.bot.markup`); the only
markup is ours: the matched words in bold (the search hit's ``highlights``), titles in bold and
links.  Long output is split at block boundaries (one post, one paragraph, one channel), never
inside an entity; a search page shows as many of its posts as fit one message, and its "next"
button starts at the first post not shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.bot.markup import MAX_MESSAGE, Html, bold, cut, escape, join, link, visible_length
from api.bot.texts import Lang, posts_count, t
from rag.search import PostHit

MAX_COPIES_SHOWN = 3
ANSWER_PIECE = 3000  # characters of answer text per block, so one block always fits
INLINE_DESCRIPTION = 120
CITATION = re.compile(r"\[(\d+)\]")
SENTENCE = re.compile(r"(?<=[.!?…])\s+")


def day(ts: int | None, lang: Lang) -> str:
    if ts is None:
        return "—"
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%d.%m.%Y" if lang == "ru" else "%Y-%m-%d")


def moment(ts: int | None, lang: Lang) -> str:
    if ts is None:
        return "—"
    value = datetime.fromtimestamp(ts, UTC)
    return value.strftime("%d.%m.%Y %H:%M" if lang == "ru" else "%Y-%m-%d %H:%M") + " UTC"


def title_of(hit: PostHit | Any) -> str:
    return hit.channel_title or (f"@{hit.channel}" if hit.channel else str(hit.channel_id))


def short_link(url: str) -> str:
    return url.removeprefix("https://").removeprefix("http://")


def marked(snippet: str, highlights: Sequence[Sequence[int]]) -> Html:
    """The snippet escaped, with the ``[start, end)`` spans (code points) in bold."""
    out: list[Html] = []
    pos = 0
    for start, end in sorted((int(s), int(e)) for s, e in highlights):
        start, end = max(start, pos), min(end, len(snippet))
        if start >= end:
            continue
        out += [escape(snippet[pos:start]), bold(snippet[start:end])]
        pos = end
    out.append(escape(snippet[pos:]))
    return join(out)


def copies_line(hit: PostHit, lang: Lang) -> Html | None:
    if not hit.copies:
        return None
    shown = [link(c.link, f"{title_of(c)}, {day(c.date, lang)}")
             for c in hit.copies[:MAX_COPIES_SHOWN]]
    rest = len(hit.copies) - len(shown)
    if rest > 0:
        shown.append(t(lang, "more_copies", n=rest))
    return Html(t(lang, "copies") + join(shown, ", "))


def hit_block(hit: PostHit, lang: Lang, n: int | None = None) -> Html:
    """One post: title and date, the snippet with the matched words in bold, link, copies."""
    head = bold(f"{n}. {title_of(hit)}" if n is not None else title_of(hit))
    lines = [Html(f"{head} · {escape(day(hit.date, lang))}"),
             marked(hit.snippet, hit.highlights),
             link(hit.link, short_link(hit.link))]
    also = copies_line(hit, lang)
    if also is not None:
        lines.append(also)
    return join(lines, "\n")


def fits(text: Html, limit: int = MAX_MESSAGE) -> bool:
    return visible_length(text) <= limit


def pack(header: Html | None, blocks: Sequence[Html], limit: int = MAX_MESSAGE) -> tuple[Html, int]:
    """``header`` and as many leading ``blocks`` as fit one message, and how many did."""
    parts: list[Html] = [header] if header else []
    used = 0
    for block in blocks:
        candidate = join([*parts, block], "\n\n")
        if not fits(candidate, limit):
            break
        parts.append(block)
        used += 1
    return join(parts, "\n\n"), used


def split_blocks(blocks: Sequence[Html], limit: int = MAX_MESSAGE) -> list[Html]:
    """Messages made of whole blocks, each under ``limit``; a block too long for any message
    (none of ours should be) is sent as its plain text, cut."""
    messages: list[Html] = []
    rest = list(blocks)
    while rest:
        text, used = pack(None, rest, limit)
        if used == 0:
            from telethon.extensions import html as telegram_html

            plain, _ = telegram_html.parse(rest[0])
            text, used = escape(cut(plain, limit - 1) + "…"), 1
        messages.append(text)
        rest = rest[used:]
    return messages


# -- search ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class PageView:
    """A results message: its text, the hits it shows and where the next page starts."""

    text: Html
    shown: list[PostHit]
    next_offset: int | None


def results_page(query: str, hits: Sequence[PostHit], offset: int, next_offset: int | None,
                 lang: Lang) -> PageView:
    if not hits:
        key = "no_more" if offset else "no_results"
        return PageView(t(lang, key, query=query), [], None)
    blocks = [hit_block(h, lang, n) for n, h in enumerate(hits, offset + 1)]
    header = t(lang, "search_header", query=query, first=offset + 1, last=offset + len(hits))
    text, used = pack(header, blocks)
    if used < len(hits):  # shortened at a post boundary: say what it really shows
        used = max(used, 1)  # a post too long for any message (none should be) is cut
        header = t(lang, "search_header", query=query, first=offset + 1, last=offset + used)
        text = split_blocks([join([header, *blocks[:used]], "\n\n")])[0]
        next_offset = offset + used
    return PageView(text, list(hits[:used]), next_offset)


def similar_view(source_title: str, source_date: int | None, hits: Sequence[PostHit],
                 lang: Lang) -> tuple[Html, list[PostHit]]:
    header = t(lang, "similar_header", title=source_title, date=day(source_date, lang))
    if not hits:
        return join([header, t(lang, "no_similar")], "\n\n"), []
    blocks = [hit_block(h, lang, n) for n, h in enumerate(hits, 1)]
    text, used = pack(header, blocks)
    return text, list(hits[:used])


def inline_article(hit: PostHit, lang: Lang) -> tuple[str, str, Html]:
    """An inline-mode result: its title, description (plain text) and message (HTML)."""
    description = " ".join(hit.snippet.split())
    if len(description) > INLINE_DESCRIPTION:
        description = description[:INLINE_DESCRIPTION].rsplit(" ", 1)[0] + "…"
    return f"{title_of(hit)} · {day(hit.date, lang)}", description, hit_block(hit, lang)


# -- answers --------------------------------------------------------------------------------------


def streaming_answer(text: str, lang: Lang, limit: int = MAX_MESSAGE) -> Html:
    """The answer so far, escaped, with a cursor; cut to fit while it is being written."""
    if not text.strip():
        return t(lang, "thinking")
    return Html(escape(cut(text.strip(), limit - 10)) + " ▍")


def _answer_pieces(text: str) -> list[str]:
    """Paragraphs, long ones cut at sentence ends into pieces of at most ANSWER_PIECE chars."""
    pieces: list[str] = []
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        current = ""
        for sentence in SENTENCE.split(paragraph):
            while len(sentence) > ANSWER_PIECE:  # one endless sentence: cut it anyway
                pieces.append(sentence[:ANSWER_PIECE])
                sentence = sentence[ANSWER_PIECE:]
            if current and len(current) + 1 + len(sentence) > ANSWER_PIECE:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    return pieces


def _cited(piece: str, sources: dict[int, dict[str, Any]]) -> Html:
    """Escaped answer text whose ``[n]`` link to source n."""
    out: list[Html] = []
    pos = 0
    for match in CITATION.finditer(piece):
        source = sources.get(int(match.group(1)))
        if source is None or not source.get("link"):
            continue
        out += [escape(piece[pos:match.start()]), link(source["link"], match.group(0))]
        pos = match.end()
    out.append(escape(piece[pos:]))
    return join(out)


def source_line(source: dict[str, Any], lang: Lang) -> Html:
    when = day(_unix(source.get("date")), lang)
    name = source.get("channel") or ""  # the username, else the title (rag.qa.Source)
    number = escape(f"[{source['n']}]")
    return Html(f"{number} {link(source['link'], name or source['link'])} · {escape(when)}")


def final_answer(answer: dict[str, Any], lang: Lang) -> list[Html]:
    """The finished answer (the contract's ask JSON) as messages: the text with its citations
    linked, then the numbered sources."""
    if answer["mode"] == "not_found":
        return [t(lang, "nothing_relevant")]
    sources = {int(s["n"]): s for s in answer["sources"]}
    blocks = [_cited(p, sources) for p in _answer_pieces(answer["answer"])]
    if answer["mode"] == "extractive":
        blocks.append(Html(f"<i>{t(lang, 'extractive_note')}</i>"))
    if sources:
        lines = [bold(t(lang, "sources"))] + [source_line(s, lang) for s in sources.values()]
        blocks.append(join(lines, "\n"))
    return split_blocks(blocks)


def _unix(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso).timestamp())


# -- channels -------------------------------------------------------------------------------------


def channel_line(row: Any, lang: Lang) -> Html:
    name = row.title or (f"@{row.username}" if row.username else str(row.channel_id or row.ref))
    parts = [bold(name)]
    if row.username and row.title:
        parts.append(escape(f"@{row.username}"))
    details = [escape(posts_count(lang, row.posts))]
    if row.followed:
        details.append(t(lang, "last_sync", when=moment(row.last_sync, lang)) if row.last_sync
                       else t(lang, "never_synced"))
        if row.error:
            details.append(t(lang, "sync_error", error=row.error))
    elif row.last_post is not None:
        details.append(t(lang, "last_post", when=day(row.last_post, lang)))
    return Html("• " + join(parts, " ") + " — " + join(details, " · "))


def channels_messages(rows: Sequence[Any], lang: Lang, *, admin: bool) -> list[Html]:
    if not rows:
        return [t(lang, "no_channels_admin" if admin else "no_channels")]
    header = t(lang, "channels_header", n=len(rows))
    lines = [channel_line(r, lang) for r in rows]
    # One channel per block; consecutive lines are packed (newline-joined) per message.
    messages: list[Html] = []
    current: list[Html] = [header]
    for line in lines:
        if not fits(join([*current, line], "\n")):
            messages.append(join(current, "\n"))
            current = []
        current.append(line)
    messages.append(join(current, "\n"))
    return messages


# -- digests --------------------------------------------------------------------------------------

MAX_DIGEST_CHANNELS = 3
_LETTERS = re.compile(r"[^\w]+")


def digest_messages(digest: Any, lang: Lang, *, scheduled: bool = False) -> list[Html]:
    """A :class:`rag.digest.Digest` as messages: the period, then one block per story (its title,
    the summary with every [n] linked to its post, how many posts and which channels)."""
    start, end = moment(digest.since, lang), moment(digest.until, lang)
    if not digest.stories:
        return [t(lang, "digest_empty", start=start, end=end)]
    header_key = "digest_daily_header" if scheduled else "digest_header"
    blocks = [t(lang, header_key, start=start, end=end, posts=posts_count(lang, digest.posts))]
    blocks += [story_block(n, story, lang) for n, story in enumerate(digest.stories, 1)]
    notes: list[Html] = []
    if len(digest.stories) < digest.stories_total:
        notes.append(t(lang, "digest_shown", shown=len(digest.stories),
                       total=digest.stories_total))
    if digest.truncated:
        notes.append(t(lang, "digest_truncated"))
    if digest.mode == "extractive":
        notes.append(t(lang, "extractive_note"))
    if scheduled:
        notes.append(t(lang, "digest_unsubscribe"))
    if notes:
        blocks.append(Html("<i>" + join(notes, "\n") + "</i>"))
    return split_blocks(blocks)


def story_block(n: int, story: Any, lang: Lang) -> Html:
    lines = [bold(f"{n}. {story.title}")]
    if not _repeats(story.summary, story.title):  # a one-sentence post: its title says it all
        posts = {k: {"link": p.link} for k, p in enumerate(story.posts, 1)}
        lines.append(_cited(cut(story.summary, ANSWER_PIECE), posts))
    lines.append(_story_sources(story, lang))
    return join(lines, "\n")


def _story_sources(story: Any, lang: Lang) -> Html:
    """``3 поста · Mash, SHOT, ещё 2``: each channel linked to its first post of the story."""
    first: dict[int, Any] = {}
    for post in story.posts:
        for copy in (post, *post.copies):
            known = first.get(copy.channel_id)
            if known is None or copy.date < known.date:
                first[copy.channel_id] = copy
    ordered = sorted(first.values(), key=lambda p: p.date)
    names = [link(p.link, title_of(p)) for p in ordered[:MAX_DIGEST_CHANNELS]]
    if len(ordered) > MAX_DIGEST_CHANNELS:
        names.append(t(lang, "digest_more_channels", n=len(ordered) - MAX_DIGEST_CHANNELS))
    return Html(escape(posts_count(lang, story.size)) + " · " + join(names, ", "))


def _repeats(summary: str, title: str) -> bool:
    said = _LETTERS.sub(" ", CITATION.sub(" ", summary)).lower().split()
    head = _LETTERS.sub(" ", title.rstrip("…")).lower().split()
    return bool(head) and said[:len(head)] == head and len(said) <= len(head) + 3
