"""The relevance floor (rag.relevance) and QAEngine.sources applying it."""

from __future__ import annotations

from types import SimpleNamespace

from llama_index.core.schema import Document

from rag.qa import QAEngine
from rag.relevance import BACKGROUND_DEPTH, RelevanceFloor, background
from rag.search import PostHit, SearchFilters
from rag.settings import Settings

FOOTBALL = "Сборная Аргентины обыграла Бразилию в отборочном матче чемпионата мира по футболу."
FINAL_2018 = "В финале чемпионата мира по футболу 2018 года Франция обыграла Хорватию 4:2."


def test_specifics_are_figures_latin_words_and_names_not_the_opening_word() -> None:
    floor = RelevanceFloor(0.8, 0.9, 1.0)
    assert floor.specifics("Кто выиграл чемпионат мира по футболу 2018 года?") == [
        ("number", "2018")]
    assert floor.specifics("Сколько стоил баррель Brent в апреле 2020 года?") == [
        ("number", "2020"), ("latin", "brent")]
    assert floor.specifics("Какой была ставка ЦБ при Набиуллиной?") == [
        ("name", "цб"), ("name", "набиуллин")]
    assert floor.specifics("какая погода будет завтра?") == []
    # In an English question every word is Latin: only its names and figures are specifics.
    assert floor.specifics("How many Grammys has Lady Gaga won since 2010?") == [
        ("number", "2010"), ("latin", "grammys"), ("latin", "lady"), ("latin", "gaga")]
    assert floor.specifics("who founded the NFL?") == [("latin", "nfl")]
    assert floor.specifics("what did they finance?") == []


def test_share_matches_forms_numbers_and_latin_as_written() -> None:
    floor = RelevanceFloor(0.8, 0.9, 1.0)
    spec = floor.specifics("Что говорила Набиуллина о ставке ЦБ в 2024 году?")
    assert floor.share(spec, "Глава ЦБ Эльвира Набиуллина заявила в 2024 году…") == 1.0
    assert floor.share(spec, "Набиуллина выступила в Госдуме 20245 раз.") == 1 / 3
    cpp = floor.specifics("Кто создал язык C++?")
    assert floor.share(cpp, "Бьёрн Страуструп создал C++ в 1985 году.") == 1.0
    assert floor.share(cpp, "Язык C# создала Microsoft.") == 0.0


def test_keeps_needs_the_specifics_between_the_two_scores() -> None:
    floor = RelevanceFloor(0.8, 0.9, 0.67)
    question = "Кто выиграл чемпионат мира по футболу 2018 года?"
    assert not floor.keeps(question, 0.79, FINAL_2018)  # below the floor: never
    assert floor.keeps(question, 0.85, FINAL_2018)
    assert not floor.keeps(question, 0.85, FOOTBALL)  # no "2018": not an answer
    assert floor.keeps(question, 0.91, FOOTBALL)  # sure enough on the dense score alone
    assert floor.keeps("какая погода завтра?", 0.81, "Завтра ожидается снег.")  # no specifics
    dense_only = RelevanceFloor(0.8, 0.9, 0.0)
    assert dense_only.keeps(question, 0.85, FOOTBALL)


POSTS = {"tg:1:1": FOOTBALL, "tg:1:2": FINAL_2018}


def _hit(doc_id: str, score: float) -> PostHit:
    _, cid, mid = doc_id.split(":")
    return PostHit(id=doc_id, channel_id=int(cid), channel="sport", channel_title="Спорт",
                   message_id=int(mid), date=1714557600, link=f"https://t.me/sport/{mid}",
                   score=score, snippet=POSTS[doc_id][:40], tags=[])


class _Searcher:
    def __init__(self, hits: list[PostHit]) -> None:
        self.hits = hits

    def search(self, query: str, filters: SearchFilters, k: int = 10,
               mode: str | None = None) -> list[PostHit]:
        return self.hits[:k]


def _engine(hits: list[PostHit], **settings: float) -> QAEngine:
    config = Settings(_env_file=None, **settings)  # type: ignore[arg-type]
    docstore = SimpleNamespace(
        get_document=lambda doc_id, raise_error=False: Document(text=POSTS[doc_id], id_=doc_id))
    index = SimpleNamespace(settings=config, docstore=docstore)
    return QAEngine(index, searcher=_Searcher(hits))  # type: ignore[arg-type]


def test_a_question_the_posts_cannot_answer_gets_not_found() -> None:
    question = "Кто выиграл чемпионат мира по футболу 2018 года?"
    engine = _engine([_hit("tg:1:1", 0.85)], qa_min_score=0.81, qa_sure_score=0.9,
                     qa_min_name_share=0.67)
    answer = engine.ask(question)
    assert answer.mode == "not_found" and answer.sources == []
    # The same post with the figure is a source, numbered from 1 after the filtering.
    engine = _engine([_hit("tg:1:1", 0.86), _hit("tg:1:2", 0.85)], qa_min_score=0.81,
                     qa_sure_score=0.9, qa_min_name_share=0.67)
    sources = engine.sources(question)
    assert [(s.n, s.hit.id) for s in sources] == [(1, "tg:1:2")]
    assert engine.ask(question).answer.startswith("По найденным постам: В финале чемпионата")


def test_a_post_must_stand_out_from_the_questions_background() -> None:
    floor = RelevanceFloor(0.8, 0.9, 0.0, min_margin=0.03)
    question = "Кто выиграл чемпионат мира по футболу 2018 года?"
    assert not floor.keeps(question, 0.85, FINAL_2018, background=0.84)  # all equally vague
    assert floor.keeps(question, 0.85, FINAL_2018, background=0.81)
    assert floor.keeps(question, 0.85, FINAL_2018, background=None)  # tiny index: no background
    assert floor.keeps(question, 0.91, FINAL_2018, background=0.905)  # sure score wins


def test_sources_compare_hits_with_the_fifth_best_even_for_fewer_sources() -> None:
    for n in range(3, 8):
        POSTS[f"tg:1:{n}"] = f"Матч номер {n} чемпионата мира по футболу 2018 года."
    flat = [_hit(f"tg:1:{n}", 0.86 - n * 0.001) for n in range(3, 8)]
    engine = _engine(flat, qa_min_score=0.8, qa_sure_score=0.9, qa_min_margin=0.03,
                     qa_top_k=2)
    question = "Кто выиграл чемпионат мира по футболу 2018 года?"
    assert engine.sources(question) == []  # five equally close posts: none stands out
    standing = [_hit("tg:1:2", 0.89), *flat]
    sources = _engine(standing, qa_min_score=0.8, qa_sure_score=0.9, qa_min_margin=0.03,
                      qa_top_k=2).sources(question)
    assert [s.hit.id for s in sources] == ["tg:1:2"]  # 0.89: 0.036 above the 5th best (0.854)


def test_a_story_question_needs_all_its_words_instead_of_standing_out() -> None:
    floor = RelevanceFloor(0.8, 0.9, 0.5, min_margin=0.03)
    story = "что случилось с ключевой ставкой?"
    # Many posts about the rate score alike: no margin, but each holds "ключевая" and "ставка".
    assert floor.keeps(story, 0.84, "ЦБ сохранил ключевую ставку на уровне 16%.", background=0.83)
    assert not floor.keeps(story, 0.84, "Банки подняли ставки по вкладам.", background=0.83)
    fact = "до скольки повысили ключевую ставку?"
    assert not floor.keeps(fact, 0.84, "ЦБ сохранил ключевую ставку на уровне 16%.",
                           background=0.83)


def test_the_background_is_the_fifth_best_unless_a_group_of_siblings_ends_further_down() -> None:
    assert background([0.9, 0.88, 0.87]) is None  # fewer than 5 posts: no background
    flat = [0.86 - n * 0.001 for n in range(10)]  # no clear drop: the 5th best
    assert background(flat) == flat[4]
    # Six paragraphs of one article score alike, then the other articles: the background is
    # the first post after the group, not a sibling of the answer.
    group = [0.87, 0.85, 0.848, 0.846, 0.845, 0.844, 0.83, 0.829, 0.828, 0.827]
    assert background(group) == 0.83
    # The largest drop wins; a drop below GROUP_DROP ends no group.
    assert background([0.9, 0.86, 0.855, 0.85, 0.849, 0.846, 0.845, 0.844, 0.843, 0.842]) == 0.849
    # Only the BACKGROUND_DEPTH best count: a drop after them is not looked at.
    deep = [0.86] * BACKGROUND_DEPTH + [0.70]
    assert background(deep) == 0.86


def test_sources_stand_out_from_the_posts_after_the_group_of_the_questions_subject() -> None:
    question = "Кто выиграл чемпионат мира по футболу 2018 года?"
    for n in range(3, 13):
        POSTS[f"tg:1:{n}"] = f"Матч номер {n} чемпионата мира по футболу 2018 года."
    # The answer at 0.87, five siblings at 0.85-0.846 (0.025 below: not 0.03 above the 5th
    # best), then posts about other things from 0.83 on.
    siblings = [_hit(f"tg:1:{n}", 0.85 - (n - 3) * 0.001) for n in range(3, 8)]
    others = [_hit(f"tg:1:{n}", 0.83 - (n - 8) * 0.001) for n in range(8, 13)]
    hits = [_hit("tg:1:2", 0.87), *siblings, *others]
    engine = _engine(hits, qa_min_score=0.8, qa_sure_score=0.9, qa_min_margin=0.03,
                     qa_top_k=2)
    assert [s.hit.id for s in engine.sources(question)] == ["tg:1:2"]
    # Without the posts after the group (a fetch of 5) the answer does not stand out.
    assert _engine(hits[:5], qa_min_score=0.8, qa_sure_score=0.9, qa_min_margin=0.03,
                   qa_top_k=2).sources(question) == []
