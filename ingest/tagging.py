"""Tag extractors: a pipeline stage that sets ``tags`` and ``tag_source`` on each post.

It runs *before* splitting, so every chunk inherits its post's tags.  ``KeywordTagger`` works
offline: the post's own hashtags first, then its most frequent content words.  The GigaChat tagger
(an LLM extractor) plugs in at the same place.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from llama_index.core.extractors import BaseExtractor
from llama_index.core.schema import BaseNode

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
""".split())


def normalize_tag(tag: str) -> str:
    """Lowercase, ``ё``→``е``, spaces→``_``, no ``#``: the one tag spelling used everywhere."""
    tag = tag.strip().lstrip("#").lower().replace("ё", "е")
    tag = re.sub(r"\s+", "_", tag)
    return tag[:40]


def keyword_tags(text: str, max_tags: int = 5) -> list[str]:
    """Hashtags in order of appearance, then the most frequent content words."""
    tags: list[str] = []
    for match in HASHTAG.finditer(text):
        tag = normalize_tag(match.group(1))
        if tag not in tags:
            tags.append(tag)
    clean = URL.sub(" ", HASHTAG.sub(" ", text))
    counts = Counter(
        w for w in (normalize_tag(m.group(0)) for m in WORD.finditer(clean)) if w not in STOPWORDS
    )
    for word, _ in counts.most_common():
        if len(tags) >= max_tags:
            break
        if word not in tags:
            tags.append(word)
    return tags[:max_tags]


class KeywordTagger(BaseExtractor):
    """Offline tagger: no credentials, deterministic, ``tag_source="keywords"``."""

    max_tags: int = 5

    @classmethod
    def class_name(cls) -> str:
        return "KeywordTagger"

    async def aextract(self, nodes: Sequence[BaseNode]) -> list[dict[str, Any]]:
        return [
            {"tags": keyword_tags(node.get_content(), self.max_tags), "tag_source": "keywords"}
            for node in nodes
        ]
