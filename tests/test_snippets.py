"""rag.snippets: the window around the query's words and the marked spans."""

from __future__ import annotations

from rag.snippets import SNIPPET_CHARS, make_snippet, query_stems, snippet_with_highlights

RATE = "Банк России повысил ключевую ставку до 16% годовых. Регулятор объяснил решение инфляцией."
FILLER = "Погода в выходные будет тёплой, ветер слабый, осадков не ожидается. "


def marked(text: str, query: str) -> tuple[str, list[str]]:
    snippet, spans = snippet_with_highlights(text, query_stems(query))
    return snippet, [snippet[start:end] for start, end in spans]


def test_russian_inflections_match_by_stem() -> None:
    snippet, words = marked(RATE, "ставки банков повысить")
    assert snippet == RATE
    assert words == ["Банк", "повысил", "ставку"]


def test_offsets_point_at_the_words_in_the_snippet() -> None:
    snippet, spans = snippet_with_highlights(RATE, query_stems("ключевая ставка"))
    assert spans == [(20, 28), (29, 35)]
    assert [snippet[s:e] for s, e in spans] == ["ключевую", "ставку"]
    # Stopwords in the query mark nothing ("до" is one).
    assert marked(RATE, "до")[1] == []


def test_offsets_are_code_points_after_an_emoji() -> None:
    snippet, spans = snippet_with_highlights("🔥🔥 Метро открылось", query_stems("метро"))
    assert [snippet[s:e] for s, e in spans] == ["Метро"] and spans == [(3, 8)]


def test_far_match_in_a_long_post_gets_a_window_around_it() -> None:
    text = FILLER * 15 + RATE + " " + FILLER * 15
    snippet, words = marked(text, "повысить ключевые ставки")
    assert len(snippet) <= SNIPPET_CHARS + 1
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "повысил ключевую ставку" in snippet
    assert words == ["повысил", "ключевую", "ставку"]
    assert snippet.strip("…") in " ".join(text.split())


def test_the_window_prefers_the_cluster_with_most_query_words() -> None:
    # An early lone "ставку", then far away the whole query together.
    text = ("Букмекер принял ставку на матч. " + FILLER * 12
            + "Ключевую ставку ЦБ сохранил: инфляция замедлилась. " + FILLER * 12)
    snippet, words = marked(text, "ЦБ ключевая ставка инфляция")
    assert "Букмекер" not in snippet
    assert words[:4] == ["Ключевую", "ставку", "ЦБ", "инфляция"]


def test_no_match_is_the_start_of_the_text_without_highlights() -> None:
    text = FILLER * 10
    assert snippet_with_highlights(text, query_stems("ипотека")) == (make_snippet(text), [])
    assert snippet_with_highlights(text, frozenset()) == (make_snippet(text), [])
    assert make_snippet(text).startswith("Погода в выходные")


def test_matches_near_the_start_keep_the_start() -> None:
    text = RATE + " " + FILLER * 10
    snippet, words = marked(text, "инфляция")
    assert snippet.startswith("Банк России") and snippet.endswith("…")
    assert words == ["инфляцией"]


def test_matching_spans_are_the_spans_with_a_wanted_stem() -> None:
    # The fast path (each distinct word stemmed once, no second walk without a match) returns
    # exactly the analyzer's spans filtered by stem, also for stopwords, case and "ё".
    from rag.sparse import shared_analyzer

    texts = [RATE, FILLER * 3, "Ёлка ЁЛКА ёлки и ЕЛКА", "СТАВКА ставку Ставки до", "", "🔥 ΟΔΟΣ'Α"]
    queries = ["ставка", "ёлка", "погода ветер", "до", "банк инфляция", "οδος"]
    for text in texts:
        for query in queries:
            wanted = query_stems(query) | {""}  # an empty stem never matches
            expected = [s for s in shared_analyzer().spans(text) if s[2] in wanted]
            assert shared_analyzer().matching_spans(text, wanted) == expected, (text, query)



def test_a_capped_cluster_leaves_room_for_the_words_after_it() -> None:
    # The query's words fill the opening; uncapped, the window ends right after them, before
    # the fact that follows (an extractive answer's cut, rag.sentences).
    text = ("Инфляция и кредитование волнуют всех. Регулятор на заседании в пятницу сохранил "
            "ключевую ставку, а итог этого заседания таков: 16% годовых до декабря, как и "
            "ожидали.")
    stems = query_stems("регулятор сохранил ключевую ставку инфляция кредитование")
    plain, _ = snippet_with_highlights(text, stems, 120)
    capped, spans = snippet_with_highlights(text, stems, 120, cluster_width=60)
    assert plain.startswith("Инфляция") and "16%" not in plain
    assert capped.startswith("…Регулятор") and "16% годовых" in capped
    assert len(capped) <= 121 and capped.strip("…") in text
    assert [capped[s:e] for s, e in spans] == ["Регулятор", "сохранил", "ключевую", "ставку"]
