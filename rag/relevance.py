"""The relevance floor: which retrieved posts may answer a question, and when nothing can.

e5 cosines sit in a narrow band, and on 22k news posts a question the posts cannot answer ("кто
выиграл чемпионат мира по футболу 2018?") still finds posts about football at nearly the score
a real answer gets, while a right answer in a long encyclopedic text may score lower than that.
Two things tell them apart better than the score alone:

* **standing out**: a post that answers stands above the question's background (for a question
  nothing answers, the top posts are all about equally vague): the score of the
  ``BACKGROUND_RANK``-th best post or, when a group of top posts shares the question's subject
  (an article's paragraphs, the reports of one story) and a clear score drop ends it further
  down, of the first post after the group (:func:`background`);
* **the specifics**: the question's figures (2018), Latin-script words (Brent, iPhone) and
  names (capitalised words: Эверест, «Оскар», ЦБ), which an answer usually repeats.  In a
  question written in Latin script (English) only the capitalised words after the first and the
  abbreviations are names: every word there is Latin.

A question about a topic rather than a fact ("что случилось с ключевой ставкой?", "какая сейчас
ставка?": :func:`rag.sentences.question_intent` calls it a story) has many posts that answer it
and score alike, so for it the margin gives way to holding every word of the question (lemmas).

So a post is a source when its dense score is at least ``sure_score``
(``TGRAG_QA_SURE_SCORE``), or when it is at least ``min_score`` (``TGRAG_QA_MIN_SCORE``), at
least ``min_margin`` (``TGRAG_QA_MIN_MARGIN``) above the background (a story: holds all the
question's words) and holds at least
``name_share`` (``TGRAG_QA_MIN_NAME_SHARE``) of the question's specifics (a question without
any passes that test; a share of 0 turns off both word tests).  With fewer than
``BACKGROUND_RANK`` posts in the index there is no background to compare with, and the margin is
not required.

Names are matched by the search's stems (:class:`rag.sparse.Analyzer`: "Москве" meets
"Москва"), figures as whole numbers, Latin words by stem or as written ("C++").  The defaults were
chosen on the news set's questions with and without an answer (``bench/qa_floor.py``,
docs/eval.md section 7).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.sentences import SentenceSelector, question_intent, question_specifics
from rag.sparse import Analyzer, shared_analyzer

BACKGROUND_RANK = 5  # the post whose score is the question's background level, at the least
BACKGROUND_DEPTH = 10  # the hits the background is looked for in (QAEngine fetches as many)
GROUP_DROP = 0.005  # a score drop that ends the group of posts on the question's subject
_NUMBER = re.compile(r"\d+")


def background(scores: Sequence[float]) -> float | None:
    """The question's background level, from the dense scores of its hits (best first).

    The ``BACKGROUND_RANK``-th best score, unless the top posts form a group on the question's
    subject (an article's paragraphs, several reports of one story) that a clear score drop
    (≥ ``GROUP_DROP``) ends further down, within the ``BACKGROUND_DEPTH`` best: then the first
    post after the largest such drop.  A right answer has to stand out from the posts about
    other things, not from its own siblings, which score alike for sharing its subject.
    ``None`` with fewer than ``BACKGROUND_RANK`` hits (no background, no margin required).
    """
    if len(scores) < BACKGROUND_RANK:
        return None
    top = list(scores[:BACKGROUND_DEPTH])
    # The drop before top[i], from the one before the BACKGROUND_RANK-th best on.
    after = max(range(BACKGROUND_RANK - 1, len(top)), key=lambda i: top[i - 1] - top[i])
    if top[after - 1] - top[after] >= GROUP_DROP:
        return top[after]
    return top[BACKGROUND_RANK - 1]


class RelevanceFloor:
    """Decides whether a retrieved post (dense score, text) is a source for a question."""

    def __init__(self, min_score: float, sure_score: float, name_share: float,
                 min_margin: float = 0.0, text_analyzer: Analyzer | None = None) -> None:
        self.min_score = min_score
        self.sure_score = sure_score
        self.name_share = name_share
        self.min_margin = min_margin
        self.analyzer = text_analyzer or shared_analyzer()

    def specifics(self, question: str) -> list[tuple[str, str]]:
        """``(kind, form)`` per specific of the question: ``number``, ``latin`` or ``name``."""
        return question_specifics(question, self.analyzer)

    def share(self, specifics: list[tuple[str, str]], text: str) -> float:
        """The share of ``specifics`` found in ``text`` (1.0 when there are none)."""
        if not specifics:
            return 1.0
        lowered = text.lower().replace("ё", "е")
        stems = set(self.analyzer.tokens(text))
        numbers = set(_NUMBER.findall(text))
        found = 0
        for kind, form in specifics:
            if kind == "number":
                found += form in numbers
            elif kind == "latin":
                found += form in lowered or self.analyzer.stem(form) in stems
            else:
                found += form in stems
        return found / len(specifics)

    def keeps(self, question: str, score: float, text: str,
              specifics: list[tuple[str, str]] | None = None,
              background: float | None = None) -> bool:
        """Whether a post with this dense ``score`` and ``text`` may answer ``question``.

        ``background``: the question's background level (:func:`background`; ``None`` for an
        index of fewer than ``BACKGROUND_RANK`` posts: no margin is required then).
        """
        if score >= self.sure_score:
            return True
        if score < self.min_score:
            return False
        wanted = self.specifics(question) if specifics is None else specifics
        if self.share(wanted, text) < self.name_share:
            return False
        if question_intent(question).story and self.name_share > 0:  # 0: words never needed
            terms = SentenceSelector(text_analyzer=self.analyzer).question_terms(question)
            return set(terms) <= set(self.analyzer.tokens(text))
        return background is None or score - background >= self.min_margin
