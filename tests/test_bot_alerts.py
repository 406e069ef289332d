"""Alerts in the bot, through the fake Telegram: ``/alert``, ``/alerts``, ``/unalert`` and the
remove buttons, and delivery by the bot's notifier (``api.bot.notifier``) as the host wires it
(``api.bot.hosting.running_bot`` over the process's ``Services``).

Posts arrive as every ingest path brings them (the services' pipeline, whose commit hook fills the
outbox); the dispatcher's pass runs in a thread (it blocks on the bot's loop while a notification
is sent, as the background thread of ``serve``, ``worker`` and ``bot`` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient, types
from telethon.sessions import StringSession

from api.bot import hosting
from api.bot.client import make_bot_client
from api.bot.runner import BotRunner
from api.services import Services
from ingest.documents import Post
from rag.alerts.dispatcher import PassReport
from rag.index import Index
from rag.settings import Settings
from tests.fake_telegram import (
    FakeBot,
    FakeGroup,
    FakeTelegram,
    buttons_of,
    html_of,
    run,
    until,
)

ALICE, BOB, ACME_USER, STRANGER = 501, 502, 503, 666
NEWS = (1001, "technews", "Тех новости")
REPOSTS = (1002, "reposts", "<i>Репосты</i> & Co")
HOSTILE = ('Спутник «Луна-Глоб» запущен. <b>жирный</b> и <a href="https://evil.example/x">'
           "ссылка</a> & ещё &amp; текст")
COPY = ("Запущен новый спутник связи для северных регионов: он обеспечит интернетом посёлки "
        "Арктики и суда на Северном морском пути уже этой зимой.")
REFUSAL_EN = "Sorry, this bot is only available to invited users."
DAY = 1_714_557_600  # 2024-05-01 10:00 UTC: the posts' dates count back from it


def post(channel: tuple[int, str, str], message_id: int, text: str, tenant: str = "default",
         age: timedelta = timedelta(hours=1)) -> Post:
    cid, username, title = channel
    return Post(channel_id=cid, channel=username, channel_title=title, message_id=message_id,
                date=DAY - int(age.total_seconds()), text=text, tenant=tenant)


@dataclass
class Host:
    """One process hosting the bot (``running_bot``) over its services, and the people."""

    fake: FakeTelegram
    bot: FakeBot
    services: Services
    runner: BotRunner

    def person(self, user_id: int) -> types.User:
        return self.fake.people[user_id]

    async def say(self, user_id: int, text: str) -> types.Message:
        """``user_id`` writes ``text``; the bot's first new message to them."""
        person = self.person(user_id)
        before = len(self.bot.sent(person))
        self.bot.write(person, text)
        await until(lambda: len(self.bot.sent(person)) > before, f"the reply to {text!r}", 60)
        return self.bot.sent(person)[before]

    async def press(self, user_id: int, message: types.Message, label: str) -> Any:
        query = self.bot.click(self.person(user_id), message, label)
        await until(lambda: query in self.bot.callback_answers, f"the answer to {label!r}", 60)
        return self.bot.callback_answers[query]

    async def ingest(self, *posts: Post) -> None:
        by_tenant: dict[str, list[Post]] = {}
        for p in posts:
            by_tenant.setdefault(p.tenant, []).append(p)
        for tenant, group in by_tenant.items():
            await asyncio.to_thread(self.services.for_tenant(tenant).ingest, group)

    async def dispatch(self) -> PassReport:
        """One dispatcher pass (in a thread: a bot notification waits for this loop)."""
        return await asyncio.to_thread(self.services.dispatch_alerts)

    def sent(self, user_id: int) -> list[types.Message]:
        return self.bot.sent(self.person(user_id))


@pytest.fixture
def telegram() -> FakeTelegram:
    fake = FakeTelegram(require_auth=True)
    for uid, name, username, lang in [(ALICE, "Алиса", "alice", "ru"), (BOB, "Bob", "bob", "en"),
                                      (ACME_USER, "Акме", None, "ru"),
                                      (STRANGER, "Stranger", "stranger", "en")]:
        fake.add_person(uid, name, username=username, lang_code=lang)
    return fake


@pytest.fixture
def host_settings(tmp_path: Path, telegram: FakeTelegram,
                  monkeypatch: pytest.MonkeyPatch) -> Settings:
    bot = telegram.add_bot()
    monkeypatch.setattr(hosting, "new_client", lambda s: telegram.attach(make_bot_client(s)))
    return Settings(data_dir=tmp_path / "data", tg_api_id=1, tg_api_hash="x",
                    tg_bot_token=bot.token, bot_users=[str(ALICE), "@bob", f"{ACME_USER}:acme"],
                    alert_retry_backoff=0.05, alert_max_attempts=3, alert_threshold=0.85,
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def services(host_settings: Settings) -> Iterator[Services]:
    with Services(Index.open(host_settings, purpose="pytest bot alerts")) as built:
        yield built


def hosted(telegram: FakeTelegram, services: Services,
           scenario: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        async with hosting.running_bot(services) as runner:
            assert runner is not None
            await until(lambda: runner.state == "ok", "the bot to log in", 60)
            (bot,) = telegram.bots.values()
            await scenario(Host(telegram, bot, services, runner))

    run(main())


def bold(message: types.Message) -> list[str]:
    from telethon.helpers import add_surrogate, del_surrogate

    wide = add_surrogate(message.message)
    return [del_surrogate(wide[e.offset:e.offset + e.length]) for e in message.entities or []
            if isinstance(e, types.MessageEntityBold)]


def links(message: types.Message) -> list[str]:
    return [e.url for e in message.entities or [] if isinstance(e, types.MessageEntityTextUrl)]


# -- saving, and the delivery ---------------------------------------------------------------------


def test_an_alert_from_the_bot_delivers_each_new_post_once_as_escaped_html(
        telegram: FakeTelegram, services: Services) -> None:
    async def scenario(h: Host) -> None:
        saved = await h.say(ALICE, "/alert words: спутник")
        (alert,) = services.alerts()
        assert saved.message == (f"🔔 Оповещение {alert.id} сохранено: «спутник», все слова.\n"
                                 "Новые посты, которые подходят, пришлю сюда. Все оповещения: "
                                 "/alerts")
        assert (alert.rule, alert.query, alert.chat_id, alert.lang) == (
            "words", "спутник", ALICE, "ru")
        before = len(h.sent(ALICE))

        await h.ingest(post(NEWS, 1, HOSTILE), post(NEWS, 2, "Курс рубля стабилен"))
        report = await h.dispatch()
        assert (report.matches, report.delivered) == (1, 1)
        (note,) = h.sent(ALICE)[before:]
        assert note.message.startswith("🔔 По оповещению «спутник», все слова:\nТех новости · ")
        # the post's markup is shown as characters; ours is bold words and t.me links only
        assert '<b>жирный</b> и <a href="https://evil.example/x">ссылка</a> & ещё &amp;' in \
            note.message
        assert "&lt;b&gt;жирный&lt;/b&gt;" in html_of(note)
        assert "Спутник" in bold(note) and "жирный" not in bold(note)
        assert links(note) == ["https://t.me/technews/1"]

        # The same post again (unchanged), another pass: nothing new.
        await h.ingest(post(NEWS, 1, HOSTILE))
        again = await h.dispatch()
        assert (again.matches, again.delivered) == (0, 0)
        assert len(h.sent(ALICE)) == before + 1

    hosted(telegram, services, scenario)


def test_semantic_alert_with_the_searchs_filters(telegram: FakeTelegram,
                                                 services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.ingest(post(NEWS, 1, "Вводный пост канала"), post(REPOSTS, 1, "Вводный пост"))
        saved = await h.say(BOB, "/alert новый спутник связи для северных регионов @technews "
                                 "since:2024-04-01")
        (alert,) = services.alerts()
        assert saved.message.startswith(
            f"🔔 Alert {alert.id} saved: “новый спутник связи для северных регионов”, by "
            "meaning · @technews · from 2024-04-01.\nNew posts that match it will come here.")
        assert alert.rule == "semantic" and alert.filters.channel_ids == [NEWS[0]]
        assert alert.lang == "en"
        await h.ingest(post(REPOSTS, 2, COPY), post(NEWS, 2, COPY))
        report = await h.dispatch()
        assert report.delivered == 1
        note = h.sent(BOB)[-1]
        assert note.message.startswith("🔔 For your alert “новый спутник связи для северных "
                                       "регионов”, by meaning:\nТех новости · 2024-05-01\n")
        assert links(note) == ["https://t.me/technews/2"]  # the channel filter held
        bad = await h.say(BOB, "/alert курс @nosuchchannel")
        assert "unknown channel 'nosuchchannel'" in bad.message
        assert len(services.alerts()) == 1

    hosted(telegram, services, scenario)


def test_copies_notify_once_with_also_in(telegram: FakeTelegram, services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.say(ALICE, "/alert words: спутник связи")
        before = len(h.sent(ALICE))
        await h.ingest(post(NEWS, 5, COPY, age=timedelta(hours=3)),
                       post(REPOSTS, 7, "🔴 " + COPY + "\n\nПодписаться"))
        report = await h.dispatch()
        assert (report.matches, report.copies, report.delivered) == (1, 1, 1)
        (note,) = h.sent(ALICE)[before:]
        assert links(note) == ["https://t.me/technews/5", "https://t.me/reposts/7"]
        assert "также в: <i>Репосты</i> & Co, " in note.message  # the title escaped too
        # a copy that comes later joins that notification: no new message
        await h.ingest(post((1003, "", "Новости"), 9, COPY))
        later = await h.dispatch()
        assert (later.matches, later.copies, later.delivered) == (0, 1, 0)
        assert len(h.sent(ALICE)) == before + 1

    hosted(telegram, services, scenario)


# -- who may, and whose posts ---------------------------------------------------------------------


def test_a_stranger_cannot_save_alerts(telegram: FakeTelegram, services: Services) -> None:
    async def scenario(h: Host) -> None:
        for text in ("/alert words: спутник", "/alerts", "/unalert 0123456789ab"):
            reply = await h.say(STRANGER, text)
            assert reply.message == REFUSAL_EN and reply.reply_markup is None
        assert services.alerts() == []
        forged = h.bot.forge_click(h.person(STRANGER), 1, b"u:0123456789ab")
        await until(lambda: forged in h.bot.callback_answers, "the answer", 60)
        assert h.bot.callback_answers[forged].message == REFUSAL_EN

    hosted(telegram, services, scenario)


def test_a_tenant_never_gets_another_tenants_post(telegram: FakeTelegram,
                                                  services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.say(ACME_USER, "/alert words: спутник")
        await h.say(ALICE, "/alert words: спутник")
        acme_before, alice_before = len(h.sent(ACME_USER)), len(h.sent(ALICE))
        await h.ingest(post(NEWS, 1, COPY))  # the default tenant's post
        assert (await h.dispatch()).delivered == 1
        assert len(h.sent(ACME_USER)) == acme_before and len(h.sent(ALICE)) == alice_before + 1
        await h.ingest(post((3001, "acme_news", "Новости Акме"), 1, COPY, tenant="acme"))
        assert (await h.dispatch()).delivered == 1
        (note,) = h.sent(ACME_USER)[acme_before:]
        assert links(note) == ["https://t.me/acme_news/1"]
        assert len(h.sent(ALICE)) == alice_before + 1
        # each sees only their own alerts
        assert [a.chat_id for a in services.for_tenant("acme").alerts()] == [ACME_USER]
        acme_list = await h.say(ACME_USER, "/alerts")
        assert acme_list.message.startswith("Ваши оповещения (1):")
        # an alert of another tenant cannot be removed by id
        (alices,) = services.alerts()
        gone = await h.say(ACME_USER, f"/unalert {alices.id}")
        assert gone.message == "Такого оповещения у вас нет; список: /alerts"
        assert services.alerts() == [alices]

    hosted(telegram, services, scenario)


# -- listing and removing -------------------------------------------------------------------------


def test_alerts_list_with_remove_buttons_and_unalert(telegram: FakeTelegram,
                                                     services: Services) -> None:
    async def scenario(h: Host) -> None:
        assert (await h.say(ALICE, "/alerts")).message.startswith("Оповещений пока нет")
        assert (await h.say(ALICE, "/alert")).message.startswith("Напишите, о чём сообщать")
        await h.say(ALICE, "/alert words: ставки по вкладам #банки")
        await h.say(ALICE, "/alert mention: релиз, миграция базы")
        other = services.add_alert("метро", rule="words", chat_id=BOB)  # Bob's, same tenant
        first, second = (a for a in services.alerts() if a.chat_id == ALICE)

        listing = await h.say(ALICE, "/alerts")
        assert listing.message.splitlines() == [
            "Ваши оповещения (2):",
            f"1. «ставки по вкладам», все слова · #банки — /unalert {first.id}",
            f"2. упоминания аккаунта и «релиз, миграция базы» в группах — /unalert {second.id}",
        ]
        assert [t for row in buttons_of(listing) for t, _ in row] == ["✖ 1", "✖ 2"]
        await h.press(ALICE, listing, "✖ 1")
        edited = h.bot.messages[listing.id]
        assert edited.message.splitlines()[:2] == [
            "Ваши оповещения (1):",
            f"1. упоминания аккаунта и «релиз, миграция базы» в группах — /unalert {second.id}"]
        assert [a.id for a in services.alerts() if a.chat_id == ALICE] == [second.id]

        assert (await h.say(ALICE, f"/unalert {other.id}")).message.startswith(
            "Такого оповещения у вас нет")  # Bob's: not Alice's to remove
        removed = await h.say(ALICE, f"/unalert {second.id.upper()}")
        assert removed.message == (f"Оповещение {second.id} удалено: упоминания аккаунта и "
                                   "«релиз, миграция базы» в группах.")
        assert [a.id for a in services.alerts()] == [other.id]
        # an old button of a removed alert: the list as it is now
        answer = await h.press(ALICE, h.bot.messages[listing.id], "✖ 1")
        assert answer.message == "Этого оповещения уже нет"
        assert h.bot.messages[listing.id].message.startswith("Оповещений пока нет")

    hosted(telegram, services, scenario)


# -- delivery when Telegram says no ---------------------------------------------------------------


def test_delivery_waits_while_the_bot_is_offline(telegram: FakeTelegram,
                                                 services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.say(ALICE, "/alert words: спутник")
        before = len(h.sent(ALICE))
        (conn,) = [s for s in telegram.senders if s.is_connected()]
        telegram.refuse_connections = True
        conn.drop(ConnectionError("connection reset by peer"))
        await until(lambda: h.runner.state == "offline", "the bot to notice", 60)

        await h.ingest(post(NEWS, 1, COPY))
        offline = await h.dispatch()
        # Queued for the bot, not tried: nothing counts as a failure while it is away.
        assert (offline.matches, offline.delivered, offline.retrying, offline.dead) == (1, 0, 0, 0)
        assert _queue(services).pending("bot") == 1

        telegram.refuse_connections = False
        await until(lambda: h.runner.state == "ok", "the reconnection", 60)
        back = await h.dispatch()
        assert back.delivered == 1 and _queue(services).pending("bot") == 0
        (note,) = h.sent(ALICE)[before:]
        assert links(note) == ["https://t.me/technews/1"]

    hosted(telegram, services, scenario)


def test_a_flood_wait_pauses_the_bots_queue(telegram: FakeTelegram, services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.say(ALICE, "/alert words: спутник")
        before = len(h.sent(ALICE))
        h.bot.flood_sends.append(1)
        await h.ingest(post(NEWS, 1, COPY), post(NEWS, 2, "Спутник сошёл с орбиты"))
        first = await h.dispatch()
        assert (first.matches, first.delivered, first.retrying) == (2, 0, 1)
        await asyncio.sleep(0.2)  # past the retry backoff, inside the flood wait
        paused = await h.dispatch()
        assert (paused.delivered, paused.retrying, paused.dead) == (0, 0, 0)
        await asyncio.sleep(1.0)
        after = await h.dispatch()
        assert after.delivered == 2 and len(h.sent(ALICE)) == before + 2

    hosted(telegram, services, scenario)


def test_a_refused_chat_becomes_a_dead_letter(telegram: FakeTelegram,
                                              services: Services) -> None:
    async def scenario(h: Host) -> None:
        await h.say(ALICE, "/alert words: спутник")
        before = len(h.sent(ALICE))
        (alert,) = services.alerts()
        h.bot.blocked.add(ALICE)  # Alice blocked the bot
        await h.ingest(post(NEWS, 1, COPY))
        total = PassReport()
        for _ in range(60):
            total.add(await h.dispatch())
            if total.dead:
                break
            await asyncio.sleep(0.1)
        assert (total.matches, total.retrying, total.dead, total.delivered) == (1, 2, 1, 0)
        (dead,) = services.alert_dead_letters(alert.id)
        assert dead.channel == "bot" and dead.attempts == 3
        assert dead.error == f"chat {ALICE}: the user blocked the bot"
        # unblocked, the dead letter queued again: delivered
        h.bot.blocked.discard(ALICE)
        assert services.retry_alert_deliveries(alert.id) == 1
        assert (await h.dispatch()).delivered == 1 and len(h.sent(ALICE)) == before + 1

    hosted(telegram, services, scenario)


def _queue(services: Services) -> Any:
    from rag.alerts.delivery import DeliveryQueue

    return DeliveryQueue(services.index.redis, services.index.namespace)


# -- mentions -------------------------------------------------------------------------------------


def test_a_mention_in_a_group_comes_to_the_bot(telegram: FakeTelegram,
                                               services: Services) -> None:
    account = types.User(id=4242, is_self=True, access_hash=1, first_name="Тест",
                         username="tester")
    group = telegram.add(FakeGroup(1700000001, "devchat", "Разработчики"))
    petr = telegram.add_person(510, "Пётр")
    group.say(petr, "Обед в час", age=timedelta(hours=2))
    group.say(petr, "@tester глянь <b>PR</b>", age=timedelta(hours=2) - timedelta(minutes=1))
    session = telegram.login_session(account)

    async def scenario(h: Host) -> None:
        saved = await h.say(ALICE, "/alert mention")
        assert "упоминания аккаунта в группах" in saved.message
        before = len(h.sent(ALICE))
        services.follow("@devchat", group=True)
        client = telegram.attach(TelegramClient(StringSession(session), 1, "x",
                                                receive_updates=False))
        await services.channel_sync(client).sync_channel("devchat")
        report = await h.dispatch()
        assert (report.matches, report.delivered) == (1, 1)
        (note,) = h.sent(ALICE)[before:]
        assert note.message.startswith("🔔 По оповещению упоминания аккаунта в группах:\n"
                                       "Разработчики · ")
        assert "Пётр: @tester глянь <b>PR</b>" in note.message
        assert bold(note)[-1] == "@tester" and links(note) == ["https://t.me/devchat/2"]

    hosted(telegram, services, scenario)
