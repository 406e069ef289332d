"""Question answering: citations, the no-answer path, streaming order, the extractive mode."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from llama_index.core.schema import Document

from rag.qa import NOT_FOUND, CitationFilter, QAEngine, clean_citations
from rag.search import PostHit, SearchFilters
from rag.settings import Settings
from tests.fake_gigachat import FakeGigaChat, Reply, gigachat_llm

POSTS = {
    "tg:1:1": "Банк России повысил ключевую ставку до 16% годовых. Решение объяснили инфляцией.",
    "tg:1:2": "Крупные банки подняли ставки по вкладам вслед за регулятором. Сбербанк даёт 15%.",
    "tg:2:7": "В Москве открылись три новые станции метро. Поезда ходят каждые две минуты.",
}


def hit(doc_id: str, score: float) -> PostHit:
    _, cid, mid = doc_id.split(":")
    return PostHit(id=doc_id, channel_id=int(cid), channel=f"chan{cid}",
                   channel_title=f"Канал {cid}", message_id=int(mid), date=1714557600,
                   link=f"https://t.me/chan{cid}/{mid}", score=score,
                   snippet=POSTS[doc_id][:40], tags=[])


class StubSearcher:
    def __init__(self, hits: list[PostHit]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, SearchFilters, int, str | None]] = []

    def search(self, query: str, filters: SearchFilters, k: int = 10,
               mode: str | None = None) -> list[PostHit]:
        self.calls.append((query, filters, k, mode))
        return self.hits[:k]


def engine(hits: list[PostHit], llm: Any = None, min_score: float = 0.5) -> QAEngine:
    # The dense score alone (no word tests): these tests are about citations and modes; the
    # floor has its own in test_relevance.py.
    settings = Settings(_env_file=None, qa_min_score=min_score,  # type: ignore[call-arg]
                        qa_min_name_share=0)
    docstore = SimpleNamespace(
        get_document=lambda doc_id, raise_error=False: Document(text=POSTS[doc_id], id_=doc_id))
    index = SimpleNamespace(settings=settings, docstore=docstore, post_text=POSTS.get)
    return QAEngine(index, llm, searcher=StubSearcher(hits))  # type: ignore[arg-type]


RATE_HITS = [hit("tg:1:1", 0.91), hit("tg:1:2", 0.88), hit("tg:2:7", 0.52)]


def test_clean_citations() -> None:
    assert clean_citations("Ставка 16% [1]. Вклады [2, 7]. Выдумка [9].", 3) == (
        "Ставка 16% [1]. Вклады [2]. Выдумка.", [7, 9])
    assert clean_citations("Без ссылок [сноска].", 3) == ("Без ссылок [сноска].", [])


def test_citation_filter_streams_in_pieces() -> None:
    filt = CitationFilter(2)
    pieces = ["Ставка [", "1", "] и вклады [", "5]", " и [", "текст]", " [2"]
    out = "".join(filt.feed(p) for p in pieces) + filt.flush()
    assert out == "Ставка [1] и вклады  и [текст] [2"
    assert filt.removed == [5]


def test_generative_answer_maps_citations_to_sources(fake: FakeGigaChat) -> None:
    fake.then(Reply(content="ЦБ поднял ставку до 16% [1], банки — ставки по вкладам [2]."))
    qa = engine(RATE_HITS, gigachat_llm(fake))
    flt = SearchFilters(channel_ids=[1])
    answer = qa.ask("Что со ставкой?", flt)
    data = answer.to_dict()
    assert data["mode"] == "generative"
    assert data["answer"] == "ЦБ поднял ставку до 16% [1], банки — ставки по вкладам [2]."
    assert [s["n"] for s in data["sources"]] == [1, 2, 3]
    assert list(data["sources"][0]) == ["n", "id", "channel", "message_id", "link", "date",
                                        "snippet", "score"]
    assert data["sources"][1]["id"] == "tg:1:2" and data["sources"][1]["score"] == 0.88
    assert qa.searcher.calls[0][1] is flt  # same filters as search
    # dense whatever the default search mode: qa_min_score is a cosine similarity
    assert qa.searcher.calls[0][3] == "dense"
    prompt = fake.requests[0]["messages"]
    assert prompt[0]["role"] == "system"
    assert "[1] Канал 1 (@chan1), 2024-05-01\n" + POSTS["tg:1:1"] in prompt[1]["content"]
    assert "[3] Канал 2" in prompt[1]["content"] and "Вопрос: Что со ставкой?" in prompt[1][
        "content"]


def test_invented_citation_is_stripped(fake: FakeGigaChat) -> None:
    fake.then(Reply(content="Ставка 16% [1][4]. Вклады растут [7]."))
    answer = engine(RATE_HITS, gigachat_llm(fake)).ask("ставка")
    assert answer.answer == "Ставка 16% [1]. Вклады растут."
    assert answer.removed_citations == [4, 7]


def test_nothing_relevant_says_so_without_calling_the_llm(fake: FakeGigaChat) -> None:
    qa = engine([hit("tg:2:7", 0.3)], gigachat_llm(fake), min_score=0.5)
    data = qa.ask("Сколько стоит билет до Парижа?").to_dict()
    assert data == {"answer": NOT_FOUND, "mode": "not_found", "sources": []}
    assert fake.chat_calls == 0
    events = list(qa.stream("Сколько стоит билет до Парижа?"))
    assert [e.type for e in events] == ["token", "sources", "done"]
    assert events[0].data == NOT_FOUND


def test_low_scoring_hits_are_not_sources(fake: FakeGigaChat) -> None:
    answer = engine(RATE_HITS, gigachat_llm(fake), min_score=0.8).ask("ставка")
    assert [s.hit.id for s in answer.sources] == ["tg:1:1", "tg:1:2"]


def test_streaming_yields_tokens_then_sources(fake: FakeGigaChat) -> None:
    fake.responder = lambda req: "Ставку подняли до 16% [1] а вклады [9] тоже [2]."
    events = list(engine(RATE_HITS, gigachat_llm(fake)).stream("ставка"))
    types = [e.type for e in events]
    assert types[-2:] == ["sources", "done"] and set(types[:-2]) == {"token"}
    assert len(types) > 4  # really streamed
    text = "".join(e.data for e in events if e.type == "token")
    assert text == "Ставку подняли до 16% [1] а вклады  тоже [2]."
    assert [s["n"] for s in events[-2].data] == [1, 2, 3]
    assert events[-1].data["answer"] == text and events[-1].data["mode"] == "generative"


def test_extractive_mode_without_llm() -> None:
    answer = engine(RATE_HITS).ask("Насколько повысили ключевую ставку?")
    assert answer.mode == "extractive"
    assert answer.answer.startswith("По найденным постам: Банк России повысил ключевую ставку "
                                    "до 16% годовых. [1]")
    # The deposit-rate post does not answer "how much was the key rate raised": not quoted.
    assert "[2]" not in answer.answer and "[3]" not in answer.answer
    assert not clean_citations(answer.answer, len(answer.sources))[1]
    events = list(engine(RATE_HITS).stream("ставка"))
    assert [e.type for e in events] == ["token", "sources", "done"]
    assert events[-1].data["mode"] == "extractive"


def test_blacklist_refusal_falls_back_to_extractive(fake: FakeGigaChat) -> None:
    fake.then(Reply(finish_reason="blacklist"))
    answer = engine(RATE_HITS, gigachat_llm(fake)).ask("ключевая ставка")
    assert answer.mode == "extractive" and "[1]" in answer.answer
