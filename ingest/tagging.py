"""Tag extractors: a pipeline stage that sets ``tags`` and ``tag_source`` on each post.

It runs *before* splitting, so every chunk inherits its post's tags.  ``KeywordTagger`` works
offline: the post's own hashtags first, then its most distinctive lemmas.  The LLM tagger
(``ingest.llm_tagging``) plugs in at the same place and falls back to this one.

Keywords are lemmatized with pymorphy3 ("ставку", "ставки" → "ставка"; "ключевую ставку" →
"ключевая_ставка") and ranked by tf·idf.  Document frequencies come from a :class:`DocFrequency`:
:class:`RedisDocFrequency` keeps them for the whole corpus in Redis (each distinct post text counted
once, so re-ingests and retries do not inflate them); without Redis, :class:`BatchDocFrequency`
counts over the batch being tagged.  The Redis one is what ``build_tagger`` wires in: tags then
stop depending on which posts happen to share a batch.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

import redis
from llama_index.core.extractors import BaseExtractor
from llama_index.core.schema import BaseNode
from pydantic import PrivateAttr

from rag.tags import MAX_TAG_CHARS, normalize_tag  # normalize_tag: re-exported, the spelling rule

HASHTAG = re.compile(r"#(\w{2,40})")
WORD = re.compile(r"[A-Za-zА-Яа-яЁё][A-Za-zА-Яа-яЁё\-]{3,}")
URL = re.compile(r"https?://\S+|t\.me/\S+")
# Frequent Russian words that make useless tags (function words and news boilerplate).
STOPWORDS = frozenset("""
это этот эта эти того тому этом этого этой этих который которая которые которого которой
также более менее очень можно нужно было были будет будут быть есть если когда чтобы потому
после перед между через только уже еще ещё даже всего всех всем свой своей свои своих нашей
наш наши ваши ваш него неё нее них ними него нему тоже тогда где здесь там тут почему зачем
какой какая какие такой такая такие каждый каждая сегодня вчера завтра теперь сейчас время
года году годы лет день дня дней раз всё весь вся подписаться подписывайтесь канал канала
новости новость читать подробнее источник фото видео ссылка https http www com
the and for with that this from have will
""".split())  # noqa: SIM905 (a word list reads better as text)
# Adjectives too generic to make a tag phrase ("новая_станция" says no more than "станция").
GENERIC_ADJECTIVES = frozenset("""
новый первый последний другой большой крупный главный нынешний текущий прошлый следующий
весь свой такой который каждый один этот тот самый любой разный целый
""".split())  # noqa: SIM905
# Punctuation that ends a phrase: an adjective before it does not qualify the noun after it.
PHRASE_BREAK = re.compile(r"[.,;:!?()«»\"\n—–]")


@lru_cache(maxsize=1)
def _morph() -> Any:
    import pymorphy3

    return pymorphy3.MorphAnalyzer()


@lru_cache(maxsize=200_000)
def _parse(word: str) -> tuple[str, str | None, str | None]:
    """(lemma, part of speech, gender) of a lowercase word; cached: posts repeat their words."""
    p = _morph().parse(word)[0]
    return p.normal_form, _interned(p.tag.POS), _interned(p.tag.gender)


def _interned(grammeme: str | None) -> str | None:
    # pymorphy3 makes a new string object at every access to a tag's attribute: the cache above
    # kept ~3 of them a word, 20 MB at the news set's 100k words (docs/benchmarks.md); there are
    # a few dozen distinct values, so one shared copy each.
    return None if grammeme is None else sys.intern(str(grammeme))


@lru_cache(maxsize=50_000)
def _agree(adjective: str, gender: str | None) -> str | None:
    """The nominative singular of an adjective in a gender: ("ключевой", femn) → "ключевая"."""
    p = _morph().parse(adjective)[0]
    form = p.inflect({g for g in (gender, "sing", "nomn") if g})
    return form.word if form else None


def terms(text: str) -> list[str]:
    """Candidate tags of a text: noun and Latin lemmas, and adjective+noun pairs, in order."""
    clean = URL.sub(" ", HASHTAG.sub(" ", text))
    out: list[str] = []
    prev_adj: str | None = None
    prev_end = 0
    for match in WORD.finditer(clean):
        if PHRASE_BREAK.search(clean, prev_end, match.start()):
            prev_adj = None
        prev_end = match.end()
        if len(match.group(0)) > MAX_TAG_CHARS:
            # Not a word but a run of letters (a space-free blob): no tag, and never parsed, so
            # neither the parse cache nor the document frequencies keep a 65 KB "lemma".
            prev_adj = None
            continue
        word = match.group(0).lower().replace("ё", "е")
        lemma, pos, gender = _parse(word)
        lemma = normalize_tag(lemma)
        if pos == "NOUN" or (pos is None and word.isascii()):
            if lemma not in STOPWORDS and len(lemma) >= 3:
                out.append(lemma)
                if prev_adj and pos == "NOUN":
                    adj = _agree(prev_adj, gender)
                    if adj:
                        out.append(normalize_tag(f"{adj} {lemma}"))
            prev_adj = None
        elif pos in ("ADJF", "PRTF") and lemma not in GENERIC_ADJECTIVES:
            prev_adj = lemma
        else:
            prev_adj = None
    return out


def hashtags(text: str) -> list[str]:
    """The post's own hashtags, normalized, in order of appearance."""
    tags: list[str] = []
    for match in HASHTAG.finditer(text):
        tag = normalize_tag(match.group(1))
        if tag not in tags:
            tags.append(tag)
    return tags


class DocFrequency(Protocol):
    """Corpus statistics for tf·idf: how many posts contain each term."""

    def add(self, key: str, terms: Iterable[str]) -> None: ...

    def lookup(self, terms: Iterable[str]) -> tuple[int, dict[str, int]]: ...


class BatchDocFrequency:
    """Document frequencies over the texts added to this object (one batch, or a test)."""

    def __init__(self) -> None:
        self.docs = 0
        self.df: Counter[str] = Counter()
        self._seen: set[str] = set()

    def add(self, key: str, terms: Iterable[str]) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.docs += 1
            self.df.update(set(terms))

    def lookup(self, terms: Iterable[str]) -> tuple[int, dict[str, int]]:
        return self.docs, {t: self.df[t] for t in terms}


class RedisDocFrequency:
    """Document frequencies of the whole corpus in Redis, each distinct text counted once."""

    def __init__(self, client: redis.Redis, prefix: str = "tgrag:tags:df") -> None:
        self.r = client
        self.seen, self.df, self.n = f"{prefix}:seen", f"{prefix}:terms", f"{prefix}:docs"

    def add(self, key: str, terms: Iterable[str]) -> None:
        if not self.r.sadd(self.seen, key):
            return  # this text was counted before (a re-ingest or a retry)
        pipe = self.r.pipeline()
        pipe.incr(self.n)
        for term in set(terms):
            pipe.hincrby(self.df, term, 1)
        pipe.execute()

    def lookup(self, terms: Iterable[str]) -> tuple[int, dict[str, int]]:
        names = list(dict.fromkeys(terms))
        pipe = self.r.pipeline()
        pipe.get(self.n)
        pipe.hmget(self.df, names) if names else pipe.echo("")
        n, counts = pipe.execute()
        values = counts if names else []
        return int(n or 0), {t: int(v or 0) for t, v in zip(names, values, strict=True)}


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def rank_terms(found: list[str], docs: int, df: dict[str, int], limit: int) -> list[str]:
    """Terms by sublinear tf · smoothed idf (without statistics: by frequency, then position)."""
    tf = Counter(found)
    first = {t: i for i, t in reversed(list(enumerate(found)))}

    def score(term: str) -> tuple[float, int]:
        idf = math.log((docs + 1) / (df.get(term, 0) + 1)) + 1
        bonus = 1.5 if "_" in term else 1.0  # a phrase says more than either of its words
        return (-(1 + math.log(tf[term])) * idf * bonus, first[term])

    return sorted(tf, key=score)[:limit]


def keyword_tags(text: str, max_tags: int = 5, df: DocFrequency | None = None) -> list[str]:
    """Hashtags in order of appearance, then the most distinctive lemmas of the text."""
    tags = hashtags(text)
    found = terms(text)
    docs, counts = df.lookup(found) if df else (0, {})
    for term in rank_terms(found, docs, counts, max_tags + len(tags)):
        if len(tags) >= max_tags:
            break
        if term not in tags:
            tags.append(term)
    return tags[:max_tags]


class KeywordTagger(BaseExtractor):
    """Offline tagger: no credentials, deterministic, ``tag_source="keywords"``."""

    max_tags: int = 5
    _df: DocFrequency | None = PrivateAttr(default=None)

    def __init__(self, df: DocFrequency | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._df = df

    @classmethod
    def class_name(cls) -> str:
        return "KeywordTagger"

    def tag_texts(self, texts: Sequence[str]) -> list[list[str]]:
        """Tags for several texts; their terms count in the document frequencies first."""
        df = self._df or BatchDocFrequency()
        for text in texts:
            df.add(text_key(text), terms(text))
        return [keyword_tags(text, self.max_tags, df) for text in texts]

    async def aextract(self, nodes: Sequence[BaseNode]) -> list[dict[str, Any]]:
        tags = self.tag_texts([node.get_content() for node in nodes])
        return [{"tags": t, "tag_source": "keywords"} for t in tags]
