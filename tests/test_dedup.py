"""rag.dedup: what counts as a copy of a post (normalisation, shingles, Jaccard, grouping)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.dedup import group_copies, jaccard, normalized_words, shingles

NEWS = ("Запрет на экспорт бензина из России отменят досрочно, ещё до конца года: документы "
        "уже готовят, заявил вице-премьер Александр Новак.")
# The same news as three channels post it: markup, an emoji, each one's own footer.
CROSS_POSTS = [
    NEWS,
    "⚡️Запрет на экспорт бензина из России **отменят досрочно**, ещё до конца года: документы "
    "уже готовят, заявил вице-премьер Александр Новак.\n\n"
    "🔴 [Подписаться](https://t.me/msk_ogonek) | [Прислать новость](https://t.me/msk_bot)",
    f"{NEWS}\n\n[👉 Топор Live. Подписаться](https://t.me/+AbCdEf12)",
    f"{NEWS} @banksta",
    f"{NEWS}\n\n🎯[ Подписывайся на SHOT](https://t.me/shot_shot)\n\n"
    "📩 [Прислать новость](https://t.me/shot_go)",
    f"{NEWS}\n\n__Читать нас без VPN можно здесь: ____bit.ly/example__",
]


def test_footers_links_and_markup_are_not_text() -> None:
    words = normalized_words(CROSS_POSTS[1])
    assert words == normalized_words(NEWS)
    assert words[:3] == ["запрет", "на", "экспорт"] and "ещё" not in words and "еще" in words
    assert normalized_words("Итоги [здесь](https://t.me/x) и тут https://example.com/a #тег") == [
        "итоги", "здесь", "и", "тут"]


def test_every_footer_variant_is_a_copy() -> None:
    base = shingles(NEWS)
    for post in CROSS_POSTS:
        assert jaccard(shingles(post), base) == 1.0, post


def test_subscribe_in_the_body_is_content() -> None:
    # Only trailing lines are footers: a short body line about signing stays.
    text = "Путин подписался под указом.\nЭто первая строка новости о налогах."
    assert normalized_words(text)[:3] == ["путин", "подписался", "под"]
    assert normalized_words("Новость дня.\nПодписаться на канал") == ["новость", "дня"]


def test_a_dropped_attribution_is_still_a_copy_a_rewrite_is_not() -> None:
    post = (NEWS + " Ограничения вводили из-за плановых ремонтов на нефтеперерабатывающих заводах "
            "и роста биржевых цен на топливо осенью.")
    edited = post.replace("вице-премьер Александр Новак", "Новак")
    assert jaccard(shingles(edited), shingles(post)) >= 0.8
    # On a one-sentence post the same edit is a fifth of the text: below the threshold.
    assert jaccard(shingles(NEWS.replace("вице-премьер Александр Новак", "Новак")),
                   shingles(NEWS)) < 0.8
    rewrite = ("Александр Новак: власти готовят документы, чтобы досрочно, до конца года, отменить "
               "запрет на экспорт бензина.")
    assert jaccard(shingles(rewrite), shingles(NEWS)) < 0.3


def test_template_posts_with_other_numbers_are_not_copies() -> None:
    day1 = "Курс доллара на вечер 96,5 рубля, евро 104,6 рубля, биткоин 67380 долларов."
    day2 = "Курс доллара на вечер 95,9 рубля, евро 103,2 рубля, биткоин 65685 долларов."
    assert jaccard(shingles(day1), shingles(day2)) < 0.8


def test_short_and_empty_texts() -> None:
    assert shingles("Видео") == frozenset({("видео",)})
    # Nothing but a hashtag: the raw text itself, so identical ones still match.
    assert jaccard(shingles("#freedurov"), shingles("#FreeDurov ")) == 1.0
    assert shingles("") == frozenset() and shingles("  \n ") == frozenset()
    assert jaccard(shingles(""), shingles("")) == 0.0


def test_group_copies_keeps_order_and_compares_with_leaders() -> None:
    other = "Электробусы вышли на пять новых маршрутов в спальных районах города."
    texts = [CROSS_POSTS[1], other, NEWS, CROSS_POSTS[2], other + " #транспорт", ""]
    assert group_copies(texts) == [[0, 2, 3], [1, 4], [5]]
    # Appending texts never changes the groups before them (pagination relies on it).
    assert group_copies(texts[:3]) == [[0, 2], [1]]
    # No chaining: b is within the threshold of a and c, but c is not of a.
    a = " ".join(f"w{i}" for i in range(20))
    b = " ".join(f"w{i}" for i in range(2, 20))
    c = " ".join(f"w{i}" for i in range(4, 20))
    assert jaccard(shingles(a), shingles(b)) >= 0.8 > jaccard(shingles(a), shingles(c))
    assert jaccard(shingles(b), shingles(c)) >= 0.8
    assert group_copies([a, b, c]) == [[0, 1], [2]]
    with pytest.raises(ValueError):
        group_copies(texts, threshold=0)


def _message(raw: Path, channel_id: int, message_id: int) -> str:
    posts = json.loads((raw / f"{channel_id}_messages.json").read_text(encoding="utf-8"))
    return next(p["text"] for p in posts if p["message_id"] == message_id)


@pytest.mark.parametrize(("a", "b", "copies"), [
    # Топор+ reposts КиберТопор with its footer.
    ((1001237513492, 72487), (1001966291562, 18716), True),
    # A caption cross-posted with two different "Подписаться" footers.
    ((1001326203371, 26703), (1001699803165, 27098), True),
    # A forwarded report with its first line's source attribution edited.
    ((1001394050290, 194619), (1001699803165, 27416), True),
    ((1001166834860, 129247), (1001394050290, 195220), True),
    # The same weekly template, another weekend: not a copy.
    ((1001326203371, 26165), (1001326203371, 26157), False),
])
def test_pairs_from_the_news_set(news_dir: Path, a: tuple[int, int], b: tuple[int, int],
                                 copies: bool) -> None:
    similarity = jaccard(shingles(_message(news_dir, *a)), shingles(_message(news_dir, *b)))
    assert (similarity >= 0.8) is copies, similarity


# -- the fast paths are the plain definitions -----------------------------------------------------
# The reference functions below are the straightforward definitions (every regex applied, every
# line lowercased on its own, n-grams by slicing, every leader compared); the module's versions
# skip work that cannot change the result.  Same outputs on texts built to hit the skipped cases.

def _reference_words(text: str) -> list[str]:
    from rag import dedup

    text = dedup._MENTION.sub(" ", dedup._URL.sub(" ", dedup._MD_LINK.sub(r" \1 ", text)))
    lines = [(dedup._WORD.findall(line.lower().replace("ё", "е")), line)
             for line in text.splitlines()]
    while lines and (not lines[-1][0] or (len(lines[-1][0]) <= dedup.FOOTER_MAX_WORDS
                                          and dedup._FOOTER.search(lines[-1][1]))):
        lines.pop()
    return [w for words, _ in lines for w in words]


def _reference_shingles(text: str, n: int) -> frozenset[tuple[str, ...]]:
    words = _reference_words(text)
    if not words:
        flat = " ".join(text.lower().split())
        return frozenset({(flat,)}) if flat else frozenset()
    if len(words) < n:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _reference_groups(texts: list[str], threshold: float) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, text in enumerate(texts):
        sh = _reference_shingles(text, 3)
        for group in groups:
            leader = _reference_shingles(texts[group[0]], 3)
            common = len(sh & leader)
            if common and common / (len(sh) + len(leader) - common) >= threshold:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


TRICKY = [
    "", " \n ", "WWW.EXAMPLE.COM и ещё WwW.x.ru", "итог: t.me/chan и BIT.LY/abc", "http://a.b/c",
    "[ссылка](https://t.me/x) текст\n[Подписаться](https://t.me/y)", "[скобки] (не ссылка)",
    "@канал #тег текст", "почта a@b.ru", "ΟΔΟΣ'Α ΟΔΟΣ\nİstanbul İSTANBUL",
    "строка\r\nвторая\x85третья",
    "Ёлка ёжик\u2028Подписаться на канал", "Путин подписался под указом\nподписывайтесь на нас",
    "один", "два слова", "#только #теги", "🔥🔥", *CROSS_POSTS,
]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shingles_are_the_plain_definition(n: int) -> None:
    for text in TRICKY:
        assert normalized_words(text) == _reference_words(text), text
        assert shingles(text, n) == _reference_shingles(text, n), text


def test_grouping_is_the_plain_definition() -> None:
    import random

    rng = random.Random(7)
    pool = [*TRICKY, NEWS + " Второе предложение новости о бензине.", "Другая новость о погоде."]
    for _ in range(300):
        texts = [rng.choice(pool) for _ in range(rng.randint(1, 25))]
        for threshold in (0.5, 0.8, 1.0):
            assert group_copies(texts, threshold) == _reference_groups(texts, threshold)
