"""The relevance floor: which retrieved posts may answer a question, and when nothing can.

e5 cosines sit in a narrow band, and on 22k news posts a question the posts cannot answer ("кто
выиграл чемпионат мира по футболу 2018?") still finds posts about football at nearly the score
a real answer gets.  What such posts lack is the question's *specifics*: its figures (2018),
Latin-script words (Brent, iPhone) and names (capitalised words: Эверест, «Оскар», ЦБ).  So a
post is a source when

* its dense score is at least ``sure_score`` (``TGRAG_QA_SURE_SCORE``), or
* its dense score is at least ``min_score`` (``TGRAG_QA_MIN_SCORE``) and it contains at least
  ``name_share`` (``TGRAG_QA_MIN_NAME_SHARE``) of the question's specifics (a question without
  any passes on the dense score alone).

Names are matched by the search's stems (:class:`rag.sparse.Analyzer`: "Москве" meets
"Москва"), figures as whole numbers, Latin words by stem or as written ("C++").  The defaults were
chosen on the news set's answerable and no-answer questions (docs/eval.md, section 7).
"""

from __future__ import annotations

import re

from rag.snippets import analyzer
from rag.sparse import Analyzer

_NUMBER = re.compile(r"\d+")
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9+#]*")
# A capitalised Cyrillic word that does not open the question (that one is "Кто", "Какой" …),
# or an abbreviation in capitals anywhere (ЦБ, США, МФЦ).
_NAME = re.compile(r"(?<=[\s«\"(„“-])[А-ЯЁ][а-яё]+|(?<![\w])[А-ЯЁ]{2,}(?![\w])")


class RelevanceFloor:
    """Decides whether a retrieved post (dense score, text) is a source for a question."""

    def __init__(self, min_score: float, sure_score: float, name_share: float,
                 text_analyzer: Analyzer | None = None) -> None:
        self.min_score = min_score
        self.sure_score = sure_score
        self.name_share = name_share
        self.analyzer = text_analyzer or analyzer()

    def specifics(self, question: str) -> list[tuple[str, str]]:
        """``(kind, form)`` per specific of the question: ``number``, ``latin`` or ``name``."""
        out: dict[tuple[str, str], None] = {}
        for m in _NUMBER.finditer(question):
            out[("number", m.group(0))] = None
        for m in _LATIN.finditer(question):
            out[("latin", m.group(0).lower())] = None
        for m in _NAME.finditer(question):
            stem = self.analyzer.stem(m.group(0))
            if stem:
                out[("name", stem)] = None
        return list(out)

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
              specifics: list[tuple[str, str]] | None = None) -> bool:
        """Whether a post with this dense ``score`` and ``text`` may answer ``question``."""
        if score >= self.sure_score:
            return True
        if score < self.min_score:
            return False
        wanted = self.specifics(question) if specifics is None else specifics
        return self.share(wanted, text) >= self.name_share
