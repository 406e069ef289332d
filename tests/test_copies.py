"""Near-duplicate collapsing in search and "more like this", on a corpus of cross-posts.

Modelled on the shared news set: one report posted by four channels, each with its own markup and
"Подписаться" footer, minutes apart; an ad a channel repeats a week later; daily template posts
that look alike but are not copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.posts import similar_posts
from rag.search import PostHit, PostSearcher
from tests.conftest import module_settings

NEWS = ("Запрет на экспорт бензина из России отменят досрочно, ещё до конца года: документы уже "
        "готовят, заявил вице-премьер Александр Новак. Ограничения вводили из-за плановых "
        "ремонтов на нефтеперерабатывающих заводах и роста биржевых цен на топливо.")
AD = ("Напоминаем про розыгрыш смартфона среди подписчиков канала. Подробности и условия "
      "участия в закреплённом посте, итоги подведём в пятницу вечером.")
CHANNELS = {
    1: ("ranshe_vseh", "Раньше всех. Ну почти."),
    2: ("msk_ogonek", "Москва с огоньком"),
    3: ("topor_live", "Топор Live"),
    4: ("banksta", "Банкста"),
}


def at(day: int, minute: int = 0) -> int:
    return int(datetime(2024, 11, day, 8, minute, tzinfo=UTC).timestamp())


def post(channel: int, message_id: int, date: int, text: str) -> Post:
    username, title = CHANNELS[channel]
    return Post(channel_id=channel, channel=username, channel_title=title,
                message_id=message_id, date=date, text=text)


POSTS = [
    # The report: the original at 08:00, then three re-posts.
    post(1, 10, at(22), NEWS),
    post(2, 20, at(22, 40), "⚡️" + NEWS.replace("отменят досрочно", "**отменят досрочно**")
         + "\n\n🔴 [Подписаться](https://t.me/msk_ogonek) | [Прислать новость](https://t.me/m_bot)"),
    post(3, 30, at(22, 55), NEWS + "\n\n[👉 Топор Live. Подписаться](https://t.me/+AbCdEf12)"),
    post(4, 40, at(22, 20), NEWS + " @banksta"),
    # Related, not copies.
    post(4, 41, at(21), "Биржевые цены на бензин Аи-95 обновили рекорд на фоне ремонтов "
         "нефтеперерабатывающих заводов. @banksta"),
    post(1, 11, at(23), "Правительство обсуждает продление запрета на экспорт дизельного топлива "
         "для производителей, сообщили источники."),
    # An ad repeated a week later by the same channel.
    post(2, 21, at(10), AD + "\n\n🔴 [Подписаться](https://t.me/msk_ogonek)"),
    post(2, 22, at(17), AD + "\n\n🔴 [Подписаться](https://t.me/msk_ogonek)"),
    # Daily template posts: alike, but other numbers.
    post(2, 23, at(14), "Колонка котировок: курс доллара на вечер 96,5 рубля, евро 104,6 рубля, "
         "биткоин 67380 долларов, нефть Brent 74 доллара."),
    post(2, 24, at(15), "Колонка котировок: курс доллара на вечер 99,1 рубля, евро 105,2 рубля, "
         "биткоин 91410 долларов, нефть Brent 72 доллара."),
    # Unrelated.
    post(3, 31, at(18), "В Москве открылись три новые станции метро на Большой кольцевой линии."),
    post(3, 32, at(19), "Электробусы вышли на пять новых маршрутов в спальных районах."),
]
COPY_KEYS = {"id", "channel", "channel_id", "channel_title", "message_id", "link", "date"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    index = Index.open(module_settings(tmp_path_factory, "copies"), purpose="pytest copies")
    try:
        assert PostPipeline(index).ingest(POSTS).new == len(POSTS)
        yield index
    finally:
        index.close()


def ids(hits: list[PostHit]) -> list[str]:
    return [h.id for h in hits]


def everything(hits: list[PostHit]) -> list[str]:
    return [i for h in hits for i in [h.id, *(c.id for c in h.copies)]]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_cross_posts_collapse_into_the_original(filled: Index, mode: str) -> None:
    hits = PostSearcher(filled).search("отменят запрет на экспорт бензина", k=5, mode=mode)
    top = hits[0]
    assert top.id == "tg:1:10"  # the oldest copy, whichever copy scored best
    assert ids(top.copies) == ["tg:4:40", "tg:2:20", "tg:3:30"]  # oldest first
    data = top.to_dict()
    assert all(set(c) == COPY_KEYS for c in data["copies"])
    assert data["copies"][0] == {
        "id": "tg:4:40", "channel": "banksta", "channel_id": 4, "channel_title": "Банкста",
        "message_id": 40, "link": "https://t.me/banksta/40",
        "date": "2024-11-22T08:20:00+00:00"}
    # Every post at most once, as a hit or as a copy; related posts stay hits of their own.
    listed = everything(hits)
    assert len(listed) == len(set(listed))
    assert "tg:4:41" in ids(hits) or mode == "sparse"


def test_same_channel_repeats_collapse_and_templates_do_not(filled: Index) -> None:
    searcher = PostSearcher(filled)
    ad = searcher.search("розыгрыш смартфона", k=3, mode="hybrid")[0]
    assert (ad.id, ids(ad.copies)) == ("tg:2:21", ["tg:2:22"])
    rates = searcher.search("колонка котировок курс доллара", k=2, mode="hybrid")
    assert sorted(ids(rates)) == ["tg:2:23", "tg:2:24"]
    assert all(not h.copies for h in rates)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_k_counts_collapsed_hits_and_offsets_too(filled: Index, mode: str) -> None:
    searcher = PostSearcher(filled)
    distinct = len(POSTS) - 4  # three re-posts and one ad repeat collapse
    whole = searcher.search("новости", k=distinct, mode=mode)
    assert len(whole) == distinct and whole.next_offset is None
    assert sorted(everything(whole)) == sorted(f"tg:{p.channel_id}:{p.message_id}" for p in POSTS)
    first = searcher.search("новости", k=4, mode=mode)
    second = searcher.search("новости", k=4, mode=mode, offset=4)
    assert first.next_offset == 4 and second.next_offset is None  # 8 distinct in all
    assert ids(second) == ids(searcher.search("новости", k=8, mode=mode)[4:8])
    assert not set(everything(first)) & set(everything(second))


def test_collapsing_can_be_turned_off(filled: Index) -> None:
    off = replace(filled, settings=filled.settings.model_copy(
        update={"collapse_duplicates": False}), lock=None)
    hits = PostSearcher(off).search("отменят запрет на экспорт бензина", k=4, mode="sparse")
    assert sorted(ids(hits)) == ["tg:1:10", "tg:2:20", "tg:3:30", "tg:4:40"]
    assert all(not h.copies for h in hits)
    found = similar_posts(off, "ranshe_vseh", 10, k=3)
    assert found.copies == [] and "tg:2:20" in ids(found.hits)


def test_similar_posts_list_the_source_copies_apart(filled: Index) -> None:
    found = similar_posts(filled, "ranshe_vseh", 10, k=3)
    assert ids(found.copies) == ["tg:4:40", "tg:2:20", "tg:3:30"]
    assert len(found.hits) == 3
    assert not {"tg:1:10", "tg:4:40", "tg:2:20", "tg:3:30"} & set(everything(found.hits))
    data = found.to_dict()
    assert list(data) == ["results", "copies"]
    assert all(set(c) == COPY_KEYS for c in data["copies"])
    # From a re-post: the original is one of its copies, not a "similar" post.
    again = similar_posts(filled, "msk_ogonek", 20, k=3)
    assert ids(again.copies) == ["tg:1:10", "tg:4:40", "tg:3:30"]
    # The repeated ad collapses among the similar posts of another ad-like post.
    ad = similar_posts(filled, "msk_ogonek", 21, k=10)
    assert ids(ad.copies) == ["tg:2:22"] and "tg:2:22" not in everything(ad.hits)
