"""The Telegram bot through the fake Telegram: a real ``TelegramClient`` logged in as a bot (its
MTProto sender is the fake of ``tests/fake_telegram.py``), the real handlers, the real index.

People write to the bot, press its buttons and type inline queries on the fake server; the tests
read what the bot showed from the server's side (every version of every message), so they see
exactly what a user would: text, formatting entities and buttons.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from telethon import functions, types

from api.bot.access import AccessList
from api.bot.client import make_bot_client
from api.bot.runner import BotRunner
from api.bot.services_backend import ServicesBackend
from api.bot.status import StatusBoard
from api.services import Services
from ingest.documents import Post
from ingest.jobs import stamp_tenant
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from tests.conftest import LOCAL, module_settings
from tests.fake_gigachat import FakeGigaChat, Reply, gigachat_llm
from tests.fake_telegram import (
    FakeBot,
    FakeChannel,
    FakeTelegram,
    buttons_of,
    run,
)
from tests.search_corpus import ECON_TEXTS, corpus, ts

ALICE, BOB, ACME_USER, ADMIN, STRANGER = 501, 502, 503, 504, 666
REPOSTS = (1004, "reposts", "Репосты")
EVIL = (1005, "evil_chan", "<i>Злой</i> канал & Co")
HOSTILE = ('Спутник «Луна-Глоб» запущен. <b>жирный</b> и <a href="https://evil.example/x">'
           "ссылка</a> & ещё &amp; текст")
ACME_TEXT = "Акме открыла завод по выпуску роботов-пылесосов в Подмосковье"
ACME_CHANNEL = (3001, "acme_news", "Новости Акме")


def _post(channel: tuple[int, str, str], message_id: int, day: int, text: str) -> Post:
    cid, username, title = channel
    return Post(channel_id=cid, channel=username, channel_title=title, message_id=message_id,
                date=ts(day), text=text)


@pytest.fixture(scope="module")
def bot_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = module_settings(tmp_path_factory, "bot")
    with Index.open(settings, purpose="pytest bot") as index:
        posts = corpus()
        posts.append(_post(REPOSTS, 1, 3, ECON_TEXTS[0]))  # a copy of econ_daily/1
        posts.append(_post(EVIL, 1, 4, HOSTILE))
        PostPipeline(index).ingest(posts)
        acme = index.for_tenant("acme")
        PostPipeline(acme).ingest(list(stamp_tenant([_post(ACME_CHANNEL, 1, 5, ACME_TEXT)],
                                                    "acme")))
    return settings


@pytest.fixture(scope="module")
def bot_index(bot_settings: Settings) -> Iterator[Index]:
    index = Index.open(bot_settings, purpose="pytest bot")
    try:
        yield index
    finally:
        index.close()


class Harness:
    """One bot process over the fake Telegram, and the people who talk to it."""

    def __init__(self, index: Index, session_dir: Path, *, fake: FakeTelegram | None = None,
                 bot: FakeBot | None = None, llm: Any = None, sync: Any = None,
                 users: tuple[str, ...] = (f"{ALICE}", "@bob_user", f"{ACME_USER}:acme"),
                 admins: tuple[str, ...] = (f"{ADMIN}",), rate_limit: int = 0,
                 edit_interval: float = 0.2) -> None:
        self.index = index
        self.fake = fake or FakeTelegram(require_auth=True)
        self.bot = bot or self.fake.add_bot()
        for uid, name, username, lang in [(ALICE, "Алиса", "alice", "ru"),
                                         (BOB, "Bob", "bob_user", "en"),
                                         (ACME_USER, "Акме", None, "ru"),
                                         (ADMIN, "Админ", "admin", "ru"),
                                         (STRANGER, "Stranger", "stranger", "en")]:
            if uid not in self.fake.people:
                self.fake.add_person(uid, name, username=username, lang_code=lang)
        self.settings = Settings(data_dir=session_dir, tg_api_id=1, tg_api_hash="x",
                                 tg_bot_token=self.bot.token,
                                 _env_file=None)  # type: ignore[call-arg]
        self.runner = BotRunner(
            self.bot.token, ServicesBackend(Services(index, llm=llm), sync=sync),
            lambda: self.fake.attach(make_bot_client(self.settings)),
            access=AccessList.parse(list(users), list(admins)), rate_limit=rate_limit,
            edit_interval=edit_interval, board=StatusBoard(index.redis, index.namespace),
            backoff=(0.05, 0.4), heartbeat=0.3,
        )

    def person(self, user_id: int) -> types.User:
        return self.fake.people[user_id]

    async def start(self) -> None:
        await self.runner.start()
        await until(lambda: self.runner.state == "ok", "the bot to log in")

    async def stop(self) -> None:
        await self.runner.stop()

    async def ask(self, user_id: int, text: str, **kw: Any) -> types.Message:
        """``user_id`` writes ``text``; returns the bot's first new message once it is there."""
        person = self.person(user_id)
        before = len(self.bot.sent(person))
        self.bot.write(person, text, **kw)
        await until(lambda: len(self.bot.sent(person)) > before, f"the bot's reply to {text!r}")
        return self.bot.sent(person)[before]

    async def press(self, user_id: int, message: types.Message, label: str) -> Any:
        """Press a button; returns the callback answer once the bot gave it."""
        query = self.bot.click(self.person(user_id), message, label)
        await until(lambda: query in self.bot.callback_answers, f"the answer to {label!r}")
        return self.bot.callback_answers[query]


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def with_bot(index: Index, tmp_path: Path, scenario: Callable[[Harness], Awaitable[None]],
             **options: Any) -> Harness:
    harness = Harness(index, tmp_path / "session", **options)

    async def main() -> None:
        await harness.start()
        try:
            await scenario(harness)
        finally:
            await harness.stop()

    run(main())
    return harness


def plain(message: Any) -> str:
    return message.message


def bold_words(message: Any) -> list[str]:
    text = message.message
    from telethon.helpers import add_surrogate, del_surrogate

    wide = add_surrogate(text)
    return [del_surrogate(wide[e.offset:e.offset + e.length]) for e in message.entities or []
            if isinstance(e, types.MessageEntityBold)]


def links(message: Any) -> list[str]:
    return [e.url for e in message.entities or [] if isinstance(e, types.MessageEntityTextUrl)]


# -- search ---------------------------------------------------------------------------------------


def test_search_pages_by_buttons_editing_one_message(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        alice = h.person(ALICE)
        first = await h.ask(ALICE, "станции метро")
        assert first.message.startswith("🔎 станции метро · 1–5")
        assert "метро" in [w.lower() for w in bold_words(first)]
        assert any(u.startswith("https://t.me/moscow_city/") for u in links(first))
        rows = buttons_of(first)
        assert [text for text, _ in rows[-1]] == ["Дальше ▶"]
        assert [text for row in rows[:-1] for text, _ in row] == [
            f"Похожие на {n}" for n in range(1, 6)]

        answer = await h.press(ALICE, first, "Дальше ▶")
        assert answer.message is None  # no toast: the message itself changed
        second = h.bot.messages[first.id]
        assert second.message.startswith("🔎 станции метро · 6–10")
        assert [text for text, _ in buttons_of(second)[-1]] == ["◀ Назад", "Дальше ▶"]
        assert set(links(second)).isdisjoint(links(first))  # other posts

        await h.press(ALICE, second, "◀ Назад")
        back = h.bot.messages[first.id]
        assert back.message == first.message and links(back) == links(first)
        assert len(h.bot.sent(alice)) == 1  # one message, edited: nothing new was sent

    with_bot(bot_index, tmp_path, scenario)


def test_similar_posts_and_back_to_the_results(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        first = await h.ask(ALICE, "/search ключевую ставку")
        assert first.message.startswith("🔎 ключевую ставку · 1–5")
        top = links(first)[0]
        assert top == "https://t.me/econ_daily/1"
        # its copy in another channel is not a result of its own but listed with it
        assert "также в: Репосты" in first.message
        assert "https://t.me/reposts/1" in links(first)

        await h.press(ALICE, first, "Похожие на 1")
        similar = h.bot.messages[first.id]
        assert similar.message.startswith("Похожие на пост Экономика за день, 01.05.2024:")
        assert top not in links(similar) and "https://t.me/reposts/1" not in links(similar)
        assert len(set(links(similar))) >= 3
        labels = [text for row in buttons_of(similar) for text, _ in row]
        assert labels[-1] == "← К результатам" and "Похожие на 1" in labels

        await h.press(ALICE, similar, "← К результатам")
        assert h.bot.messages[first.id].message == first.message

    with_bot(bot_index, tmp_path, scenario)


def test_inline_filters_channel_and_dates(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        only_city = await h.ask(ALICE, "ремонт @moscow_city")
        assert links(only_city) and all(
            u.startswith("https://t.me/moscow_city/") for u in links(only_city))
        late_may = await h.ask(ALICE, "новости since:2024-05-20 until:2024-05-25")
        dates = [line.rsplit(" · ", 1)[1] for line in late_may.message.splitlines()[1:]
                 if line[:1].isdigit() and " · " in line]
        assert dates and all(d.endswith(".05.2024") and 20 <= int(d[:2]) <= 25
                             for d in dates), dates
        bad = await h.ask(ALICE, "курс since:вчера")
        assert bad.message.startswith("Не получилось разобрать запрос: invalid date 'вчера'")
        unknown = await h.ask(ALICE, "курс @nosuchchannel")
        assert "unknown channel 'nosuchchannel'" in unknown.message
        assert "econ_daily" not in unknown.message  # the hint's list of channels is not shown

    with_bot(bot_index, tmp_path, scenario)


def test_a_hostile_post_shows_as_text(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        found = await h.ask(ALICE, "спутник Луна-Глоб")
        text = found.message
        # the post's markup and the channel title's are plain characters on screen…
        assert '<b>жирный</b> и <a href="https://evil.example/x">ссылка</a> & ещё &amp;' in text
        assert "<i>Злой</i> канал & Co" in text
        # …and no entity came from them: only our bold (title, matched words) and t.me links
        assert all(u.startswith("https://t.me/") for u in links(found))
        assert "жирный" not in bold_words(found) and "ссылка" not in bold_words(found)
        assert {type(e) for e in found.entities} <= {types.MessageEntityBold,
                                                     types.MessageEntityTextUrl}

        inline = h.bot.inline(h.person(ALICE), "спутник Луна-Глоб")
        await until(lambda: inline in h.bot.inline_answers, "the inline answer")
        article = h.bot.inline_answers[inline].results[0]
        assert "<i>Злой</i> канал" in article.title
        sent = article.send_message
        assert "<b>жирный</b>" in sent.message
        assert all(isinstance(e, types.MessageEntityBold | types.MessageEntityTextUrl)
                   for e in sent.entities)
        assert all(e.url.startswith("https://t.me/") for e in sent.entities
                   if isinstance(e, types.MessageEntityTextUrl))

    with_bot(bot_index, tmp_path, scenario)


# -- who may use it -------------------------------------------------------------------------------

REFUSAL_RU = "Извините, этот бот доступен только приглашённым пользователям."
REFUSAL_EN = "Sorry, this bot is only available to invited users."


def test_a_stranger_gets_one_polite_sentence_and_nothing_else(
    bot_index: Index, tmp_path: Path
) -> None:
    async def scenario(h: Harness) -> None:
        stranger = h.person(STRANGER)
        alice_msg = await h.ask(ALICE, "ключевую ставку")  # a results message exists in a chat
        for text in ("ключевую ставку", "/channels", "/help", "что с метро?", "/follow @x"):
            reply = await h.ask(STRANGER, text)
            assert reply.message == REFUSAL_EN and not reply.entities
            assert reply.reply_markup is None
        # a forged button press (a page of Alice's results) and an inline query
        query = h.bot.forge_click(stranger, alice_msg.id, buttons_of(alice_msg)[-1][0][1])
        await until(lambda: query in h.bot.callback_answers, "the callback answer")
        assert h.bot.callback_answers[query].message == REFUSAL_EN
        inline = h.bot.inline(stranger, "ключевую ставку")
        await until(lambda: inline in h.bot.inline_answers, "the inline answer")
        answer = h.bot.inline_answers[inline]
        assert answer.results == [] and answer.private
        assert answer.switch_pm.text == "Only invited users can use this bot"
        # nothing else reached the stranger: five refusals, Alice's message untouched
        assert [m.message for m in h.bot.sent(stranger)] == [REFUSAL_EN] * 5
        assert h.bot.edits_of(alice_msg.id) == []
        # a stranger writing in Russian gets the Russian sentence
        h.fake.add_person(667, "Пётр", lang_code="ru")
        assert (await h.ask(667, "привет")).message == REFUSAL_RU

    with_bot(bot_index, tmp_path, scenario)


def test_groups_are_ignored_not_even_counted(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        for _ in range(3):  # more than Alice's budget, were they handled
            h.bot.write(h.person(ALICE), "ключевую ставку", in_group=4242)
        await asyncio.sleep(0.5)
        reply = await h.ask(ALICE, "станции метро")
        assert reply.message.startswith("🔎 станции метро")
        assert not any(isinstance(r, functions.messages.SendMessageRequest)
                       and not isinstance(r.peer, types.InputPeerUser) for r in h.fake.requests)

    with_bot(bot_index, tmp_path, scenario, rate_limit=2)


def test_strangers_share_one_small_budget_of_refusals(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        people = [h.fake.add_person(7000 + i, f"p{i}") for i in range(25)]
        for person in people:
            h.bot.write(person, "привет")
        await until(lambda: sum(len(h.bot.sent(p)) for p in people) >= 20, "the refusals")
        await asyncio.sleep(0.5)
        assert sum(len(h.bot.sent(p)) for p in people) == 20  # then silence
        assert len(h.runner.limits._buckets) == 0  # and no per-stranger state

    with_bot(bot_index, tmp_path, scenario)


def test_a_tenant_never_sees_another_tenants_posts(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        acme = await h.ask(ACME_USER, "роботов-пылесосов")
        assert links(acme) == ["https://t.me/acme_news/1"]
        # the default tenant's posts exist for no query of acme's
        for query in ("ключевую ставку", "станции метро", "спутник Луна-Глоб"):
            reply = await h.ask(ACME_USER, query)
            assert set(links(reply)) <= {"https://t.me/acme_news/1"}, query
        # and acme's post for none of Alice's
        alice = await h.ask(ALICE, "завод роботов-пылесосов")
        assert "https://t.me/acme_news/1" not in links(alice)
        assert "Акме" not in alice.message
        # forged "similar" data naming a default-tenant post: not found, nothing shown
        own = acme
        query = h.bot.forge_click(h.person(ACME_USER), own.id,
                                  f"s:{own.id - 1}:0:1001:1".encode())
        await until(lambda: query in h.bot.callback_answers, "the callback answer")
        assert h.bot.callback_answers[query].message.startswith("Не нашёл")
        assert h.bot.edits_of(own.id) == []
        # a forged page button naming Alice's query (message ids are per bot, not per chat)
        alice_query = h.bot.chat(h.person(ALICE))[-2]
        assert not alice_query.out and alice_query.message == "завод роботов-пылесосов"
        query = h.bot.forge_click(h.person(ACME_USER), own.id, f"p:{alice_query.id}:0".encode())
        await until(lambda: query in h.bot.callback_answers, "the callback answer")
        assert h.bot.callback_answers[query].message == (
            "Исходный запрос удалён — отправьте его ещё раз.")
        assert h.bot.edits_of(own.id) == []
        channels = await h.ask(ACME_USER, "/channels")
        assert "Новости Акме" in channels.message and "Экономика" not in channels.message
        inline = h.bot.inline(h.person(ACME_USER), "ключевую ставку")
        await until(lambda: inline in h.bot.inline_answers, "the inline answer")
        assert [r.id for r in h.bot.inline_answers[inline].results] == ["acme/tg:3001:1"]

    with_bot(bot_index, tmp_path, scenario)


# -- ask ------------------------------------------------------------------------------------------

ANSWER = ("Банк России повысил ключевую ставку до 16% годовых из-за высокой инфляции и роста "
          "кредитования [1].")


def answer_versions(h: Harness, placeholder: types.Message) -> list[types.Message]:
    return [h.bot.versions[placeholder.id][0], *h.bot.edits_of(placeholder.id)]


def test_ask_streams_the_answer_into_one_message_then_its_sources(
    bot_index: Index, tmp_path: Path, fake: FakeGigaChat
) -> None:
    fake.then(Reply(content=ANSWER, word_delay=0.08))

    async def scenario(h: Harness) -> None:
        h.bot.min_edit_interval = 0.2  # Telegram's limit here: faster edits get FLOOD_WAIT
        question_id = h.bot.next_id
        placeholder = await h.ask(ALICE, "что случилось с ключевой ставкой?")
        assert placeholder.message == "⏳ Ищу ответ…"
        assert placeholder.reply_to.reply_to_msg_id == question_id
        await until(lambda: "Источники:" in h.bot.messages[placeholder.id].message, "the end")
        *partial, final = h.bot.edits_of(placeholder.id)
        assert len(partial) >= 3  # it was shown as it was written
        shown = [v.message.removesuffix(" ▍") for v in partial]
        assert all(v.message.endswith(" ▍") for v in partial)
        assert all(ANSWER.startswith(s) for s in shown)
        assert [len(s) for s in shown] == sorted(len(s) for s in shown)
        body, sources = final.message.split("\n\nИсточники:\n")
        assert body == ANSWER
        assert sources.startswith("[1] econ_daily · 01.05.2024")
        assert links(final)[0] == "https://t.me/econ_daily/1"  # the [1] in the text
        assert "https://t.me/econ_daily/1" in links(final)[1:]  # and the source line
        times = [t for t, mid in h.bot.edit_times if mid == placeholder.id]
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.2
        assert h.bot.floods == 0  # throttled below the limit: never asked to wait
        assert len(h.bot.sent(h.person(ALICE))) == 1

    with_bot(bot_index, tmp_path, scenario, llm=gigachat_llm(fake), edit_interval=0.25)


def test_ask_honours_flood_wait_on_edits(
    bot_index: Index, tmp_path: Path, fake: FakeGigaChat
) -> None:
    fake.then(Reply(content=ANSWER, word_delay=0.05))

    async def scenario(h: Harness) -> None:
        h.bot.flood_edits = [2]  # the first edit: "wait 2 seconds"
        placeholder = await h.ask(ALICE, "что случилось с ключевой ставкой?")
        await until(lambda: "Источники:" in h.bot.messages[placeholder.id].message, "the end")
        (refused_at, _), *later = h.bot.edit_attempts
        assert h.bot.floods == 1
        assert later and later[0][0] - refused_at >= 2.0  # nothing before the wait was over
        final = h.bot.messages[placeholder.id]
        assert final.message.startswith(ANSWER)

    with_bot(bot_index, tmp_path, scenario, llm=gigachat_llm(fake), edit_interval=0.1)


def test_ask_without_an_llm_is_extractive_and_says_when_nothing_is_relevant(
    bot_index: Index, tmp_path: Path
) -> None:
    async def scenario(h: Harness) -> None:
        placeholder = await h.ask(ALICE, "/ask что случилось с ключевой ставкой")
        await until(lambda: "Источники:" in h.bot.messages[placeholder.id].message, "the end")
        final = h.bot.messages[placeholder.id]
        # a story question: one dated sentence per post (rag.qa.extractive_answer)
        assert final.message.startswith(
            "По найденным постам, по датам:\n01.05.2024: Банк России повысил ключевую")
        assert "(ответ собран из цитат: языковая модель не подключена)" in final.message
        assert "https://t.me/econ_daily/1" in links(final)
        assert len(h.bot.edits_of(placeholder.id)) == 1  # it came whole: one edit

        nothing = await h.ask(BOB, "recipe of a perfect borscht with garlic buns?")
        await until(lambda: h.bot.edits_of(nothing.id), "the end")
        await asyncio.sleep(0.3)
        # one edit: straight from "Looking for an answer…" to the (English) verdict
        assert [m.message for m in h.bot.versions[nothing.id]] == [
            "⏳ Looking for an answer…",
            "Nothing relevant found; try other words or fewer filters."]

    # An answer that is ready before the first edit is allowed is shown by one edit. A long
    # interval keeps "ready before" true on a loaded machine, where selecting the sentences
    # alone can outlast the usual 0.2 s (the answer's text was then shown once as a stream).
    with_bot(bot_index, tmp_path, scenario, edit_interval=3.0)


# -- errors ---------------------------------------------------------------------------------------


def test_a_backend_or_llm_failure_is_one_sentence_and_the_bot_goes_on(
    bot_index: Index, tmp_path: Path, fake: FakeGigaChat, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.bot import services_backend
    from rag.errors import BackendUnavailable

    real_search = services_backend.ServicesTenantBackend.search
    failures = iter([BackendUnavailable("Qdrant at http://qdrant:6333 refused the connection"),
                     RuntimeError("a bug deep inside")])

    def flaky(self: Any, *args: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_search(self, *args)

    monkeypatch.setattr(services_backend.ServicesTenantBackend, "search", flaky)
    fake.then(*[Reply(status=500)] * 3)  # the LLM fails, retries included

    async def scenario(h: Harness) -> None:
        sorry = "Не получилось ответить: сервис временно недоступен, попробуйте позже."
        for _ in range(2):
            reply = await h.ask(ALICE, "ключевую ставку")
            assert reply.message == sorry  # the cause is not shown…
        assert "refused the connection" in caplog.text and "a bug deep inside" in caplog.text
        placeholder = await h.ask(ALICE, "что случилось с ключевой ставкой?")
        await until(lambda: h.bot.edits_of(placeholder.id), "the answer")
        assert h.bot.messages[placeholder.id].message == (
            "Не получилось написать ответ: языковая модель недоступна, попробуйте позже.")
        works = await h.ask(ALICE, "ключевую ставку")  # …and the bot is still there
        assert works.message.startswith("🔎 ключевую ставку · 1–5")
        assert h.runner.state == "ok" and len(h.runner.attempt_times) == 1

    with caplog.at_level("INFO", logger="tgrag.bot"):
        with_bot(bot_index, tmp_path, scenario, llm=gigachat_llm(fake))


def test_rate_limit_per_user_says_so_once(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        alice = h.person(ALICE)
        for _ in range(5):
            h.bot.write(alice, "курс доллара")
        await until(lambda: len(h.bot.sent(alice)) >= 4, "the replies")
        await asyncio.sleep(0.5)
        texts = [m.message for m in h.bot.sent(alice)]
        assert len(texts) == 4  # three answers, one "please wait", then silence
        assert sum(t.startswith("🔎 курс доллара") for t in texts) == 3
        assert [t for t in texts if not t.startswith("🔎")] == [
            "Слишком много запросов: подождите 20 с."]
        bob = await h.ask(BOB, "exchange rate")  # other users have their own budget
        assert bob.message.startswith("🔎 exchange rate")

    with_bot(bot_index, tmp_path, scenario, rate_limit=3)


# -- restarts and connections ---------------------------------------------------------------------


def test_a_restarted_bot_resumes_old_buttons_and_what_was_sent_meanwhile(
    bot_index: Index, tmp_path: Path
) -> None:
    fake = FakeTelegram(require_auth=True)
    tgbot = fake.add_bot()
    session = tmp_path / "session"
    old: dict[str, types.Message] = {}

    async def first_life(h: Harness) -> None:
        old["results"] = await h.ask(ALICE, "станции метро")

    with_bot(bot_index, tmp_path, first_life, fake=fake, bot=tgbot)
    alice = fake.people[ALICE]
    assert (session / f"bot-{tgbot.id}.session").stat().st_mode & 0o777 == 0o600
    tgbot.write(alice, "курс доллара")  # while the bot is down

    async def second_life(h: Harness) -> None:
        # what came while it was down is answered (Telegram keeps a bot's updates)
        await until(lambda: any(m.message.startswith("🔎 курс доллара")
                                for m in h.bot.sent(alice)), "the missed message's answer")
        results = old["results"]
        await h.press(ALICE, results, "Дальше ▶")  # a button from before the restart
        assert h.bot.messages[results.id].message.startswith("🔎 станции метро · 6–10")
        stale = h.bot.forge_click(alice, results.id, b"v0:page:2")  # a format no longer made
        await until(lambda: stale in h.bot.callback_answers, "the stale button")
        assert h.bot.callback_answers[stale].message == (
            "Эта кнопка устарела — отправьте запрос ещё раз.")
        assert h.bot.callback_answers[stale].alert
        del h.bot.messages[results.id - 1]  # Alice deleted her query
        answer = await h.press(ALICE, h.bot.messages[results.id], "◀ Назад")
        assert answer.message == "Исходный запрос удалён — отправьте его ещё раз."
        assert h.bot.messages[results.id].message.startswith("🔎 станции метро · 6–10")

    with_bot(bot_index, tmp_path, second_life, fake=fake, bot=tgbot)
    assert tgbot.logins == 1  # the session file kept the login


def test_network_loss_and_a_revoked_token_are_retried_with_backoff_and_shown_by_ready(
    bot_index: Index, bot_settings: Settings, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    http = TestClient(create_app(bot_settings, index=bot_index), client=LOCAL)

    def ready() -> str | None:
        return http.get("/ready").json().get("bot")

    async def scenario(h: Harness) -> None:
        assert ready() == "ok (@tgrag_bot)"
        (conn,) = [s for s in h.fake.senders if s.is_connected()]
        h.fake.refuse_connections = True
        conn.drop(ConnectionError("connection reset by peer"))
        await until(lambda: len(h.runner.attempt_times) >= 4, "reconnection attempts")
        assert h.runner.state == "offline"
        assert ready() == "offline (@tgrag_bot): network is unreachable"
        times = h.runner.attempt_times
        gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # backoff 0.05 s, doubling (here up to 0.4)
        h.fake.refuse_connections = False
        await until(lambda: h.runner.state == "ok", "the reconnection")
        assert (await h.ask(ALICE, "ключевую ставку")).message.startswith("🔎")

        h.bot.revoke()  # @BotFather /revoke: this process still has the old token
        await until(lambda: h.runner.state == "unauthorized", "the heartbeat to notice")
        await until(lambda: "revoked" in h.runner.detail, "a login with the old token")
        assert ready() == ("unauthorized (@tgrag_bot): the bot token was revoked (@BotFather "
                           "/revoke); set the new TGRAG_TG_BOT_TOKEN")
        tries = len(h.runner.attempt_times)
        await until(lambda: len(h.runner.attempt_times) >= tries + 2, "more attempts")
        assert h.runner.state == "unauthorized"  # it keeps trying, and says why

    with http:
        with_bot(bot_index, tmp_path, scenario)
        assert ready() is None  # stopped: nothing to report (no token configured here)


def test_one_bot_process_per_token_the_other_stands_by_and_takes_over(
    bot_index: Index, tmp_path: Path
) -> None:
    fake = FakeTelegram(require_auth=True)
    tgbot = fake.add_bot()
    first = Harness(bot_index, tmp_path / "one", fake=fake, bot=tgbot)
    second = Harness(bot_index, tmp_path / "two", fake=fake, bot=tgbot)

    async def main() -> None:
        await first.start()
        await second.runner.start()
        await until(lambda: second.runner.state == "standby", "the second process to wait")
        assert tgbot.logins == 1
        await first.ask(ALICE, "ключевую ставку")
        await asyncio.sleep(0.3)
        assert len(tgbot.sent(fake.people[ALICE])) == 1  # answered once, not twice
        await first.stop()
        await until(lambda: second.runner.state == "ok", "the take-over")
        assert tgbot.logins == 2
        await second.ask(ALICE, "станции метро")
        await second.stop()

    run(main())


# -- inline mode, help, commands ------------------------------------------------------------------


def test_inline_mode_returns_articles_page_by_page(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        alice, bob = h.person(ALICE), h.person(BOB)

        async def inline(person: types.User, query: str, offset: str = "") -> Any:
            query_id = h.bot.inline(person, query, offset)
            await until(lambda: query_id in h.bot.inline_answers, "the inline answer")
            return h.bot.inline_answers[query_id]

        first = await inline(alice, "станции метро")
        assert first.private and first.cache_time == 0  # never shown to another user
        assert len(first.results) == 10 and first.next_offset == "10"
        top = first.results[0]
        assert top.type == "article" and top.title.startswith("Город и транспорт · ")
        assert "метро" in top.description
        sent = top.send_message
        assert sent.message.startswith("Город и транспорт · ") and sent.no_webpage
        assert any(isinstance(e, types.MessageEntityTextUrl) for e in sent.entities)
        more = await inline(alice, "станции метро", offset="10")
        assert {r.id for r in more.results}.isdisjoint(r.id for r in first.results)
        english = await inline(bob, "ключевую ставку @econ_daily")
        assert english.results[0].title == "Экономика за день · 2024-05-01"
        assert all(r.id.startswith("tg:1001:") for r in english.results)
        empty = await inline(alice, "   ")
        assert empty.results == [] and empty.next_offset is None

    with_bot(bot_index, tmp_path, scenario)


def test_help_in_the_users_language_and_unknown_commands(bot_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        ru = await h.ask(ALICE, "/start")
        assert ru.message.startswith("tgrag ищет по постам Telegram-каналов.")
        assert f"Ваш Telegram id: {ALICE}" in ru.message and "/follow" not in ru.message
        assert "@tgrag_bot запрос" in ru.message
        en = await h.ask(BOB, "/help")
        assert en.message.startswith("tgrag searches the posts of Telegram channels.")
        admin = await h.ask(ADMIN, "/help")
        assert "/follow @канал, /unfollow @канал" in admin.message
        assert (await h.ask(ALICE, "/frobnicate")).message == (
            "Не знаю такой команды; /help — что я умею.")
        assert (await h.ask(ALICE, "/search")).message.startswith("Напишите, что искать")
        assert (await h.ask(ALICE, "#ключевая_ставка")).message.startswith(
            "🔎 #ключевая_ставка · 1–")
        # the command menu Telegram apps show, in both languages
        assert {c.lang_code for c in h.bot.commands} == {"", "en"}

    with_bot(bot_index, tmp_path, scenario)


# -- channels -------------------------------------------------------------------------------------

NEWS_ID = 1500000001


def channel_fixture(fake: FakeTelegram) -> FakeChannel:
    news = fake.add(FakeChannel(NEWS_ID, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи для северных регионов", age=timedelta(days=2))
    news.post("Курс рубля стабилен третий день подряд", age=timedelta(days=1))
    return news


def test_channels_forwarded_posts_and_admin_follow_unfollow(index: Index, tmp_path: Path) -> None:
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    fake = FakeTelegram(require_auth=True)
    news = channel_fixture(fake)
    account = fake.login_session()  # the user account sync reads channels with (tgrag login)
    clients: list[TelegramClient] = []

    async def sync() -> Any:
        client = fake.attach(TelegramClient(StringSession(account), 1, "x",
                                            receive_updates=False))
        await client.connect()
        clients.append(client)
        return Services(index).channel_sync(client)

    async def scenario(h: Harness) -> None:
        try:
            await follow_scenario(h)
        finally:
            for client in clients:
                await client.disconnect()

    async def follow_scenario(h: Harness) -> None:
        empty = await h.ask(ADMIN, "/channels")
        assert empty.message == "Каналов пока нет; добавьте: /follow @канал"
        not_admin = await h.ask(ALICE, "", forward_of=(news, 1))
        assert not_admin.message == (
            "Это пост из канала «Тех новости»; добавить канал может администратор.")
        assert not_admin.reply_markup is None
        offer = await h.ask(ADMIN, "", forward_of=(news, 1))
        assert offer.message == "Это пост из канала «Тех новости». Следить за каналом?"
        assert buttons_of(offer) == [[("Следить за каналом", b"f:technews")]]
        # the same data pressed by a non-admin (a forged press) does nothing
        forged = h.bot.forge_click(h.person(ALICE), offer.id, b"f:technews")
        await until(lambda: forged in h.bot.callback_answers, "the refusal")
        assert h.bot.callback_answers[forged].message == (
            "Добавлять и убирать каналы могут только администраторы.")

        await h.press(ADMIN, offer, "Следить за каналом")
        await until(lambda: "Слежу" in h.bot.messages[offer.id].message, "the sync")
        assert h.bot.messages[offer.id].message == (
            "Слежу за «Тех новости»: 2 поста в поиске (новых: 2).")
        found = await h.ask(ADMIN, "спутник связи")
        assert links(found)[0] == "https://t.me/technews/1"
        again = await h.ask(ADMIN, "", forward_of=(news, 2))
        assert again.message == "Канал «Тех новости» уже в поиске."
        listing = await h.ask(ALICE, "/channels")
        assert listing.message.startswith("Каналы в поиске (1):\n• Тех новости @technews — "
                                          "2 поста · синхр. ")
        assert (await h.ask(ACME_USER, "/channels")).message == "Каналов в поиске пока нет."

        assert (await h.ask(ALICE, "/follow @sport")).message == (
            "Добавлять и убирать каналы могут только администраторы.")
        assert (await h.ask(ADMIN, "/follow")).message == "Напишите так: /follow @канал"
        progress = await h.ask(ADMIN, "/follow @no_such_channel")
        await until(lambda: h.bot.edits_of(progress.id), "the failed sync")
        assert h.bot.messages[progress.id].message == (
            "Не получилось загрузить @no_such_channel: cannot resolve channel: No user has "
            '"no_such_channel" as username')
        assert (await h.ask(ADMIN, "/unfollow @no_such_channel")).message == (
            "Больше не слежу за @no_such_channel; его посты остаются в поиске.")
        assert (await h.ask(ADMIN, "/unfollow @technews")).message == (
            "Больше не слежу за @technews; его посты остаются в поиске.")
        assert (await h.ask(ADMIN, "/unfollow @technews")).message == (
            "Канала @technews нет в списке.")
        still = await h.ask(ADMIN, "спутник связи")
        assert links(still)[0] == "https://t.me/technews/1"  # its posts stay searchable

    with_bot(index, tmp_path, scenario, sync=sync)


def test_follow_without_a_telegram_account_leaves_it_to_the_next_sync(
    index: Index, tmp_path: Path
) -> None:
    from ingest.telegram.state import ChannelRegistry

    async def scenario(h: Harness) -> None:
        progress = await h.ask(ADMIN, "/follow https://t.me/technews")
        await until(lambda: h.bot.edits_of(progress.id), "the answer")
        assert h.bot.messages[progress.id].message == (
            "Канал @technews добавлен; его посты загрузит ближайшая синхронизация.")
        assert ChannelRegistry(index.redis, index.namespace).require("technews").status == \
            "pending"
        listing = await h.ask(ADMIN, "/channels")
        assert "@technews — 0 постов · ещё не синхронизирован" in listing.message

    with_bot(index, tmp_path, scenario)
