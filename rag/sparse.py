"""The lexical half of hybrid search: text → sparse BM25 vector, for Russian (and English).

Analysis: lowercase, ``ё``→``е``, words of ≥ 2 letters or digits (the bm25s token pattern),
minus the bm25s Russian and English stopwords, then by script: a Cyrillic word is lemmatized with
pymorphy3 and the lemma stemmed with Snowball (PyStemmer); any other word gets the English
Snowball stem, so mixed posts ("релиз iPhone") work.  Lemma+stem beat stem alone on danetqa
(BM25 nDCG@10 0.752 vs 0.730, lemma alone 0.748; see ``docs/eval.md``); pymorphy3 costs ~3 ms
per passage, small next to the ~60 ms the embedding takes.

Term ids are a stable hash of the stem into ``[0, 2**31)``: there is no vocabulary to persist or to
keep in sync, so a server and local mode, or two ingest workers, always agree on the ids.

Values follow BM25 split in two:

* document side (``encode_document``): term frequency with BM25 saturation and length
  normalisation, ``tf·(k1+1) / (tf + k1·(1 − b + b·len/avg_len))``.  ``avg_len`` is a constant
  (a setting) rather than a corpus statistic, again so that nothing has to be kept in sync;
* query side (``encode_query``): 1.0 per unique term;
* IDF: applied by Qdrant at query time through the ``sparse`` vector's ``Modifier.IDF``.  Both a
  Qdrant server and qdrant-client's local mode implement it with the same BM25 formula
  ``ln((N − df + 0.5)/(df + 0.5) + 1)`` over the points that have a sparse vector (local mode keeps
  live counters in ``LocalCollection.sparse_vectors_idf``), so rankings agree in both modes.

The dot product of the two vectors, re-weighted by IDF, is then exactly BM25.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pymorphy3
import Stemmer
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import Field, PrivateAttr

from rag.store.base import SPARSE_METADATA_KEY, SparseVector

SPARSE_KEY = SPARSE_METADATA_KEY  # the node metadata key the store reads the vector from
# The bm25s default token pattern: runs of ≥ 2 word characters.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_CYRILLIC = re.compile(r"[а-я]")


def _bm25s_stopwords() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """bm25s's Russian and English stopword lists.

    They are plain tuples in ``bm25s/stopwords.py``; importing it the usual way runs the package's
    ``__init__``, which loads numba and scipy (≈ 0.5 s of CPU at every start of a process that
    only wants the lists), so the one file is loaded on its own.
    """
    try:
        package = importlib.util.find_spec("bm25s")
        path = Path(package.origin).with_name("stopwords.py")  # type: ignore[union-attr, arg-type]
        spec = importlib.util.spec_from_file_location("_bm25s_stopword_lists", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return tuple(module.STOPWORDS_RUSSIAN), tuple(module.STOPWORDS_EN)
    except (AttributeError, ImportError, OSError, TypeError):  # another layout: the usual import
        from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_RUSSIAN

        return tuple(STOPWORDS_RUSSIAN), tuple(STOPWORDS_EN)


STOPWORDS_RUSSIAN, STOPWORDS_EN = _bm25s_stopwords()
# bm25s's Russian list lacks a few very frequent function words (and lemmas such as "который").
_EXTRA_RU = {"это", "который", "весь", "свой", "также", "этот", "мочь", "наш", "ваш", "оно"}
STOPWORDS = frozenset(STOPWORDS_RUSSIAN) | frozenset(STOPWORDS_EN) | _EXTRA_RU
HASH_SPACE = 2**31

SparsePair = tuple[list[int], list[float]]


def term_id(term: str) -> int:
    """Stable id of a term in ``[0, 2**31)`` (blake2b: the same on every machine and run)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HASH_SPACE


class Analyzer:
    """Text → stems: the one tokenization shared by documents and queries."""

    def __init__(self, lemmatize: bool = True) -> None:
        self.lemmatize = lemmatize
        self._ru = Stemmer.Stemmer("russian")
        self._en = Stemmer.Stemmer("english")
        # Stemming is the hot spot; word forms repeat a lot, so memoise per analyzer.
        self._stem_one = lru_cache(maxsize=200_000)(self._stem_uncached)

    def _stem_uncached(self, word: str) -> str:
        if not _CYRILLIC.search(word):
            return self._en.stemWord(word)
        if self.lemmatize:
            # The lemma joins forms the stemmer cannot (шёл/идти, людей/человек); stemming the
            # lemma then joins what pymorphy3 leaves apart or guesses differently for unknown
            # words.  Each step helped on danetqa.
            word = _morph().parse(word)[0].normal_form.replace("ё", "е")
            if word in STOPWORDS:  # "которых" → "который"
                return ""
        return self._ru.stemWord(word)

    def tokens(self, text: str) -> list[str]:
        """The stems of ``text`` in order, stopwords removed."""
        words = _TOKEN.findall(text.lower().replace("ё", "е"))
        stems = (self._stem_one(w) for w in words if w not in STOPWORDS)
        return [s for s in stems if s]

    def stem(self, word: str) -> str:
        """The stem ``tokens`` gives one word; ``""`` for a stopword."""
        word = word.lower().replace("ё", "е")
        return "" if word in STOPWORDS else self._stem_one(word)

    def spans(self, text: str) -> Iterator[tuple[int, int, str]]:
        """``(start, end, stem)`` of each word of ``text`` that ``tokens`` keeps, in order."""
        for match in _TOKEN.finditer(text):
            stem = self.stem(match.group())
            if stem:
                yield match.start(), match.end(), stem

    def matching_spans(self, text: str, wanted: frozenset[str]) -> list[tuple[int, int, str]]:
        """The :meth:`spans` whose stem is in ``wanted``, in order.

        Each distinct word is stemmed once, and a text none of whose words match (a dense hit
        without the query's words) is not walked a second time.
        """
        stems = {word: self.stem(word) for word in set(_TOKEN.findall(text))}
        if not any(stem in wanted for stem in stems.values() if stem):
            return []
        return [(m.start(), m.end(), stem) for m in _TOKEN.finditer(text)
                if (stem := stems[m.group()]) and stem in wanted]


class SparseEncoder(TransformComponent):
    """BM25 sparse vectors for chunks (a pipeline stage) and for queries.

    As a LlamaIndex transformation it runs after splitting and stores ``(indices, values)`` under
    ``node.metadata["_sparse"]``, which the store writes as the ``sparse`` vector.  The key
    is added to the node's excluded embed/LLM keys so it never reaches the embedding text.
    """

    k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation.")
    avg_len: float = Field(64.0, gt=0, description="Assumed average chunk length in terms.")
    _analyzer: Analyzer = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # The process's analyzer: its stem cache is what makes a query cheap after the first
        # ones, so every encoder (one is made per search) shares it.
        self._analyzer = shared_analyzer()

    @classmethod
    def class_name(cls) -> str:
        return "SparseEncoder"

    @property
    def analyzer(self) -> Analyzer:
        return self._analyzer

    def encode_document(self, text: str) -> SparsePair:
        """BM25-saturated term frequencies of a chunk (indices sorted, no duplicates)."""
        counts = _id_counts(self._analyzer.tokens(text))
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_len)
        indices = sorted(counts)
        values = [counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in indices]
        return indices, values

    def encode_query(self, text: str) -> SparseVector:
        """Unit weight per unique query term; Qdrant multiplies in the IDF."""
        indices = sorted(_id_counts(self._analyzer.tokens(text)))
        return SparseVector(indices=indices, values=[1.0] * len(indices))

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        for node in nodes:
            node.metadata[SPARSE_KEY] = self.encode_document(
                node.get_content(metadata_mode=MetadataMode.NONE)
            )
            for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
                if SPARSE_KEY not in keys:
                    keys.append(SPARSE_KEY)
        return nodes


@lru_cache(maxsize=1)
def shared_analyzer() -> Analyzer:
    """The process's one lemmatising :class:`Analyzer`: searches, snippets and ingests share its
    stem cache (bounded, thread-safe)."""
    return Analyzer()


@lru_cache(maxsize=1)
def _morph() -> pymorphy3.MorphAnalyzer:
    # Loading the dictionaries takes ~0.5 s and ~15 MB: once per process, and only when needed.
    return pymorphy3.MorphAnalyzer()


def morphology() -> pymorphy3.MorphAnalyzer:
    """The process's one pymorphy3 analyzer (rag.sentences reads its name tags)."""
    return _morph()


def _id_counts(tokens: list[str]) -> Counter[int]:
    # Two stems may share a hash bucket (rare in 2**31); their counts then simply add up.
    return Counter(term_id(t) for t in tokens)
