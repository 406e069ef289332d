"""Sentence selection (rag.sentences): splitting, content-free fragments, answer types, dense
scoring and its cost bound, near-duplicates, dated stories and summaries."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rag.sentences import (
    Passage,
    SelectorConfig,
    SentenceSelector,
    answer_tokens,
    cite,
    is_content_free,
    question_intent,
    question_specifics,
    split_sentences,
)
from rag.sparse import shared_analyzer

NOV_2023 = 1700000000  # 2023-11-14
OCT_2024 = 1729850000  # 2024-10-25
DEC_2024 = 1733100000  # 2024-12-02


def test_split_sentences_keeps_abbreviations_and_initials_together() -> None:
    text = ("⚡️В 2024 г. в Москве прошло 5 тыс. мероприятий. В. Путин заявил, что всё хорошо.\n"
            "• Mr. Smith arrived (c. 1455). Потом всё\n\n#новости #ставка")
    assert split_sentences(text) == [
        "В 2024 г. в Москве прошло 5 тыс. мероприятий.",
        "В. Путин заявил, что всё хорошо.",
        "Mr. Smith arrived (c. 1455).",
        "Потом всё",
        "#новости #ставка",  # the lead "#" is kept: it marks a hashtag line
    ]


@pytest.mark.parametrize(("sentence", "empty"), [
    ("Игры декабря — даты выхода:", True),
    ("Следим за новостями.", True),
    ("https://t.me/bankrollo/123", True),
    ("#новости #ставка #ЦБ", True),
    ("Подписаться | Прислать новость", True),
    ("Что думаете?", True),
    ("Ставка 21%", True),  # fewer than three words
    ("Банк России повысил ключевую ставку до 21% годовых.", False),
    ("Путин подписался под законом о бюджете на 2025 год и плановый период.", False),
])
def test_content_free_fragments(sentence: str, empty: bool) -> None:
    assert is_content_free(sentence) is empty


@pytest.mark.parametrize(("question", "wants", "story", "newest"), [
    ("Сколько стоит проезд в метро?", "number", False, False),
    ("Когда откроют станцию?", "date", False, False),
    ("В каком году открыли метро?", "date", False, False),
    ("Кто возглавил Минфин?", "name", False, False),
    ("How many points did the Panthers surrender?", "number", False, False),
    ("Who led the team in sacks?", "name", False, False),
    ("что случилось с ключевой ставкой?", None, True, False),
    ("какая сейчас ключевая ставка?", "name", True, True),
    ("Какой самолёт сел в Якутии?", "name", False, False),
    ("What happened to the rate?", None, True, False),
    ("Почему подорожали яйца?", None, False, False),
    # A measure after "какой" asks for a number, even "с какого возраста" (not a date) …
    ("С какого возраста разрешат ездить на самокатах?", "number", False, False),
    ("Какую долю рынка заняли китайские бренды?", "number", False, False),
    ("Ниже какой температуры пора менять шины?", "number", False, False),
    ("What is the population of Warsaw?", "number", False, False),
    # … and asking for a name outright beats a "когда" in a clause.
    ("Как называется событие, когда дыра разорвала звезду?", "name", False, False),
    ("What was the name of the Norman castle?", "name", False, False),
])
def test_question_intent(question: str, wants: str | None, story: bool, newest: bool) -> None:
    intent = question_intent(question)
    assert (intent.wants, intent.story, intent.newest_first) == (wants, story, newest)


@pytest.mark.parametrize(("question", "kind"), [
    ("Кто возглавил Минфин?", "person"),
    ("Какой депутат призвал женщин рожать?", "person"),
    ("Как зовут главного инженера?", "person"),
    ("В каком городе школьница попала в больницу?", "place"),
    ("Какие сёла зачистили морпехи?", "place"),
    ("Где открылся каток?", "place"),
    ("Какой самолёт сел в Якутии?", None),
    ("Who led the team in sacks?", None),  # no dictionary of English names: any name
])
def test_name_kind(question: str, kind: str | None) -> None:
    assert question_intent(question).name_kind == kind


def test_a_name_of_another_kind_is_not_the_answer() -> None:
    # "Госдуме" is a name, but an organisation: "какой депутат" asks for a person.
    post = [Passage(1, "«Рожать, пока молодые», — призвали депутаты в Госдуме. По словам "
                       "депутата Александра Ильтякова, иначе женщины совершают грех.")]
    question = "Какой депутат призвал женщин «рожать, пока молодые»?"
    picks = SentenceSelector(config=SelectorConfig(max_sentences=1)).answer(question, post).picks
    assert "Ильтякова" in picks[0].text
    # Where the place is asked for, a person's name earns nothing and a town does.
    post = [Passage(1, "Школьница выпила пиво вместе с Ильёй Петровым и попала в больницу. "
                       "Всё случилось на улице в Калининграде, сообщили врачи.")]
    picks = SentenceSelector(config=SelectorConfig(max_sentences=1)).answer(
        "В каком городе школьница выпила пиво и попала в больницу?", post).picks
    assert "Калининграде" in picks[0].text


def test_english_names_are_capitalised_words_not_every_latin_word() -> None:
    assert answer_tokens("Peyton Manning became the first quarterback to lead two teams.",
                         "name") == {"peyton", "manning"}
    assert answer_tokens("He is also the oldest quarterback ever to play.", "name") == set()
    # In a Russian sentence a Latin word is a name, and so is a model.
    assert answer_tokens("На борту Ан-3 компании Swiftair было пятеро.", "name") == {
        "ан-3", "swiftair"}


def test_decades_are_dates() -> None:
    assert answer_tokens("Interest in Tesla has grown since the 1990s.", "date") == {"1990s"}
    assert answer_tokens("В 1990-х интерес вернулся.", "date") == {"1990-х"}


def test_question_terms_are_lemma_stems_without_question_words() -> None:
    terms = SentenceSelector().question_terms("Какую ставку сейчас установил ЦБ?")
    assert terms == ["ставк", "установ", "цб"]


def test_the_sentence_with_the_asked_for_number_wins_a_lexical_tie() -> None:
    passages = [Passage(1, "Проезд в метро подорожает с нового года. За проезд в метро "
                           "заплатят 70 рублей.")]
    picks = SentenceSelector(config=SelectorConfig(max_sentences=1)).answer(
        "Сколько стоит проезд в метро?", passages).picks
    assert [p.text for p in picks] == ["За проезд в метро заплатят 70 рублей."]
    # Without the bonus the lead sentence (it also holds "проезд", "метро") would win.
    plain = SentenceSelector(config=SelectorConfig(max_sentences=1, type_bonus=0)).answer(
        "Сколько стоит проезд в метро?", passages).picks
    assert plain[0].text.startswith("Проезд в метро подорожает")


def test_content_free_lines_are_never_chosen() -> None:
    passages = [Passage(1, "Ключевая ставка — даты заседаний:\nСледим за новостями.\n"
                           "#ставка\nЦБ сохранил ключевую ставку на уровне 16%.")]
    picks = SentenceSelector().answer("ключевая ставка", passages).picks
    assert [p.text for p in picks] == ["ЦБ сохранил ключевую ставку на уровне 16%."]


def test_near_duplicates_are_quoted_once() -> None:
    copy = "Банк России повысил ключевую ставку до 21% годовых."
    passages = [Passage(1, copy), Passage(2, "⚡️" + copy + "\nПодписаться"),
                Passage(3, "Банк России повысил ключевую ставку до 21% годовых, сообщил ЦБ.")]
    picks = SentenceSelector(config=SelectorConfig(max_sentences=3, keep_ratio=0)).answer(
        "до скольки повысили ключевую ставку?", passages).picks
    assert [p.n for p in picks] == [1]


class FakeEmbedding:
    """Vectors by keyword, counting the passages it embeds (the cost the selector bounds)."""

    KEYS = ("рубл", "стоим", "метро", "погод")

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def vector(self, text: str) -> list[float]:
        low = text.lower()
        return [float(k in low) for k in self.KEYS] + [0.1]

    def query(self, text: str) -> list[float]:
        return self.vector(text)

    def passages(self, texts: list[str]) -> Sequence[list[float]]:
        self.embedded += texts
        return [self.vector(t) for t in texts]


def test_dense_similarity_breaks_lexical_ties_and_only_top_candidates_are_embedded() -> None:
    text = ("Новость дня про метро и погоду. Цена поездки в метро составит семьдесят рублей. "
            "Погода в метро будет тёплой. " + " ".join(f"Строка номер {i} про метро."
                                                       for i in range(10)))
    fake = FakeEmbedding()
    selector = SentenceSelector(fake.query, fake.passages, config=SelectorConfig(
        dense_candidates=4, max_sentences=1, type_bonus=0, lead_bonus=0))
    picks = selector.answer("стоимость в рублях для метро", [Passage(1, text)]).picks
    assert picks[0].text == "Цена поездки в метро составит семьдесят рублей."
    assert picks[0].dense is not None
    assert len(fake.embedded) == 4  # 13 candidates, 4 embedded
    lexical = SentenceSelector(config=SelectorConfig(max_sentences=1, type_bonus=0,
                                                     lead_bonus=0))
    assert lexical.answer("стоимость в рублях для метро",
                          [Passage(1, text)]).picks[0].dense is None


def test_story_questions_read_in_date_order_with_dates() -> None:
    passages = [Passage(1, "Банк России повысил ключевую ставку до 21% годовых.", OCT_2024),
                Passage(2, "ЦБ сохранил ключевую ставку на уровне 16%.", NOV_2023),
                Passage(3, "Аналитики ждут, что ключевая ставка вырастет до 23% в декабре.",
                        DEC_2024)]
    selector = SentenceSelector()
    story = selector.answer("что случилось с ключевой ставкой?", passages)
    assert story.dated and [p.n for p in story.picks] == [2, 1, 3]
    assert cite(story.picks, dated=True).splitlines() == [
        "14.11.2023: ЦБ сохранил ключевую ставку на уровне 16%. [2]",
        "25.10.2024: Банк России повысил ключевую ставку до 21% годовых. [1]",
        "02.12.2024: Аналитики ждут, что ключевая ставка вырастет до 23% в декабре. [3]",
    ]
    now = selector.answer("какая сейчас ключевая ставка?", passages)
    assert [p.n for p in now.picks] == [3, 1, 2]  # the newest first
    plain = selector.answer("до скольки повысили ключевую ставку?", passages)
    assert not plain.dated


def test_summary_takes_central_sentences_of_different_posts_oldest_first() -> None:
    story = [
        Passage(1, "Мэрия объявила о закрытии моста на ремонт с понедельника. Подписаться",
                OCT_2024),
        Passage(2, "Мост через реку закроют на ремонт на три месяца, сообщила мэрия. "
                   "В соседнем районе открылась пекарня.", NOV_2023),
        Passage(3, "Автомобилистам советуют объезжать закрытый на ремонт мост.\n#новости",
                DEC_2024),
    ]
    picks = SentenceSelector().summarise(story, max_sentences=2)
    assert len(picks) == 2 and len({p.n for p in picks}) == 2
    assert [p.date for p in picks] == sorted(p.date for p in picks)
    assert all("пекарня" not in p.text and "Подписаться" not in p.text for p in picks)
    assert all("мост" in p.text.lower() for p in picks)
    assert SentenceSelector().summarise([Passage(1, "https://t.me/x/1\n#новости")]) == []


def test_a_sentence_restating_the_question_gives_way_to_the_fact_after_it() -> None:
    post = [Passage(1, "Самолёт совершил аварийную посадку в Якутии. Один пассажир погиб. "
                       "На борту Ан-3 находилось пятеро человек.")]
    question = "Какой самолёт совершил аварийную посадку в Якутии?"
    picks = SentenceSelector(config=SelectorConfig(max_sentences=1)).answer(question, post).picks
    assert picks[0].text == "На борту Ан-3 находилось пятеро человек."
    # Without the rules the restatement, which matches every word, is the answer.
    naive = SentenceSelector(config=SelectorConfig(max_sentences=1, min_novelty=0,
                                                   context_weight=0, type_bonus=0))
    assert naive.answer(question, post).picks[0].text.startswith("Самолёт совершил")


def test_a_restatement_holding_the_asked_for_number_is_the_answer() -> None:
    # Questions often reuse the answer's words: "В Москве 77 долларовых миллиардеров" repeats
    # three of its four stems, yet it alone holds the number "сколько" asks for.
    post = [Passage(1, "Forbes опубликовал новый рейтинг богатейших людей мира. "
                       "В Москве 77 долларовых миллиардеров. Рейтинг вышел в апреле.")]
    question = "Сколько долларовых миллиардеров живёт в Москве?"
    picks = SentenceSelector(config=SelectorConfig(max_sentences=1)).answer(question, post).picks
    assert picks[0].text == "В Москве 77 долларовых миллиардеров."


def _first(question: str, passages: list[Passage], **config: object) -> str:
    selector = SentenceSelector(config=SelectorConfig(max_sentences=1, **config))  # type: ignore[arg-type]
    return selector.answer(question, passages).picks[0].text


def test_the_questions_names_weigh_less_than_the_words_that_locate_the_fact() -> None:
    question = "What did the fossils of the Burgess Shale in Columbia lack?"
    posts = [Passage(1, "Many species lived in the Burgess Shale of Columbia."),
             Passage(2, "The fossils lacked tentacles but had many comb rows.")]
    # The names (Burgess, Shale, Columbia) say where, which every source shares; "fossils …
    # lacked" says what is asked.
    assert _first(question, posts).startswith("The fossils lacked")
    assert _first(question, posts, name_weight=1.0).startswith("Many species")


def test_subject_and_fact_split_over_two_sentences_match_as_one() -> None:
    question = "What did the Burgess Shale fossils lack?"
    post = [Passage(1, "Three species were found in the Burgess Shale fossils of Canada. "
                       "All three lacked tentacles but had many comb rows.")]
    # The second sentence holds "lack", the first the rest: read together they hold it all.
    assert _first(question, post).startswith("All three lacked")
    # A next sentence adding none of the question's words inherits only a share of the match.
    post = [Passage(1, "The Burgess Shale fossils were found in Canada. "
                       "They are about 505 million years old.")]
    assert _first(question, post).startswith("The Burgess Shale fossils")


def test_specifics_of_english_and_russian_questions() -> None:
    english = question_specifics("How many Grammys has Lady Gaga won since 2015?",
                                 shared_analyzer())
    assert ("number", "2015") in english and ("latin", "lady") in english
    assert ("latin", "how") not in english and ("latin", "won") not in english
    russian = question_specifics("Сколько стоит нефть Brent в Москве?", shared_analyzer())
    assert ("latin", "brent") in russian and ("name", shared_analyzer().stem("Москве")) in russian


def test_a_long_answer_is_cut_around_the_fact_and_sentences_that_fit_are_whole() -> None:
    # The question's words fill the opening of a long sentence; the date it asks for follows.
    long = ("Historically, Victoria has been the base for the manufacturing plants of the major "
            "car brands Ford, Toyota and Holden; however, closure announcements by all three "
            "companies in the 21st century will mean that Australia will no longer be a base "
            "for the global car industry, with Toyota's statement in February 2014 outlining "
            "a closure year of 2017.")
    picks = SentenceSelector().answer("When has Toyota said it will close its Victoria plant?",
                                      [Passage(1, long)]).picks
    assert len(long) > 300 and len(picks) == 1
    assert "closure year of 2017" in picks[0].text and len(picks[0].text) <= 301
    # Two sentences chosen within max_chars together are both shown whole: only a sentence
    # longer than max_chars alone is cut.
    first = ("Банк России на заседании в пятницу сохранил ключевую ставку на уровне 16% "
             "годовых, сославшись на высокую инфляцию, быстрый рост кредитования и ожидания "
             "населения.")
    second = "Ключевая ставка останется на уровне 16% как минимум до декабря."
    picks = SentenceSelector(config=SelectorConfig(keep_ratio=0.0)).answer(
        "Какая ключевая ставка?", [Passage(1, first), Passage(2, second)]).picks
    assert len(first) > 150 and [p.text for p in picks] == [first, second]
