"""Snippets: the part of a hit's best chunk worth showing, with the query's words marked.

Query and text are matched by the stems the BM25 half uses (``rag.sparse.Analyzer``: pymorphy3
lemma, then Snowball), so "ставки" marks "ставку" and "повысить" marks "повысил" (not
"повышение": another word).  The window is the start of the text when the matches fit there,
else the stretch of ``limit`` characters with the most distinct query words (then the most
matches).

Highlights are ``[start, end)`` offsets into the snippet, in Unicode code points (Python string
indexes; JavaScript must index ``Array.from(snippet)``, not UTF-16 units).
"""

from __future__ import annotations

from collections.abc import Iterable

from rag.sparse import shared_analyzer

SNIPPET_CHARS = 300
ELLIPSIS = "…"
_TRAILING = " ,.;:—-"

Span = tuple[int, int]


def query_stems(query: str) -> frozenset[str]:
    """The stems of the query's words (stopwords dropped), as the sparse encoder sees them."""
    return frozenset(shared_analyzer().tokens(query))


def make_snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a chunk, whitespace collapsed, cut at a word boundary near ``limit``."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(_TRAILING) + ELLIPSIS


def snippet_with_highlights(text: str, stems: Iterable[str], limit: int = SNIPPET_CHARS, *,
                            cluster_width: int | None = None) -> tuple[str, list[Span]]:
    """The snippet of ``text`` around the best cluster of ``stems`` and the matched words in it.

    No match: the start of the text (as :func:`make_snippet`) and no highlights.  The snippet is
    at most ``limit`` characters plus an ellipsis.  ``cluster_width`` (default: the whole
    window) caps the stretch the matches may span, leaving the rest for the words after them.
    """
    wanted = frozenset(stems)
    flat = " ".join(text.split())
    matches = shared_analyzer().matching_spans(flat, wanted)
    if not matches:
        return make_snippet(flat, limit), []
    if len(flat) <= limit:
        return flat, [(s, e) for s, e, _ in matches]
    width = limit - 1 if cluster_width is None else min(cluster_width, limit - 1)
    start, end = _window(flat, _best_cluster(matches, width), limit, limit - 1 - width)
    body = flat[start:end].rstrip(_TRAILING) if end < len(flat) else flat[start:end]
    prefix = ELLIPSIS if start > 0 else ""
    suffix = ELLIPSIS if end < len(flat) else ""
    shift = len(prefix) - start
    spans = [(s + shift, e + shift) for s, e, _ in matches if s >= start and e <= start + len(body)]
    return prefix + body + suffix, spans


def _best_cluster(matches: list[tuple[int, int, str]], width: int) -> Span:
    """The span of the matches, at most ``width`` wide, with the most distinct stems."""
    best: tuple[int, int] = (-1, 0)
    span = (matches[0][0], matches[0][1])
    for i, (start, _, _) in enumerate(matches):
        j = i
        while j + 1 < len(matches) and matches[j + 1][1] - start <= width:
            j += 1
        group = matches[i:j + 1]
        score = (len({stem for _, _, stem in group}), len(group))
        if score > best:  # strict: the earliest of equal clusters wins
            best, span = score, (start, group[-1][1])
    return span


def _window(flat: str, cluster: Span, limit: int, tail: int = 0) -> Span:
    """``[start, end)`` of ``flat`` to show: ``cluster`` inside, cut at word boundaries.

    ``tail``: the characters wanted after the cluster, when the text has them.
    """
    cs, ce = cluster
    if ce + min(tail, len(flat) - ce) <= limit:  # the matches fit in the opening: it reads best
        return 0, _cut_end(flat, 0, limit, ce)
    room = limit - 1  # the leading ellipsis
    # Some context before the matches, more after; a sentence start within it is preferred.
    start = max(0, cs - max(0, room - (ce - cs)) // 3)
    start = min(start, max(0, len(flat) - room))  # near the end: fill the window backwards
    sentence = flat.rfind(". ", start, cs)
    if sentence >= 0:
        start = sentence + 2
    elif start > 0 and flat[start - 1] != " ":
        space = flat.find(" ", start, cs)
        start = space + 1 if space >= 0 else start
    return start, _cut_end(flat, start, room, ce)


def _cut_end(flat: str, start: int, room: int, keep: int) -> int:
    """End of a window of at most ``room`` characters from ``start``, at a space after ``keep``."""
    end = start + room
    if end >= len(flat):
        return len(flat)
    if flat[end] != " ":
        space = flat.rfind(" ", keep, end)
        if space >= 0:
            end = space
    return end
