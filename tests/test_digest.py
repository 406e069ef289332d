"""Digests (rag.digest): the period, stories from copies and topics, ranking, summaries with
checked citations (offline and through the fake GigaChat), and the limits."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from api.services import Services
from ingest.jobs import stamp_tenant
from ingest.pipeline import PostPipeline
from rag.digest import DigestBuilder, parse_period
from rag.errors import InputError
from rag.index import Index
from rag.search import SearchFilters
from rag.settings import Settings
from tests.conftest import module_settings
from tests.digest_corpus import (
    METRO_IDS,
    RATE_2,
    RATE_IDS,
    acme_posts,
    at,
    day_posts,
)
from tests.fake_gigachat import FakeGigaChat, Reply, gigachat_llm

SINCE, UNTIL = at(0), at(23, 59)
CITATION = re.compile(r"\[(\d+)\]")


@pytest.fixture(scope="module")
def digest_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = module_settings(tmp_path_factory, "digest")
    with Index.open(settings, purpose="pytest digest") as index:
        PostPipeline(index).ingest(day_posts())
        PostPipeline(index.for_tenant("acme")).ingest(list(stamp_tenant(acme_posts(), "acme")))
    return settings


@pytest.fixture(scope="module")
def digest_index(digest_settings: Settings) -> Iterator[Index]:
    with Index.open(digest_settings, purpose="pytest digest") as index:
        yield index


def build(index: Index, llm: Any = None, **kw: Any) -> Any:
    return DigestBuilder(index, llm).build(SearchFilters(), since=SINCE, until=UNTIL, **kw)


def ids_of(story: Any) -> set[str]:
    return {q.id for p in story.posts for q in (p, *p.copies)}


# -- the period -----------------------------------------------------------------------------------


def test_period_from_durations_and_dates() -> None:
    now = at(12)
    assert parse_period("1d", now=now) == (now - 86400, now)
    assert parse_period("12h", now=now) == (now - 43200, now)
    assert parse_period("90m", now=now) == (now - 5400, now)
    assert parse_period("2w", now=now) == (now - 14 * 86400, now)
    assert parse_period(None, now=now) == (now - 86400, now)  # the default: the last day
    assert parse_period("2024-05-01", "2024-05-02") == (at(0, day=1), at(23, 59, day=2) + 59)
    assert parse_period("1d", "2024-05-02")[0] == at(23, 59, day=1) + 59  # a day back from until


@pytest.mark.parametrize(("since", "until", "needle"), [
    ("yesterday", None, "invalid --since"),
    ("0d", None, "empty period"),
    ("2024-05-03", "2024-05-02", "is after until"),
    ("400d", None, "at most 366 days"),
    ("1d", "2024-13-01", "invalid date"),
])
def test_bad_periods_say_what_to_write(since: str, until: str | None, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as err:
        parse_period(since, until)
    assert err.value.hint


# -- stories --------------------------------------------------------------------------------------


def test_copies_then_topics_make_the_stories(digest_index: Index) -> None:
    digest = build(digest_index, stories=100)
    stories = {frozenset(ids_of(s)): s for s in digest.stories}
    assert frozenset(RATE_IDS) in stories and frozenset(METRO_IDS) in stories
    rate = stories[frozenset(RATE_IDS)]
    # One entry per distinct text, oldest first; the copies (a footer added, an emoji in front)
    # hang under the original, the oldest of them.
    assert [p.id for p in rate.posts] == ["tg:2001:10", "tg:2003:30", "tg:2001:11"]
    assert [c.id for c in rate.posts[0].copies] == ["tg:2002:20", "tg:2004:40"]
    assert (rate.size, rate.channels) == (5, 4)
    # Everything else of the day is a story of its own; the day before, the group chat and the
    # other tenant's post are not in it.
    singles = [s for s in digest.stories if s.size == 1]
    assert len(singles) == 4 and digest.stories_total == 6
    everything = set().union(*(ids_of(s) for s in digest.stories))
    assert {"tg:2001:1", "tg:2007:70"}.isdisjoint(everything)
    assert not any(i.startswith("acme/") for i in everything)
    assert digest.posts == 12 and not digest.truncated


def test_ranked_by_size_and_engagement_relative_to_the_channel(digest_index: Index) -> None:
    digest = build(digest_index, stories=100)
    top = [(s.posts[0].id, round(s.score, 2)) for s in digest.stories[:4]]
    # rate: 5 posts at about their channels' usual engagement; the game post was read ~100× its
    # channel's median (clipped to 4); metro: 3 posts without counters (1 each).
    assert top[0] == ("tg:2001:10", 5.0)
    assert top[1] == ("tg:2005:50", 4.0)
    assert top[2] == ("tg:2004:41", 3.0)
    assert digest.stories[3].score <= 1.0
    assert [s.score for s in digest.stories] == sorted((s.score for s in digest.stories),
                                                       reverse=True)


def test_the_stories_cap_and_the_posts_cap(digest_index: Index) -> None:
    digest = build(digest_index, stories=2)
    assert len(digest.stories) == 2 and digest.stories_total == 6
    small = replace(digest_index, settings=digest_index.settings.model_copy(
        update={"digest_max_posts": 10}))
    capped = build(small)
    assert capped.truncated and capped.posts == 10
    # the newest are kept: the first two posts of the day (the rate story's start) are not
    everything = set().union(*(ids_of(s) for s in capped.stories))
    assert not {"tg:2001:10", "tg:2002:20"} & everything
    with pytest.raises(InputError, match="between 1 and 100"):
        build(digest_index, stories=0)


def test_channel_and_tag_filters(digest_index: Index) -> None:
    services = Services(digest_index, llm=None)
    wire = services.digest("2024-05-02", "2024-05-02", channels=["wire"])
    assert {p.id for s in wire.stories for p in s.posts} == {"tg:2003:30", "tg:2003:31"}
    # a group chat named by the filter is in its digest
    chat = services.digest("2024-05-02", "2024-05-02", channels=["chat_group"])
    assert [s.posts[0].id for s in chat.stories] == ["tg:2007:70"]
    assert services.digest("2024-05-02", "2024-05-02", tags=["no_such_tag"]).stories == []
    acme = services.for_tenant("acme").digest("2024-05-02", "2024-05-02")
    assert [s.posts[0].id for s in acme.stories] == ["acme/tg:2101:1"]


def test_the_stored_vectors_are_used_nothing_is_embedded(digest_index: Index,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a digest must not embed anything")

    model = type(digest_index.embedding.model)  # a pydantic model: patched on its class
    for name in ("get_text_embedding_batch", "get_text_embedding", "get_query_embedding"):
        monkeypatch.setattr(model, name, refuse)
    assert build(digest_index).stories


# -- summaries ------------------------------------------------------------------------------------


def test_extractive_summaries_cite_the_story_posts(digest_index: Index) -> None:
    digest = build(digest_index, stories=100)
    assert digest.mode == "extractive"
    for story in digest.stories:
        cited = {int(n) for n in CITATION.findall(story.summary)}
        assert cited and cited <= set(range(1, len(story.posts) + 1)), story.summary
        assert story.title and "[" not in story.title and "#" not in story.title
        assert story.mode == "extractive" and len(story.title) <= 91
    rate = digest.stories[0]
    # The title is one post's headline; the summary says more than the title, from the others.
    assert rate.title.startswith(("Банк России", "ЦБ поднял", "Ключевая ставка"))
    assert rate.summary.count("[") == 2
    data = digest.to_dict()
    assert list(data)[:3] == ["since", "until", "stories"]
    assert data["since"] == "2024-05-02T00:00:00+00:00"
    story = data["stories"][0]
    assert {"title", "summary", "posts"} <= set(story)
    assert {"id", "channel", "message_id", "link", "date"} <= set(story["posts"][0])
    assert story["posts"][0]["link"] == "https://t.me/econ_daily/10"
    assert story["posts"][0]["copies"][0]["id"] == "tg:2002:20"


@pytest.fixture
def summarising_gigachat() -> Iterator[FakeGigaChat]:
    """Answers as the prompt asks: a title line, then a summary citing the post that mentions
    Nabiullina by the number the prompt gave it, plus a made-up [9]."""

    def respond(request: dict[str, Any]) -> str:
        prompt = request["messages"][-1]["content"]
        numbers = re.findall(r"^\[(\d+)\] (.*)$", prompt, flags=re.M)
        blocks = re.split(r"\n\n(?=\[\d+\] )", prompt.split("\n\n", 1)[1])
        nabiullina = next((n for (n, _), b in zip(numbers, blocks, strict=True)
                           if "Набиуллина" in b), numbers[0][0])
        return (f"Заголовок: Ставка выросла до 18% [{nabiullina}]\n"
                f"Сводка: ЦБ поднял ставку до 18% [{nabiullina}], сославшись на инфляцию [9].")

    server = FakeGigaChat(respond).start()
    try:
        yield server
    finally:
        server.stop()


def test_llm_summaries_have_their_citations_checked(digest_index: Index,
                                                    summarising_gigachat: FakeGigaChat) -> None:
    digest = build(digest_index, gigachat_llm(summarising_gigachat), stories=3)
    assert summarising_gigachat.chat_calls == 3  # one request per story
    request = summarising_gigachat.requests[0]
    system = request["messages"][0]["content"]
    assert "дайджест" in system and "Заголовок:" in system and "[1]" in system
    rate = digest.stories[0]
    assert rate.mode == "generative" and digest.mode == "generative"
    assert rate.title == "Ставка выросла до 18%"
    # [9] was no source: removed; the Nabiullina post's number is its place in story.posts.
    assert rate.removed_citations == [9]
    wire = [p.text for p in rate.posts].index(RATE_2) + 1
    assert rate.summary == f"ЦБ поднял ставку до 18% [{wire}], сославшись на инфляцию."
    # the prompt lists each post with its channel and date, in Russian
    assert "Посты:" in request["messages"][1]["content"]
    assert "Экономика за день, 2024-05-02" in request["messages"][1]["content"]


def test_a_refusal_or_a_failing_llm_falls_back_to_extractive(digest_index: Index,
                                                             fake: FakeGigaChat) -> None:
    # refused → that story extractive; then a free-form answer (no "Заголовок:"/"Сводка:") is
    # taken as the summary, and its title comes from the posts.
    fake.then(Reply("Не могу.", finish_reason="blacklist"), Reply("Без меток и формата"))
    digest = build(digest_index, gigachat_llm(fake), stories=2)
    assert [s.mode for s in digest.stories] == ["extractive", "generative"]
    assert digest.mode == "extractive" and CITATION.search(digest.stories[0].summary)
    assert digest.stories[1].summary == "Без меток и формата" and digest.stories[1].title
    # HTTP 500 after the client's retries: that story and every later one are extractive, and
    # the LLM is not asked again in this digest (each story would wait out the same failure).
    calls = fake.chat_calls
    fake.then(*[Reply(status=500)] * 3)
    digest = build(digest_index, gigachat_llm(fake), stories=4)
    assert [s.mode for s in digest.stories] == ["extractive"] * 4
    assert fake.chat_calls - calls == 3  # one request and its two retries, for the first story
    assert all(CITATION.search(s.summary) for s in digest.stories)


def test_the_posts_cap_keeps_memory_bounded_and_posts_whole(
        digest_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 posts of two chunks each, in the store's order (not by post): with a cap of 10 the
    reader holds at most 21 posts at a time and returns the 10 newest, each with both chunks."""
    import random
    from types import SimpleNamespace

    import numpy as np

    import rag.digest as digest_module
    from rag.store import StoredChunk

    chunks = [StoredChunk(id=f"{n}-{k}", payload={
        "doc_id": f"tg:9:{n}", "node_id": f"tg:9:{n}#{k}", "text": f"пост {n} часть {k}",
        "date": 1000 + n, "channel_id": 9, "message_id": n}, vector={"dense": [1.0, k, n]})
        for n in range(60) for k in range(2)]
    random.Random(3).shuffle(chunks)
    held: list[int] = []
    drop = digest_module._drop_oldest

    def counting(kept: dict[str, Any], cap: int) -> Any:
        held.append(len(kept))
        return drop(kept, cap)

    monkeypatch.setattr(digest_module, "_drop_oldest", counting)
    store = SimpleNamespace(scroll=lambda *_, **__: iter(chunks))
    index = SimpleNamespace(settings=digest_settings.model_copy(update={"digest_max_posts": 10}),
                            store=store, tenant="default", post_text=lambda _doc_id: None)
    posts, truncated = DigestBuilder(index).read_posts(  # type: ignore[arg-type]
        SearchFilters(tenant="default"))
    assert truncated and [p.message_id for p in posts] == list(range(50, 60))
    assert len(held) >= 2 and max(held) <= 21  # pruned while reading, never above 2 × cap + 1
    assert all(p.text == f"пост {p.message_id} часть 0\n\nпост {p.message_id} часть 1"
               for p in posts)
    assert all(np.isclose(np.linalg.norm(p.vector), 1.0) for p in posts)
