"""The LLM tag extractor: 3–7 Russian tags per post from GigaChat (or any LlamaIndex LLM).

A pipeline stage like ``KeywordTagger`` (it runs before splitting, so chunks inherit the tags):

* the prompt asks for a JSON list; the answer is parsed even inside code fences or prose, and one
  follow-up asks again when it is not a list;
* a refusal (``finish_reason="blacklist"``), a second unreadable answer or an LLM failure falls back
  to the keyword tagger for that post, recorded as ``tag_source="keywords"``;
* answers are cached in Redis under ``sha256(model + post text)``: re-ingesting or retrying never
  asks the LLM again about the same text, and identical texts in one batch are asked about once.
  Refusals and unreadable answers are cached too (the same text gets the same refusal); transient
  failures (timeouts, 5xx) are not, so a later run retries;
* after ``MAX_CONSECUTIVE_FAILURES`` LLM errors in a row (wrong credentials, GigaChat down) the
  tagger stops calling the LLM for the rest of the run instead of failing every post slowly.

The post's own hashtags come first, then the LLM's tags.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import redis
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.extractors import BaseExtractor
from llama_index.core.llms import LLM
from llama_index.core.schema import BaseNode
from pydantic import PrivateAttr

from ingest.tagging import KeywordTagger, RedisDocFrequency, hashtags, normalize_tag
from rag.errors import LLMError
from rag.ids import namespace
from rag.llm import build_llm, finish_reason
from rag.settings import Settings

log = logging.getLogger("tgrag.tagging")

PROMPT_VERSION = "v1"  # part of the cache key: a new prompt re-tags
MAX_CONSECUTIVE_FAILURES = 3
MAX_POST_CHARS = 4000  # the beginning of a long post says what it is about
SYSTEM_PROMPT = (
    "Ты присваиваешь теги постам из Telegram-каналов. Ответь только JSON-списком из 3–7 тегов "
    "на русском языке, без пояснений. Тег — существительное или короткое словосочетание "
    "(до трёх слов) в начальной форме, в нижнем регистре, слова соединены подчёркиванием; "
    "названия компаний и мест тоже теги. "
    'Пример ответа: ["депозит", "совкомбанк", "высокая_ставка"]'
)
RETRY_PROMPT = (
    'Ответ должен быть только JSON-списком строк, например ["депозит", "совкомбанк"]. '
    "Повтори теги в этом формате."
)
FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
LIST = re.compile(r"\[[^\[\]]*\]", re.S)


def parse_tags(text: str, max_tags: int = 7) -> list[str] | None:
    """Tags from an LLM answer: a JSON (or Python) list, bare or inside code fences or prose.

    ``None`` when no list of strings is found.  Tags are normalized, deduplicated and limited.
    """
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    for chunk in candidates:
        chunk = chunk.strip()
        found = _load_list(chunk)
        if found is None:
            for match in LIST.finditer(chunk):
                found = _load_list(match.group(0))
                if found is not None:
                    break
        if found is not None:
            tags = clean_tags(found, max_tags)
            if tags:
                return tags
    return None


def _load_list(chunk: str) -> list[Any] | None:
    for load in (json.loads, ast.literal_eval):
        try:
            value = load(chunk)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            value = value.get("tags")
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def clean_tags(raw: Sequence[str], max_tags: int = 7) -> list[str]:
    tags: list[str] = []
    for item in raw:
        tag = normalize_tag(item).strip("_.,;:!?\"'")
        # 2..40 chars, at most three words, not a bare number
        # (normalize_tag truncates to 40: an overlong tag is a sentence, drop it instead)
        usable = (
            len(tag) >= 2 and len(item.strip()) <= 41 and tag.count("_") <= 2
            and not tag.replace("_", "").isdigit()
        )
        if usable and tag not in tags:
            tags.append(tag)
    return tags[:max_tags]


class TagCache:
    """LLM tagging results in Redis, keyed by sha256 of model name + prompt version + text.

    Shared by every collection (``tgrag:tags:llm:*``): an answer depends on the model and the
    text only, so a second collection reuses what the first paid for.
    """

    def __init__(self, client: redis.Redis, model: str, prefix: str = "tgrag:tags:llm") -> None:
        self.r, self.model, self.prefix = client, model, prefix

    def key(self, text: str) -> str:
        digest = hashlib.sha256(
            f"{self.model}\x00{PROMPT_VERSION}\x00{text}".encode("utf-8", "surrogatepass")
        ).hexdigest()
        return f"{self.prefix}:{digest}"

    def get(self, text: str) -> dict[str, Any] | None:
        raw = self.r.get(self.key(text))
        return json.loads(raw) if raw else None

    def put(self, text: str, value: dict[str, Any]) -> None:
        self.r.set(self.key(text), json.dumps(value, ensure_ascii=False))


class LLMTagger(BaseExtractor):
    """Tags posts with an LLM; falls back to keywords.  Works with any LlamaIndex LLM."""

    max_tags: int = 7
    source: str = "gigachat"  # tag_source of LLM tags
    concurrency: int = 1

    _llm: LLM = PrivateAttr()
    _cache: TagCache | None = PrivateAttr(default=None)
    _fallback: KeywordTagger = PrivateAttr()
    _failures: int = PrivateAttr(default=0)
    _calls: int = PrivateAttr(default=0)

    def __init__(
        self,
        llm: LLM,
        *,
        cache: TagCache | None = None,
        fallback: KeywordTagger | None = None,
        **data: Any,
    ) -> None:
        super().__init__(**data)
        self._llm = llm
        self._cache = cache
        self._fallback = fallback or KeywordTagger()

    @classmethod
    def class_name(cls) -> str:
        return "LLMTagger"

    @property
    def llm_calls(self) -> int:
        """LLM requests made by this tagger (tests check the cache with it)."""
        return self._calls

    async def aextract(self, nodes: Sequence[BaseNode]) -> list[dict[str, Any]]:
        texts = [node.get_content() for node in nodes]
        slots = asyncio.Semaphore(max(1, self.concurrency))

        async def one(text: str) -> list[str] | None:
            async with slots:
                return await self._llm_tags(text)

        # Identical texts (forwards, cross-posts) in one batch: one question, not one each (the
        # cache cannot help, the questions would run concurrently).
        unique = list(dict.fromkeys(texts))
        answers = dict(zip(unique, await asyncio.gather(*(one(t) for t in unique)), strict=True))
        results = [answers[t] for t in texts]
        fallback_texts = [t for t, r in zip(texts, results, strict=True) if r is None]
        keyword = iter(self._fallback.tag_texts(fallback_texts)) if fallback_texts else iter(())
        out: list[dict[str, Any]] = []
        for text, tags in zip(texts, results, strict=True):
            if tags is None:
                out.append({"tags": next(keyword), "tag_source": "keywords"})
            else:
                merged = list(dict.fromkeys(hashtags(text) + tags))[: self.max_tags]
                out.append({"tags": merged, "tag_source": self.source})
        return out

    async def _llm_tags(self, text: str) -> list[str] | None:
        """The LLM's tags for a text, or ``None`` to use keywords."""
        if not text.strip():
            return None
        cached = self._cache.get(text) if self._cache else None
        if cached is not None:
            return cached.get("tags")
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            return None
        try:
            tags, outcome = await self._ask(text)
        except Exception as exc:  # any LLM backend: ours raise LLMError, others their own
            self._failures += 1
            level = logging.ERROR if self._failures == MAX_CONSECUTIVE_FAILURES else logging.WARNING
            log.log(level, "LLM tagging failed, using keywords: %s", exc)
            return None
        self._failures = 0
        if self._cache:
            self._cache.put(text, {"tags": tags, "outcome": outcome})
        return tags

    async def _ask(self, text: str) -> tuple[list[str] | None, str]:
        messages = [
            ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT),
            ChatMessage(role=MessageRole.USER, content=f"Пост:\n{text[:MAX_POST_CHARS]}"),
        ]
        for attempt in range(2):
            self._calls += 1
            response = await self._llm.achat(messages)
            if finish_reason(response) == "blacklist":
                return None, "refused"
            answer = response.message.content or ""
            tags = parse_tags(answer, self.max_tags)
            if tags:
                return tags, "ok"
            if attempt == 0:
                messages += [
                    ChatMessage(role=MessageRole.ASSISTANT, content=answer),
                    ChatMessage(role=MessageRole.USER, content=RETRY_PROMPT),
                ]
        return None, "unreadable"


# GigaChatTagger is the name the issue uses; the class is backend-neutral.
GigaChatTagger = LLMTagger


def keyword_tagger(settings: Settings, client: redis.Redis | None) -> KeywordTagger:
    """The offline tagger, with corpus-wide document frequencies in Redis when ``client`` is
    given (tags then do not depend on which posts happen to share a batch)."""
    df = RedisDocFrequency(client, f"{namespace(settings.collection)}:tags:df") if client else None
    return KeywordTagger(df=df)


def build_tagger(
    settings: Settings, client: redis.Redis | None, llm: LLM | None = None
) -> BaseExtractor:
    """The tagger for the settings: the LLM tagger when an LLM is configured (``llm``, or one
    built from the settings), else keywords; both with corpus-wide statistics (see above)."""
    keywords = keyword_tagger(settings, client)
    if not settings.llm_tagging:
        return keywords
    try:
        llm = llm or build_llm(settings)
    except LLMError as exc:
        log.warning("no LLM for tagging (%s); tagging with keywords", exc)
        return keywords
    if llm is None:
        return keywords
    model = settings.gigachat_model if settings.llm == "gigachat" else settings.openai_model
    return LLMTagger(
        llm,
        cache=TagCache(client, f"{settings.llm}:{model}") if client else None,
        fallback=keywords,
        source="gigachat" if settings.llm == "gigachat" else "llm",
        concurrency=settings.llm_concurrency,
    )
