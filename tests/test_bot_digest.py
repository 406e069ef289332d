"""The bot's /digest and its daily digest, through the fake Telegram (tests/test_bot.py's harness):
what users see, their languages and tenants, /digest off, and once a day across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.bot.digests import BotDigestSink
from ingest.jobs import stamp_tenant
from ingest.pipeline import PostPipeline
from rag.digest_delivery import DigestLog, DigestScheduler
from rag.index import Index
from rag.settings import Settings
from tests.conftest import module_settings
from tests.digest_corpus import acme_posts, day_posts
from tests.fake_telegram import run
from tests.test_bot import ACME_USER, ADMIN, ALICE, BOB, Harness, links, plain, until, with_bot

DAY = "since:2024-05-02 until:2024-05-02"
DUE = datetime(2024, 5, 3, tzinfo=UTC)  # "00:00 UTC": the digest of May 2nd


@pytest.fixture(scope="module")
def digest_bot_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = module_settings(tmp_path_factory, "bot_digest", digest_schedule="00:00 UTC")
    with Index.open(settings, purpose="pytest bot digest") as index:
        PostPipeline(index).ingest(day_posts())
        PostPipeline(index.for_tenant("acme")).ingest(list(stamp_tenant(acme_posts(), "acme")))
    return settings


@pytest.fixture(scope="module")
def digest_index(digest_bot_settings: Settings) -> Iterator[Index]:
    with Index.open(digest_bot_settings, purpose="pytest bot digest") as index:
        yield index


async def digest_reply(h: Harness, user_id: int, text: str) -> Any:
    """The bot's answer to ``text``: its placeholder, once edited into the digest."""
    placeholder = await h.ask(user_id, text)
    await until(lambda: "⏳" not in h.bot.messages[placeholder.id].message, "the digest")
    return h.bot.messages[placeholder.id]


def test_digest_command(digest_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        ru = await digest_reply(h, ALICE, f"/digest {DAY}")
        text = plain(ru)
        assert text.startswith("📰 Дайджест · 02.05.2024 00:00 UTC – 02.05.2024 23:59 UTC · "
                               "12 постов")
        assert "\n1. " in text and "5 постов · Экономика за день, Новости сейчас, Лента, ещё 1" \
            in text
        # every [n] is a link to its post, every channel name to its first post of the story
        assert "https://t.me/econ_daily/10" in links(ru) and "https://t.me/wire/30" in links(ru)
        assert "(ответ собран из цитат: языковая модель не подключена)" in text
        assert "Показаны" not in text  # 6 stories fit the default 10
        en = await digest_reply(h, BOB, f"/digest {DAY} @wire")
        assert plain(en).startswith("📰 Digest · 2024-05-02 00:00 UTC – 2024-05-02 23:59 UTC · "
                                    "2 posts")
        acme = await digest_reply(h, ACME_USER, f"/digest {DAY}")
        assert "Акме открыла завод" in plain(acme) and "Банк России" not in plain(acme)
        # a period without posts, and words that are no period
        empty = await digest_reply(h, ALICE, "/digest 3d")
        assert plain(empty).startswith("📰 За ") and "постов нет" in plain(empty)
        usage = await h.ask(ALICE, "/digest главное за неделю")
        assert plain(usage).startswith("Напишите так: /digest (за сутки)")

    with_bot(digest_index, tmp_path, scenario)


def test_digest_off_on_and_help(digest_index: Index, tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        helped = await h.ask(ALICE, "/help")
        assert "/digest — главное за сутки (/digest 3d @канал); каждый день в 00:00 UTC" in \
            plain(helped)
        off = await h.ask(ALICE, "/digest off")
        assert plain(off).startswith("Больше не пришлю ежедневный дайджест")
        subscribers = h.runner.backend.subscribers  # type: ignore[attr-defined]
        assert subscribers.get(ALICE).digest is False
        on = await h.ask(BOB, "/digest on")
        assert plain(on) == "You will get the digest every day at 00:00 UTC."
        assert subscribers.get(BOB).lang == "en" and subscribers.get(BOB).digest is True
        # the menu Telegram apps show lists /digest
        assert any(c.command == "digest" for req in h.bot.commands for c in req.commands)

    with_bot(digest_index, tmp_path, scenario)


class Gate:
    """The scheduler's sleep, held by the test: each round runs when the test opens the gate
    (the first one too: the job waits for it before its first round)."""

    def __init__(self) -> None:
        self.rounds = 0
        self.event = asyncio.Event()
        self.reports: list[Any] = []

    async def sleep(self, _seconds: float) -> None:
        self.rounds += 1
        self.event.clear()
        await self.event.wait()

    async def next_round(self) -> None:
        done = self.rounds
        self.event.set()
        await until(lambda: self.rounds > done, "a delivery round")


def scheduled(h: Harness, gate: Gate) -> None:
    """The daily digest in the bot's process, its clock five minutes after May 3rd's 00:00."""
    backend = h.runner.backend
    scheduler = backend.services.digest_scheduler(  # type: ignore[attr-defined]
        [BotDigestSink(h.runner, backend.subscribers)])  # type: ignore[attr-defined]
    assert isinstance(scheduler, DigestScheduler)
    scheduler.clock = lambda: DUE.replace(minute=5)
    scheduler.sleep = gate.sleep
    deliver = scheduler.deliver

    async def recorded(due: datetime) -> Any:
        gate.reports.append(await deliver(due))
        return gate.reports[-1]

    scheduler.deliver = recorded  # type: ignore[method-assign]

    async def job() -> None:
        await gate.event.wait()
        await scheduler.run()

    h.runner.run_alongside("digest", job)


def test_the_daily_digest_reaches_each_user_once(digest_index: Index, tmp_path: Path) -> None:
    session = tmp_path / "session"
    first = Harness(digest_index, session)
    gate = Gate()
    scheduled(first, gate)
    people = (ALICE, BOB, ACME_USER, ADMIN)

    def sent() -> dict[int, list[Any]]:
        return {u: first.bot.sent(first.person(u)) for u in people}

    async def day_one() -> None:
        await first.start()
        # ALICE does not want the digest; BOB is allowed by @username, which the bot can look
        # up once he wrote to it (its session knows him then).
        await first.ask(ALICE, "/digest off")
        await first.ask(BOB, "/start")
        before = {u: len(m) for u, m in sent().items()}
        await gate.next_round()
        assert gate.reports[-1].sent and not gate.reports[-1].pending
        new = {u: m[before[u]:] for u, m in sent().items()}
        assert [len(new[u]) for u in people] == [0, 1, 1, 1]
        bob, acme, admin = new[BOB][0], new[ACME_USER][0], new[ADMIN][0]
        assert plain(bob).startswith("📰 The day's top stories · 2024-05-02 00:00 UTC – "
                                     "2024-05-03 00:00 UTC · 12 posts")
        assert plain(bob).endswith("Stop the daily digest: /digest off")
        assert plain(admin).startswith("📰 Главное за день · 02.05.2024 00:00 UTC")
        assert "https://t.me/econ_daily/10" in links(admin)
        assert "Акме открыла завод" in plain(acme) and "Банк России" not in plain(acme)
        await first.stop()

    run(day_one())
    log = DigestLog(digest_index.redis, digest_index.namespace).day("2024-05-03")
    assert set(log) == {f"bot:{BOB}", f"bot:{ACME_USER}", f"bot:{ADMIN}"}
    assert {r["state"] for r in log.values()} == {"sent"}

    # A restart the same day (a new process: the same session and Redis) sends nothing again.
    second = Harness(digest_index, session, fake=first.fake, bot=first.bot)
    gate2 = Gate()
    scheduled(second, gate2)
    counts = {u: len(m) for u, m in sent().items()}

    async def restarted() -> None:
        await second.start()
        await gate2.next_round()
        await second.stop()

    run(restarted())
    assert {u: len(m) for u, m in sent().items()} == counts
    report = gate2.reports[-1]  # the bot could send: it found each of them served already
    assert not report.pending and sorted(report.skipped) == sorted(log)
