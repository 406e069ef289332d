"""The ``words`` rule: every word and every quoted phrase of the query is in the post.

Words are compared as the sparse index compares them (``rag.sparse.Analyzer``: lowercase, ``ё``→
``е``, stopwords dropped, a Cyrillic word lemmatized with pymorphy3 and the lemma stemmed), so
"ставки" matches "ставку" and "шёл" matches "идти".  A phrase in quotes (``"…"``, ``«…»``,
``“…”``) matches when its stems follow each other in the post; stopwords are dropped on both
sides, so ``"ставки по вкладам"`` matches "ставки по вкладам" and "ставок по вкладам".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.errors import InputError
from rag.sparse import Analyzer

_QUOTED = re.compile(r'"([^"]*)"|«([^»]*)»|“([^”]*)”')


def _analyzer() -> Analyzer:
    from rag.sparse import shared_analyzer

    return shared_analyzer()  # one per process, its stem cache shared with the snippets


@dataclass(frozen=True, slots=True)
class WordsRule:
    terms: tuple[str, ...]  # stems that must each appear somewhere
    phrases: tuple[tuple[str, ...], ...]  # stem sequences that must appear in order

    @classmethod
    def parse(cls, query: str, analyzer: Analyzer | None = None) -> WordsRule:
        """The rule of ``query``; an :class:`InputError` when nothing in it can match."""
        analyzer = analyzer or _analyzer()
        phrases: list[tuple[str, ...]] = []
        for match in _QUOTED.finditer(query):
            stems = tuple(analyzer.tokens(next(g for g in match.groups() if g is not None)))
            if stems:
                phrases.append(stems)
        rest = _QUOTED.sub(" ", query).replace('"', " ")
        terms = tuple(dict.fromkeys(analyzer.tokens(rest)))
        if not terms and not phrases:
            raise InputError(f"the query {query!r} has no words to match",
                             hint="words of two or more letters that are not stopwords "
                                  "(и, в, the, …)")
        return cls(terms, tuple(dict.fromkeys(phrases)))

    @property
    def stems(self) -> frozenset[str]:
        """Every stem of the rule (what the snippet highlights)."""
        return frozenset(self.terms) | frozenset(s for p in self.phrases for s in p)

    def matches(self, stems: Sequence[str]) -> bool:
        """Whether a post whose stems (in order, ``Analyzer.tokens``) are ``stems`` matches."""
        present = set(stems)
        if not all(t in present for t in self.terms):
            return False
        return all(_contains(stems, phrase) for phrase in self.phrases)


def _contains(stems: Sequence[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    first = phrase[0]
    return any(stems[i] == first and tuple(stems[i:i + n]) == phrase
               for i in range(len(stems) - n + 1))
