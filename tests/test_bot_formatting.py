"""The bot's pure parts: access lists, rate limits, query and button parsing, Telegram HTML
(escaping, highlights, the 4,096-character limit) and the texts."""

from __future__ import annotations

import pytest
from telethon import types
from telethon.extensions import html as telegram_html
from telethon.helpers import add_surrogate

from api.bot.access import AccessList, Grant, RateLimits, TokenBucket
from api.bot.backend import ChannelRow
from api.bot.callbacks import (
    FollowAction,
    PageAction,
    SimilarAction,
    follow_data,
    page_data,
    parse_action,
    similar_data,
)
from api.bot.formatting import (
    channels_messages,
    final_answer,
    hit_block,
    marked,
    results_page,
    split_blocks,
)
from api.bot.markup import MAX_MESSAGE, Html, escape, visible_length
from api.bot.query import QueryFilters, is_question, parse_query, split_command
from api.bot.texts import language, posts_count, t
from rag.errors import InputError
from rag.search import PostHit
from tests.fake_telegram import utf16_len


def hit(n: int, snippet: str = "Банк России повысил ключевую ставку", **kw: object) -> PostHit:
    values: dict = {"id": f"tg:1001:{n}", "channel_id": 1001, "channel": "econ_daily",
                    "channel_title": "Экономика за день", "message_id": n, "date": 1714557600,
                    "link": f"https://t.me/econ_daily/{n}", "score": 0.9, "snippet": snippet,
                    "tags": []}
    values.update(kw)
    return PostHit(**values)


def parsed(text: Html) -> tuple[str, list]:
    return telegram_html.parse(text)


# -- access ---------------------------------------------------------------------------------------


def test_access_lists_ids_usernames_tenants_and_admins() -> None:
    access = AccessList.parse(["123", "@Alice:acme", " 456:globex "], ["789", "@Boss"])
    assert access.lookup(123, None) == Grant("default")
    assert access.lookup(999, "alice") == Grant("acme")  # by username, any case
    assert access.lookup(999, "ALICE") == Grant("acme")
    assert access.lookup(456, "alice") == Grant("globex")  # the id wins over the username
    assert access.lookup(789, None) == Grant("default", admin=True)
    assert access.lookup(1, "boss") == Grant("default", admin=True)
    assert access.lookup(1, "mallory") is None and access.lookup(1, None) is None
    assert AccessList.parse([], []).empty  # nobody by default


@pytest.mark.parametrize(("users", "admins", "message"), [
    (["alice"], [], "'alice' is neither a Telegram user id nor an @username"),
    (["@a"], [], "neither a Telegram user id"),
    (["-5"], [], "neither a Telegram user id"),
    (["123:Bad Tenant!"], [], "invalid tenant name"),
    (["123:acme", "123:globex"], [], "twice with different tenants"),
    ([], ["123:acme"], "TGRAG_BOT_ADMINS: '123:acme' names a tenant"),
    (["123:acme"], ["123"], "'123' is an admin but TGRAG_BOT_USERS gives it tenant 'acme'"),
])
def test_access_lists_refuse_bad_entries(users: list[str], admins: list[str],
                                         message: str) -> None:
    with pytest.raises(InputError, match=message):
        AccessList.parse(users, admins)


def test_rate_limit_buckets_per_user_and_one_for_strangers() -> None:
    now = [0.0]
    limits = RateLimits(3, clock=lambda: now[0])
    assert [limits.allow(1) is None for _ in range(4)] == [True, True, True, False]
    empty = limits.allow(1)
    assert isinstance(empty, TokenBucket) and empty.retry_after() == 20
    assert limits.allow(2) is None  # another user has their own bucket
    now[0] += 20
    assert limits.allow(1) is None and limits.allow(1) is not None
    assert sum(limits.may_refuse() for _ in range(50)) == 20  # strangers: one small budget
    assert set(limits._buckets) == {1, 2}
    assert RateLimits(0).allow(1) is None  # 0 = no limit


# -- query and buttons ----------------------------------------------------------------------------


def test_query_filters_and_commands() -> None:
    q = parse_query("курс рубля @Econ_Daily @econ_daily #Ставка since:2024-05-01 "
                    "until:2024-05-31 e-mail@x.ru")
    assert q.text == "курс рубля e-mail@x.ru"
    assert q.filters == QueryFilters(("econ_daily",), ("ставка",), 1714521600, 1717199999)
    assert parse_query("#ключевая_ставка").text == "ключевая ставка"
    assert parse_query("@econ_daily").text == ""  # filters only: nothing to search for
    with pytest.raises(InputError, match="invalid date"):
        parse_query("курс since:завтра")
    with pytest.raises(InputError, match="since: is after until:"):
        parse_query("курс since:2024-06-02 until:2024-06-01")
    assert split_command("/search@tgrag_bot курс  рубля") == ("search", "курс  рубля")
    assert split_command("/ASK что?") == ("ask", "что?")
    assert split_command("курс /search") == (None, "курс /search")
    assert is_question("что с рублём? ") and not is_question("курс рубля")


def test_button_data_round_trips_and_refuses_anything_else() -> None:
    assert parse_action(page_data(12, 5)) == PageAction(12, 5)
    assert parse_action(similar_data(12, 5, 1643920815, 22)) == SimilarAction(12, 5,
                                                                              1643920815, 22)
    assert parse_action(follow_data("technews", 5)) == FollowAction("technews")
    assert parse_action(follow_data("", 1643920815)) == FollowAction("c1643920815")
    assert len(similar_data(10**11, 400, 10**15, 10**11)) <= 64
    for data in (None, b"", b"p:1", b"p:1:401", b"p:x:1", b"s:1:0:1:0", b"f:a b",
                 b"p:1:5" + b" " * 64, b"v0:page:2", "p:١:5".encode()):
        assert parse_action(data) is None, data


# -- HTML ---------------------------------------------------------------------------------------


def test_matched_words_bold_and_everything_else_escaped() -> None:
    snippet = "a <b>x</b> & повысил ставку"
    text, entities = parsed(marked(snippet, [(13, 20), (2, 10)]))
    assert text == snippet
    wide = add_surrogate(text)
    assert [wide[e.offset:e.offset + e.length] for e in entities] == ["<b>x</b>", "повысил"]
    assert all(isinstance(e, types.MessageEntityBold) for e in entities)
    # out-of-range or overlapping spans never break the markup
    assert parsed(marked("abc", [(1, 99), (0, 2)]))[0] == "abc"


def test_a_hostile_post_is_text_in_every_field() -> None:
    evil = hit(1, snippet='<a href="https://evil.example">клик</a> </b><i>',
               channel_title="</b><script>", link='https://t.me/x/1"><a href="https://e.v')
    text, entities = parsed(hit_block(evil, "ru", 1))
    assert '<a href="https://evil.example">клик</a> </b><i>' in text
    assert "</b><script>" in text
    urls = [e.url for e in entities if isinstance(e, types.MessageEntityTextUrl)]
    assert urls == ['https://t.me/x/1"><a href="https://e.v']  # one link, its href intact
    assert t("ru", "no_results", query="<b>q</b>") == (
        "🔎 По запросу <b>&lt;b&gt;q&lt;/b&gt;</b> ничего не нашлось.")


def test_a_results_page_stays_under_the_limit_at_a_post_boundary() -> None:
    hits = [hit(n, snippet="слово " * 300) for n in range(1, 6)]  # 1,800 characters each
    view = results_page("слово", hits, 10, 15, "ru")
    assert visible_length(view.text) <= MAX_MESSAGE
    assert len(view.shown) == 2 and view.next_offset == 12  # the next page starts at post 13
    assert view.text.startswith("🔎 <b>слово</b> · 11–12")
    small = results_page("слово", [hit(1)], 0, None, "en")
    assert small.shown == [hit(1)] and small.next_offset is None
    assert results_page("q", [], 5, None, "en").text == "🔎 <b>q</b>: no more results."


def test_long_answers_split_into_messages_with_their_citations_linked() -> None:
    sentence = "Ставка выросла, и банки подняли проценты по вкладам [1]. "
    answer = {"answer": sentence * 200 + "\n\nИтог: всё дорожает [2].", "mode": "generative",
              "sources": [{"n": 1, "link": "https://t.me/econ_daily/1", "channel": "econ_daily",
                           "date": "2024-05-01T10:00:00+00:00"},
                          {"n": 2, "link": "https://t.me/econ_daily/5", "channel": "econ_daily",
                           "date": "2024-05-05T10:00:00+00:00"}]}
    messages = final_answer(answer, "ru")
    assert len(messages) >= 3
    for message in messages:
        plain, _ = parsed(message)
        assert utf16_len(plain) <= MAX_MESSAGE
    texts = [parsed(m)[0] for m in messages]
    assert "".join(texts).count("[1]") == 201  # 200 citations and the source line
    assert texts[-1].endswith("Источники:\n[1] econ_daily · 01.05.2024\n[2] econ_daily · "
                              "05.05.2024")
    urls = [e.url for m in messages for e in parsed(m)[1]
            if isinstance(e, types.MessageEntityTextUrl)]
    assert urls.count("https://t.me/econ_daily/1") == 201
    assert final_answer({"answer": "x", "mode": "not_found", "sources": []}, "en") == [
        "Nothing relevant found; try other words or fewer filters."]


def test_channel_lists_split_and_a_block_too_long_is_cut_as_text() -> None:
    rows = [ChannelRow(ref=f"c{i}", channel_id=i, username=f"chan_{i}", title=f"Канал №{i}",
                       posts=i, last_post=1714557600, followed=i % 2 == 0,
                       last_sync=1714557600 if i % 4 == 0 else None) for i in range(300)]
    messages = channels_messages(rows, "ru", admin=False)
    assert len(messages) >= 2
    assert all(visible_length(m) <= MAX_MESSAGE for m in messages)
    everything = "\n".join(parsed(m)[0] for m in messages)
    assert all(f"Канал №{i} @chan_{i}" in everything for i in range(300))
    assert "Канал №4 @chan_4 — 4 поста · синхр. 01.05.2024 10:00 UTC" in everything
    assert "Канал №2 @chan_2 — 2 поста · ещё не синхронизирован" in everything
    assert "Канал №1 @chan_1 — 1 пост · последний пост 01.05.2024" in everything
    (cut,) = split_blocks([escape("я" * 5000)])
    assert visible_length(cut) == MAX_MESSAGE and parsed(cut)[0].endswith("…")
    (emoji,) = split_blocks([escape("🚀" * 3000)])  # two UTF-16 units each
    assert utf16_len(parsed(emoji)[0]) <= MAX_MESSAGE
    huge = hit(1, snippet="слово " * 1000)  # a post too long for any message: cut, not skipped
    view = results_page("слово", [huge, hit(2)], 0, None, "ru")
    assert view.shown == [huge] and view.next_offset == 1
    assert visible_length(view.text) <= MAX_MESSAGE


def test_language_and_plurals() -> None:
    assert language("en") == language("en-US") == "en"
    assert language("ru") == language(None) == language("de") == "ru"
    assert [posts_count("ru", n) for n in (1, 2, 5, 11, 21, 22, 112)] == [
        "1 пост", "2 поста", "5 постов", "11 постов", "21 пост", "22 поста", "112 постов"]
    assert posts_count("en", 1) == "1 post" and posts_count("en", 2) == "2 posts"
