"""Sentence boundaries for the splitter: NLTK's Punkt, loaded without what Punkt never uses.

LlamaIndex's ``SentenceSplitter`` cuts a long post's paragraphs into sentences with NLTK's
untrained ``PunktSentenceTokenizer``.  Its default path (``llama_index.core.utils.globals_helper``)
runs ``import nltk``, whose package ``__init__`` imports every NLTK subpackage and with them SciPy,
scikit-learn and pandas, which NLTK only uses optionally (each of those imports sits in a
``try``/``except ImportError``): +130 MB resident in an ingest, at the first post long enough to be
split, 115 MB of it those three (docs/benchmarks.md, "Memory, Redis and reused vectors").  Punkt
needs none of them, so NLTK is imported here with the ones not loaded yet held off — for the
importing thread only, and only during that import (an import that fails the way NLTK expects when
they are not installed); any later ``import scipy`` works as usual.  The tokenizer and the way its
spans become sentences are LlamaIndex's own, so the chunks are the same as before.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from functools import lru_cache
from typing import Any

from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer_internal

# What NLTK's __init__ would pull in for features we never use (collocation statistics,
# scikit-learn classifiers, a transition parser).
HELD_OFF = frozenset({"scipy", "sklearn", "pandas"})


class _HoldOff(importlib.abc.MetaPathFinder):
    """Makes ``HELD_OFF`` packages unimportable in one thread (a finder first in line)."""

    def __init__(self, thread: int) -> None:
        self.thread = thread

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if threading.get_ident() == self.thread and fullname.partition(".")[0] in HELD_OFF:
            raise ModuleNotFoundError(f"{fullname} is held off while NLTK loads", name=fullname)
        return None


@lru_cache(maxsize=1)
def punkt() -> Any:
    """The process's one untrained Punkt tokenizer (what LlamaIndex's default uses)."""
    finder = _HoldOff(threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        from nltk.tokenize import PunktSentenceTokenizer
    finally:
        sys.meta_path.remove(finder)
    return PunktSentenceTokenizer()


def punkt_sentences(text: str) -> list[str]:
    """``text`` cut into sentences exactly as ``SentenceSplitter``'s default tokenizer cuts it."""
    return split_by_sentence_tokenizer_internal(text, punkt())
