"""rag.search: relevance on a small Russian corpus, filters, chunk collapsing, input validation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.pipeline import PostPipeline
from rag.errors import InputError
from rag.index import Index
from rag.search import (
    MAX_OFFSET,
    PostHit,
    PostSearcher,
    SearchFilters,
    collapse,
    make_snippet,
    parse_date,
)
from rag.store import StoredChunk
from tests.conftest import module_settings
from tests.search_corpus import CITY, ECON, GAMES, LONG_POST, corpus, ts

SEARCH_KEYS = ["id", "channel_id", "channel", "channel_title", "message_id", "date", "link",
               "score", "snippet", "tags", "highlights", "copies"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """One index with the corpus, shared by the module (embedding is the slow part)."""
    index = Index.open(module_settings(tmp_path_factory, "search"), purpose="pytest search")
    try:
        report = PostPipeline(index).ingest(corpus())
        assert report.new == len(corpus())
        yield index
    finally:
        index.close()


@pytest.fixture(scope="module")
def searcher(filled: Index) -> PostSearcher:
    return PostSearcher(filled)


# -- relevance ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ЦБ поднял процентную ставку", "tg:1001:1"),
        ("в столице запустили новые станции подземки", "tg:1002:1"),
        ("вышло продолжение RPG с кооперативом", "tg:1003:1"),
        ("цены растут медленнее, данные статистики", "tg:1001:2"),
    ],
)
def test_paraphrased_query_ranks_the_right_post_first(
    searcher: PostSearcher, query: str, expected: str
) -> None:
    # Paraphrases share no words with the post: a test of the dense half (hybrid lets a
    # word-matching post in, e.g. "цены" → a games post with "цена", in this 20-post corpus).
    hits = searcher.search(query, k=5, mode="dense")
    assert hits[0].id == expected, [h.id for h in hits]


def test_topic_query_returns_posts_of_that_channel_first(searcher: PostSearcher) -> None:
    hits = searcher.search("новинки видеоигр", k=4)
    assert {h.channel_id for h in hits} == {GAMES[0]}


def test_hits_are_posts_with_the_contract_shape(searcher: PostSearcher) -> None:
    hits = searcher.search("ключевая ставка", k=3)
    assert len(hits) == 3
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    data = hits[0].to_dict()
    assert list(data) == SEARCH_KEYS
    assert data["id"] == "tg:1001:1"
    assert data["channel_id"] == ECON[0] and data["channel"] == ECON[1]
    assert data["channel_title"] == ECON[2] and data["message_id"] == 1
    assert data["date"] == datetime(2024, 5, 1, 10, tzinfo=UTC).isoformat()
    assert data["link"] == "https://t.me/econ_daily/1"
    assert "ключевая_ставка" in data["tags"]
    assert data["snippet"].startswith("Банк России повысил ключевую ставку")
    assert isinstance(data["score"], float)
    assert data["copies"] == []  # no near-duplicates in this corpus


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_query_words_are_marked_in_the_snippet(searcher: PostSearcher, mode: str) -> None:
    hit = searcher.search("ключевые ставки", k=1, mode=mode)[0]
    assert hit.id == "tg:1001:1"
    data = hit.to_dict()
    assert [data["snippet"][s:e] for s, e in data["highlights"]] == ["ключевую", "ставку"]
    assert all(isinstance(span, list) and len(span) == 2 for span in data["highlights"])


def test_snippet_of_a_long_post_is_the_window_with_the_words(searcher: PostSearcher) -> None:
    # "кондиционирования" is far from the start of every chunk of the long post.
    hit = next(h for h in searcher.search("кондиционирование", k=5, mode="sparse")
               if h.id == "tg:1002:100")
    assert hit.snippet.startswith("…") and len(hit.snippet) <= 301
    assert [hit.snippet[s:e] for s, e in hit.highlights] == ["кондиционирования"]


def test_link_without_username_uses_the_c_form(searcher: PostSearcher) -> None:
    hit = searcher.search("сиквел ролевой игры", k=1)[0]
    assert hit.link == f"https://t.me/c/{GAMES[0]}/1"


# -- collapsing chunks ----------------------------------------------------------------------------


def test_long_post_has_several_chunks_but_appears_once(
    filled: Index, searcher: PostSearcher
) -> None:
    assert len(filled.store.chunks_of("tg:1002:100")) >= 2
    hits = searcher.search("строительство новых линий метро и новые поезда", k=20)
    ids = [h.id for h in hits]
    assert ids.count("tg:1002:100") == 1
    assert len(ids) == len(set(ids))
    long_hit = next(h for h in hits if h.id == "tg:1002:100")
    assert len(long_hit.snippet) <= 301
    assert long_hit.snippet.endswith("…")
    # A window of the best chunk around the query's words, so maybe "…" at both ends.
    assert long_hit.snippet.strip("…") in " ".join(LONG_POST.split())


def test_k_counts_posts_not_chunks(searcher: PostSearcher) -> None:
    hits = searcher.search("метро", k=len(corpus()) + 10)
    assert len(hits) == len(corpus())


def test_collapse_keeps_the_best_chunk_per_post() -> None:
    def point(doc: str, n: int, score: float) -> StoredChunk:
        return StoredChunk(id=f"00000000-0000-0000-0000-00000000000{n}",
                           score=score, payload={"doc_id": doc, "text": f"chunk {n}",
                                                 "date": 0})

    hits = collapse([point("a", 1, 0.5), point("b", 2, 0.7), point("a", 3, 0.9)])
    assert [(h.id, h.snippet, h.score) for h in hits] == [("a", "chunk 3", 0.9),
                                                          ("b", "chunk 2", 0.7)]
    assert [h.id for h in collapse([point("a", 1, 0.5), point("b", 2, 0.7)], 0.6)] == ["b"]


# -- pages ----------------------------------------------------------------------------------------

PAGE_QUERY = "новые станции метро, ставки по вкладам, игры и цены"


def ids(hits: list[PostHit]) -> list[str]:
    return [h.id for h in hits]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_pages_are_stable_and_disjoint(searcher: PostSearcher, mode: str) -> None:
    whole = searcher.search(PAGE_QUERY, k=10, mode=mode)  # sparse matches 11 posts
    assert len(whole) == 10 and whole.next_offset == 10
    pages = [searcher.search(PAGE_QUERY, k=5, mode=mode, offset=o) for o in (0, 5)]
    assert ids(pages[1]) == ids(whole[5:10])
    assert ids(pages[0]) + ids(pages[1]) == ids(whole)
    assert [h.score for h in pages[1]] == [h.score for h in whole[5:10]]
    assert (pages[0].next_offset, pages[1].next_offset) == (5, 10)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_the_last_page_has_no_next_offset(searcher: PostSearcher, mode: str) -> None:
    total = len(corpus())  # dense and hybrid rank every post
    last = searcher.search(PAGE_QUERY, k=5, mode=mode, offset=total - 3)
    assert len(last) == 3 and last.next_offset is None
    assert ids(last) == ids(searcher.search(PAGE_QUERY, k=total, mode=mode)[-3:])
    past = searcher.search(PAGE_QUERY, k=5, mode=mode, offset=total)
    assert past == [] and past.next_offset is None
    assert past.to_dict() == {"results": [], "next_offset": None}


def test_hybrid_depth_covers_offset_plus_k(filled: Index) -> None:
    # Lists of 4 candidates would end the results after 4 posts; pages past them still come.
    shallow = PostSearcher(replace(filled, settings=filled.settings.model_copy(
        update={"fusion_depth": 4}), lock=None))
    whole = shallow.search(PAGE_QUERY, k=15, mode="hybrid")
    page = shallow.search(PAGE_QUERY, k=5, mode="hybrid", offset=10)
    assert len(whole) == 15 and ids(page) == ids(whole[10:15])


class CountingStore:
    """The index's store, counting which payloads the searches read."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.candidate_fields: list[Any] = []
        self.whole_reads: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def search_dense(self, *args: Any, fields: Any = None) -> Any:
        self.candidate_fields.append(fields)
        return self._store.search_dense(*args, fields=fields)

    def search_sparse(self, *args: Any, fields: Any = None) -> Any:
        self.candidate_fields.append(fields)
        return self._store.search_sparse(*args, fields=fields)

    def chunks_by_id(self, point_ids: Any) -> Any:
        self.whole_reads.append(len(point_ids))
        return self._store.chunks_by_id(point_ids)


class WholePayloads(CountingStore):
    """A store that ignores ``fields``: every candidate with its whole payload."""

    def search_dense(self, *args: Any, fields: Any = None) -> Any:
        return self._store.search_dense(*args)

    def search_sparse(self, *args: Any, fields: Any = None) -> Any:
        return self._store.search_sparse(*args)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_candidates_carry_their_post_id_only_and_the_winners_their_whole_payload(
        filled: Index, mode: str) -> None:
    counting = CountingStore(filled.store)
    searcher = PostSearcher(replace(filled, store=counting, lock=None),
                            collapse_duplicates=False)
    hits = searcher.search("строительство новых линий метро", k=3, mode=mode)
    assert counting.candidate_fields and all(f == ("doc_id",) for f in counting.candidate_fields)
    # One read of whole payloads, for the posts the caller gets (k + 1: is there a next page).
    assert counting.whole_reads == [4]
    assert len(hits) == 3 and all(h.text and h.channel and h.link for h in hits)
    # The same hits as reading every candidate's whole payload gives.
    reference = PostSearcher(replace(filled, store=WholePayloads(filled.store), lock=None),
                             collapse_duplicates=False).search(
        "строительство новых линий метро", k=3, mode=mode)
    assert [(h.id, h.score, h.snippet) for h in hits] == [
        (h.id, h.score, h.snippet) for h in reference]


@pytest.mark.parametrize("offset", [-1, MAX_OFFSET + 1])
def test_offset_is_bounded(searcher: PostSearcher, offset: int) -> None:
    with pytest.raises(InputError, match="offset must be between 0 and") as info:
        searcher.search("метро", offset=offset)
    assert "next_offset" in (info.value.hint or "")


# -- filters --------------------------------------------------------------------------------------


def test_channel_filter(searcher: PostSearcher) -> None:
    hits = searcher.search("ключевая ставка", SearchFilters(channel_ids=[GAMES[0]]), k=50)
    assert hits and {h.channel_id for h in hits} == {GAMES[0]}
    both = searcher.search("ставка", SearchFilters(channel_ids=[GAMES[0], CITY[0]]), k=50)
    assert {h.channel_id for h in both} == {GAMES[0], CITY[0]}


def test_tag_filter_is_any_of_and_normalized(searcher: PostSearcher) -> None:
    hits = searcher.search("новости", SearchFilters(tags=["#Метро"]), k=50)
    assert sorted(h.id for h in hits) == ["tg:1002:1", "tg:1002:3"]
    hits = searcher.search("новости", SearchFilters(tags=["метро", "игры"]), k=50)
    assert sorted(h.id for h in hits) == ["tg:1002:1", "tg:1002:3", "tg:1003:1", "tg:1003:4"]
    assert searcher.search("новости", SearchFilters(tags=["нет_такого"]), k=5) == []


def test_date_filter_is_inclusive(searcher: PostSearcher) -> None:
    flt = SearchFilters(since=ts(2), until=ts(4))
    hits = searcher.search("экономика", flt, k=50)
    assert sorted(h.id for h in hits) == ["tg:1001:2", "tg:1001:3", "tg:1001:4"]
    since_only = searcher.search("игры", SearchFilters(since=ts(25)), k=50)
    assert {h.id for h in since_only} == {"tg:1003:6", "tg:1003:7", "tg:1003:8", "tg:1002:100"}


def test_filters_combine(searcher: PostSearcher) -> None:
    flt = SearchFilters(channel_ids=[CITY[0]], since=ts(10), until=ts(12), tags=["метро"])
    assert [h.id for h in searcher.search("метро", flt, k=10)] == ["tg:1002:1", "tg:1002:3"]


def test_min_score(searcher: PostSearcher) -> None:
    all_hits = searcher.search("ключевая ставка", k=50)
    cut = all_hits[2].score
    hits = searcher.search("ключевая ставка", SearchFilters(min_score=cut), k=50)
    assert [h.id for h in hits] == [h.id for h in all_hits[:3]]


def test_empty_index_returns_no_hits(index: Index) -> None:
    assert PostSearcher(index).search("что угодно") == []


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": "   "}, "empty query"),
        ({"query": "ставка", "k": 0}, "k must be between 1 and 100"),
        ({"query": "ставка", "k": 101}, "k must be between 1 and 100"),
        ({"query": "ставка", "mode": "fuzzy"}, "unknown search mode"),
        ({"query": "x" * 2001}, "limit is 2000"),
        ({"query": "ставка", "filters": SearchFilters(since=ts(5), until=ts(1))}, "is after"),
    ],
)
def test_bad_input_raises_input_error_with_hint(
    searcher: PostSearcher, kwargs: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        searcher.search(**kwargs)
    assert info.value.hint
    assert info.value.exit_code == 2 and info.value.http_status == 400


def test_parse_date() -> None:
    assert parse_date("2024-05-01") == ts(1, 0)
    assert parse_date("2024-05-01", end_of_day=True) == ts(2, 0) - 1
    assert parse_date("2024-05-01T10:00") == ts(1, 10)
    assert parse_date("2024-05-01 10:00:00") == ts(1, 10)
    assert parse_date("2024-05-01T13:00+03:00") == ts(1, 10)
    assert parse_date(ts(1, 10)) == ts(1, 10)
    assert parse_date(str(ts(1, 10))) == ts(1, 10)
    for bad in ("yesterday", "2024-13-01", "01.05.2024", "", "2024-05-01T25:00"):
        with pytest.raises(InputError, match="date") as info:
            parse_date(bad)
        assert "YYYY-MM-DD" in (info.value.hint or "")


def test_snippet_is_trimmed_at_a_word() -> None:
    assert make_snippet("  короткий \n\n текст ") == "короткий текст"
    long = ("слово " * 100).strip()
    snippet = make_snippet(long)
    assert len(snippet) <= 301 and snippet.endswith("слово…")


def test_post_hit_to_dict_date_is_iso() -> None:
    hit = PostHit(id="tg:1:2", channel_id=1, channel="", channel_title="T", message_id=2,
                  date=0, link="https://t.me/c/1/2", score=0.123456, snippet="s", tags=[])
    assert hit.to_dict()["date"] == "1970-01-01T00:00:00+00:00"
    assert hit.to_dict()["score"] == 0.1235
    assert hit.to_dict()["highlights"] == [] and hit.to_dict()["copies"] == []
