"""Near-duplicate posts: forwards and cross-posts of one text, found at search time.

Channels repost each other's news with their own decoration: a "Подписаться" footer, a link to
the channel, bold markup, an emoji in front.  Two posts are copies when the word 3-gram shingles
of their *normalised* texts have a Jaccard similarity ≥ a threshold (``TGRAG_DUPLICATE_THRESHOLD``,
0.8).  Normalising: markdown links keep their anchor text, URLs, @mentions and #hashtags go,
trailing footer lines (a short line with a call to subscribe or to send news, or a line with
nothing but links) go, then lowercase, ``ё``→``е`` and words of letters or digits.

Why 0.8: on the shared news set (22,099 posts, 24 channels) the pairs at ≥ 0.8 were the same
text (exact copies, or one sentence of attribution dropped); between 0.6 and 0.8 they mix copies
with template posts whose content differs ("Куда сходить в Москве … 5-6 октября" vs "… 6
октября", daily currency rates).  Hiding a distinct post costs more than showing a copy, so the
cut is at 0.8.  Figures in docs/eval.md.

The functions are pure; ``rag.search`` and ``rag.posts`` apply them to fetched candidates.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import chain

DEFAULT_THRESHOLD = 0.8
SHINGLE = 3  # words per shingle
FOOTER_MAX_WORDS = 12

_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:[^()\s]|\([^()\s]*\))*\)")
_URL = re.compile(r"(?:https?://|www\.|t\.me/|bit\.ly/)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)[@#][\w.]+")
# Footer calls to action: подписаться / подписывайся / подпишитесь, "прислать новость", ads.
_FOOTER = re.compile(r"подпи[шс]\w*с[яь]|прислать новость|предложить новость|читать нас|"
                     r"наш канал|реклама|erid", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+")

Shingles = frozenset[tuple[str, ...]]


def normalized_words(text: str) -> list[str]:
    """The words of ``text`` without links, mentions, hashtags, markup and footer lines."""
    # Each substitution runs only when its pattern can match (every match contains the literal
    # checked first): most posts have no markdown link or mention, and the scans were most of the
    # cost of collapsing a page of hits.
    if "](" in text:
        text = _MD_LINK.sub(r" \1 ", text)
    if _may_have_url(text):
        text = _URL.sub(" ", text)
    if "@" in text or "#" in text:
        text = _MENTION.sub(" ", text)
    lines = text.splitlines()
    # Lowercased once: lowercasing never adds or removes a line break, so the lines correspond.
    lowered = text.lower().replace("ё", "е").splitlines(keepends=True)
    # Only trailing lines: "Путин подписался под…" in the body is content, at the end a footer.
    end = len(lines)
    while end:
        words = _WORD.findall(lowered[end - 1])
        if words and (len(words) > FOOTER_MAX_WORDS or not _FOOTER.search(lines[end - 1])):
            break
        end -= 1
    # No word spans a line break, so the words of the kept lines are those of their text.
    return _WORD.findall("".join(lowered[:end]))


def _may_have_url(text: str) -> bool:
    """False only when ``_URL`` cannot match (each of its prefixes has a ``/`` or ``www``)."""
    return "/" in text or "w" in text or "W" in text


def shingles(text: str, n: int = SHINGLE) -> Shingles:
    """Word ``n``-grams of the normalised text; a shorter text is one shingle of all its words.

    A text with no words left (only hashtags or links) falls back to its whole lowercased text,
    so identical copies of it still match; an empty text has no shingles and matches nothing.
    """
    words = normalized_words(text)
    if not words:
        flat = " ".join(text.lower().split())
        return frozenset({(flat,)}) if flat else frozenset()
    if len(words) < n:
        return frozenset({tuple(words)})
    # The n-grams, built in C (the shorter slices end the zip: no n-gram runs past the end).
    return frozenset(zip(*(words[k:] for k in range(n)), strict=False))


def jaccard(a: Shingles, b: Shingles) -> float:
    """|a ∩ b| / |a ∪ b|; 0 when either is empty."""
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def group_copies(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Greedy grouping of ``texts`` (best first) into near-duplicate groups, as indexes.

    Each text joins the first earlier group whose *leader* (its first, best-ranked text) it
    matches at ≥ ``threshold``, else it leads a new group.  Comparing with leaders only keeps
    groups from chaining (A≈B, B≈C, A≉C).  Groups come in the order of their leaders, so adding
    texts at the end never changes the groups before them (pages stay stable).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    groups: list[list[int]] = []
    leaders: list[Shingles] = []
    postings: dict[tuple[str, ...], list[int]] = {}  # shingle → groups whose leader has it
    for i, text in enumerate(texts):
        sh = shingles(text)
        shared = postings.keys() & sh  # in C; usually empty or a few common phrases
        if shared:
            # Shingles in common with each leader, counted in C.
            common = Counter(chain.from_iterable(postings[s] for s in shared))
            match = next((g for g in sorted(common)
                          if common[g] / (len(sh) + len(leaders[g]) - common[g]) >= threshold),
                         None)
            if match is not None:
                groups[match].append(i)
                continue
        groups.append([i])
        leaders.append(sh)
        for s in sh:
            postings.setdefault(s, []).append(len(groups) - 1)
    return groups
