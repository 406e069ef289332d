"""The scheduled digest: TGRAG_DIGEST_SCHEDULE parsing and due times, and the delivery's once a
day (also after a restart, and after a kill -9 mid-delivery), retries, empty days."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from rag.digest import Digest, DigestPost, Story
from rag.digest_delivery import DigestLog, DigestScheduler, Recipient
from rag.digest_schedule import DigestSchedule
from rag.errors import InputError
from rag.ids import namespace
from rag.redis_backend import close_redis, open_redis
from rag.settings import Settings, load_settings
from tests.test_crash_safety import Child

HELPER = Path(__file__).resolve().parent / "crash_digest.py"
MOSCOW_9 = DigestSchedule.parse("09:00 Europe/Moscow")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- the schedule ---------------------------------------------------------------------------------


def test_schedule_parsing() -> None:
    assert str(MOSCOW_9) == "09:00 Europe/Moscow"
    assert str(DigestSchedule.parse("8:05")) == "08:05 UTC"
    assert str(DigestSchedule.parse(" 21:30  +03:00 ")) == "21:30 UTC+03:00"
    assert str(DigestSchedule.parse("07:00 utc-5")) == "07:00 UTC-05:00"
    assert str(DigestSchedule.parse("23:59 gmt")) == "23:59 UTC"


@pytest.mark.parametrize(("text", "needle"), [
    ("9", "not a time of day"), ("9 утра", "not a time of day"), ("", "not a time of day"),
    ("24:00 UTC", "24:00 is not a time of day"), ("09:60", "09:60 is not a time of day"),
    ("09:00 Moscow", "unknown time zone 'Moscow'"), ("09:00 +15:00", "out of range"),
])
def test_bad_schedules_say_what_to_write(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as err:
        DigestSchedule.parse(text)
    assert "09:00 Europe/Moscow" in (err.value.hint or "")


def test_a_bad_schedule_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_DIGEST_SCHEDULE", "9 утра")
    with pytest.raises(InputError) as err:
        load_settings()
    assert err.value.message.startswith("invalid setting TGRAG_DIGEST_SCHEDULE: digest schedule")
    monkeypatch.setenv("TGRAG_DIGEST_SCHEDULE", "9:00 Europe/Moscow")
    settings = load_settings()
    assert settings.digest_schedule == "09:00 Europe/Moscow" and settings.schedule == MOSCOW_9
    monkeypatch.setenv("TGRAG_DIGEST_SCHEDULE", "")
    assert load_settings().schedule is None


def test_due_moments_and_periods() -> None:
    # 09:00 in Moscow is 06:00 UTC
    now = utc(2024, 5, 2, 5, 59)
    assert MOSCOW_9.last_due(now) == utc(2024, 5, 1, 6) and MOSCOW_9.next_due(now) == \
        utc(2024, 5, 2, 6)
    assert MOSCOW_9.last_due(utc(2024, 5, 2, 6)) == utc(2024, 5, 2, 6)  # due at that very moment
    due = utc(2024, 5, 2, 6)
    assert MOSCOW_9.period(due) == (int(utc(2024, 5, 1, 6).timestamp()), int(due.timestamp()))
    assert MOSCOW_9.day_key(due) == "2024-05-02"
    # 01:30 UTC is already the next day in Moscow
    assert MOSCOW_9.local_day(utc(2024, 5, 1, 22)) == date(2024, 5, 2)


def test_daylight_saving_days_neither_overlap_nor_leave_a_gap() -> None:
    berlin = DigestSchedule.parse("02:30 Europe/Berlin")
    spring = berlin.due_on(date(2024, 3, 31))  # 02:30 does not exist that night: 03:30 CEST
    assert spring == utc(2024, 3, 31, 1, 30)
    assert berlin.period(spring) == (int(utc(2024, 3, 30, 1, 30).timestamp()),
                                     int(spring.timestamp()))  # a 23-hour day
    autumn = berlin.due_on(date(2024, 10, 27))  # 02:30 happens twice: the first one
    assert autumn == utc(2024, 10, 27, 0, 30)
    assert berlin.period(berlin.due_on(date(2024, 10, 28)))[0] == int(autumn.timestamp())


# -- the delivery ---------------------------------------------------------------------------------


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = open_redis(settings)
    try:
        yield client
    finally:
        close_redis(client, settings)


def a_digest(since: int, until: int, stories: int = 1) -> Digest:
    post = DigestPost("tg:1:1", 1, "c", "C", 1, since, "https://t.me/c/1", "Пост.",
                      vector=np.ones(2))
    return Digest(since, until, [Story([post], title="Сюжет", summary="Пост. [1]")] * stories,
                  posts=stories)


class ListSink:
    """A sink that records what it sent, and can fail or be unavailable."""

    channel = "test"

    def __init__(self, names: list[tuple[str, str]], *, failures: int = 0,
                 up: bool = True) -> None:
        self.names = names
        self.failures = failures
        self.up = up
        self.sent: list[tuple[str, str, int]] = []  # (recipient, tenant, until)
        self.attempts = 0

    def available(self) -> bool:
        return self.up

    async def recipients(self) -> list[Recipient]:
        return [Recipient(key, tenant) for key, tenant in self.names]

    async def send(self, recipient: Recipient, digest: Digest) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Telegram is down")
        self.sent.append((recipient.key, recipient.tenant, digest.until))


def scheduler(redis_client: redis.Redis, sink: ListSink, *, built: list[Any] | None = None,
              empty: bool = False, **kw: Any) -> DigestScheduler:
    def build(tenant: str, since: int, until: int) -> Digest:
        if built is not None:
            built.append((tenant, since, until))
        return a_digest(since, until, stories=0 if empty else 1)

    return DigestScheduler(MOSCOW_9, build, DigestLog(redis_client, namespace("tgrag_posts")),
                           [sink], **kw)


DUE = utc(2024, 5, 2, 6)
PEOPLE = [("bot:1", "default"), ("bot:2", "acme"), ("bot:3", "default")]


def test_each_recipient_gets_the_day_once_also_after_a_restart(
        redis_client: redis.Redis) -> None:
    sink, built = ListSink(PEOPLE), []
    report = asyncio.run(scheduler(redis_client, sink, built=built).deliver(DUE))
    assert report.sent == ["bot:1", "bot:2", "bot:3"] and not report.pending
    assert [(k, t) for k, t, _ in sink.sent] == PEOPLE
    # one digest per tenant, of the Moscow day ending at 09:00
    assert built == [("default", int((DUE - timedelta(days=1)).timestamp()), int(DUE.timestamp())),
                     ("acme", int((DUE - timedelta(days=1)).timestamp()), int(DUE.timestamp()))]
    # a restarted process (a new scheduler, the same Redis) sends nothing more that day
    again = ListSink(PEOPLE)
    report = asyncio.run(scheduler(redis_client, again).deliver(DUE))
    assert again.sent == [] and report.skipped == ["bot:1", "bot:2", "bot:3"]
    # ... and the next day's digest goes out again
    asyncio.run(scheduler(redis_client, again).deliver(DUE + timedelta(days=1)))
    assert [k for k, _, _ in again.sent] == ["bot:1", "bot:2", "bot:3"]
    log = DigestLog(redis_client, namespace("tgrag_posts"))
    record = log.get("2024-05-02", "bot:1")
    assert record is not None and record["state"] == "sent" and record["attempts"] == 1
    assert 0 < redis_client.ttl(log.key("2024-05-02")) <= 8 * 86400


def test_failures_are_retried_then_given_up(redis_client: redis.Redis) -> None:
    sink = ListSink([("bot:1", "default")], failures=1)
    first = asyncio.run(scheduler(redis_client, sink).deliver(DUE))
    assert first.failed == ["bot:1"] and first.pending and sink.sent == []
    second = asyncio.run(scheduler(redis_client, sink).deliver(DUE))
    assert second.sent == ["bot:1"] and len(sink.sent) == 1
    # a recipient that fails every time is given up after max_attempts, and not tried again
    down = ListSink([("bot:9", "default")], failures=99)
    for _ in range(4):
        asyncio.run(scheduler(redis_client, down, max_attempts=3).deliver(DUE))
    assert down.attempts == 3
    record = DigestLog(redis_client, namespace("tgrag_posts")).get("2024-05-02", "bot:9")
    assert record["state"] == "failed" and "Telegram is down" in record["error"]


def test_an_empty_day_sends_nothing_and_an_absent_sink_waits(redis_client: redis.Redis) -> None:
    sink = ListSink([("bot:1", "default")])
    report = asyncio.run(scheduler(redis_client, sink, empty=True).deliver(DUE))
    assert sink.sent == [] and report.sent == ["bot:1"]
    log = DigestLog(redis_client, namespace("tgrag_posts"))
    assert log.get("2024-05-02", "bot:1")["state"] == "empty"
    off = ListSink([("bot:2", "default")], up=False)  # e.g. a stand-by bot process
    report = asyncio.run(scheduler(redis_client, off).deliver(DUE))
    assert report.pending and log.get("2024-05-02", "bot:2") is None


def test_the_loop_catches_up_the_same_day_then_sleeps_until_the_next(
        redis_client: redis.Redis) -> None:
    clock = [utc(2024, 5, 2, 7, 30)]  # started at 10:30 in Moscow, after the 09:00 digest
    sleeps: list[float] = []
    sink = ListSink([("bot:1", "default")])

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            clock[0] = utc(2024, 5, 3, 6)  # wakes at the next due moment
        else:
            raise asyncio.CancelledError

    loop = scheduler(redis_client, sink, clock=lambda: clock[0], sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(loop.run())
    assert [u for _, _, u in sink.sent] == [int(utc(2024, 5, 2, 6).timestamp()),
                                            int(utc(2024, 5, 3, 6).timestamp())]
    assert sleeps[0] == (utc(2024, 5, 3, 6) - utc(2024, 5, 2, 7, 30)).total_seconds()
    # started the next day before 09:00, yesterday's digest is not sent late
    clock[0], sleeps[:] = utc(2024, 5, 4, 5), []
    late = ListSink([("bot:7", "default")])
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scheduler(redis_client, late, clock=lambda: clock[0],
                              sleep=lambda s: _cancel_after(sleeps, s)).run())
    assert late.sent == [] and sleeps == [3600.0]


async def _cancel_after(sleeps: list[float], seconds: float) -> None:
    sleeps.append(seconds)
    raise asyncio.CancelledError


# -- kill -9 mid-delivery -------------------------------------------------------------------------


def _sent(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize(("die", "first_run"), [
    ("after-send:2", ["r1", "r2"]),  # r2 left, its record did not say so yet
    ("before-send:2", ["r1"]),  # r2 was claimed, nothing left: r2 misses the day, at most once
])
def test_a_killed_delivery_never_sends_twice(tmp_path: Path, die: str,
                                             first_run: list[str]) -> None:
    data, sent = tmp_path / "data", tmp_path / "sent.txt"
    args = ("--due", "2024-05-02T09:00:00+00:00", "--sent", str(sent))
    child = Child(data, *args, "--die", die, helper=HELPER)
    assert child.finish() == -9, child.lines
    assert _sent(sent) == first_run
    rerun = Child(data, *args, helper=HELPER)
    assert rerun.finish() == 0, rerun.stderr
    # r2's claim survived the kill: whether its message left is unknown, so it is not resent
    assert _sent(sent) == [*first_run, "r3"]
    assert "skipped=r1,r2" in rerun.lines[-1]
    settings = Settings(data_dir=data, _env_file=None)  # type: ignore[call-arg]
    client = open_redis(settings)
    try:
        log = DigestLog(client, namespace(settings.collection))
        assert log.get("2024-05-02", "r2")["state"] == "sending"
        assert log.get("2024-05-02", "r3")["state"] == "sent"
    finally:
        close_redis(client, settings)


# -- webhooks -------------------------------------------------------------------------------------


def test_digest_webhooks_are_signed_retried_and_sent_once(redis_client: redis.Redis) -> None:
    from rag.digest_webhooks import WebhookDigestSink
    from tests.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver("s3cret").start()
    try:
        settings = Settings(_env_file=None, digest_schedule="09:00 Europe/Moscow",  # type: ignore[call-arg]
                            alert_webhook_secret="s3cret",
                            digest_webhooks=f"{receiver.url},acme={receiver.url}?t=acme")
        sink = WebhookDigestSink(settings)
        built: list[Any] = []

        def build(tenant: str, since: int, until: int) -> Digest:
            built.append(tenant)
            return a_digest(since, until)

        def scheduler_() -> DigestScheduler:
            return DigestScheduler(MOSCOW_9, build, DigestLog(redis_client, "tgrag:test"),
                                   [sink])

        receiver.fail_next(1, 500)  # the first POST fails: retried at the next round
        first = asyncio.run(scheduler_().deliver(DUE))
        assert len(first.sent) == 1 and len(first.failed) == 1 and first.pending
        second = asyncio.run(scheduler_().deliver(DUE))
        assert second.sent == first.failed and len(second.skipped) == 1
        got = receiver.wait_for(2)
        assert all(r["verified"] for r in got)  # HMAC-SHA256 with TGRAG_ALERT_WEBHOOK_SECRET
        bodies = {r["body"]["tenant"]: r for r in got}
        # one digest per tenant and round (the retry round builds it again)
        assert set(bodies) == {"default", "acme"} and built == ["default", "acme", "default"]
        body = bodies["default"]["body"]
        assert body["type"] == "digest" and body["day"] == "2024-05-02"
        assert body["delivery_id"] == bodies["default"]["delivery"]
        assert body["digest"]["stories"][0]["title"] == "Сюжет"
        assert body["text"].startswith("1. Сюжет\nПост. [1]\n[1] https://t.me/c/1")
        # nothing more that day, after a restart
        assert asyncio.run(scheduler_().deliver(DUE)).sent == []
        assert len(receiver.requests) == 2 and receiver.attempts == 3
    finally:
        receiver.stop()


@pytest.mark.parametrize(("value", "secret", "needle"), [
    ("ftp://example.org/x", "k", "is not a webhook URL"),
    ("https://user:pw@example.org/x", "k", "without user:password@"),
    ("Not A Tenant=https://example.org/x", "k", "invalid tenant name"),
    ("https://example.org/x", None, "needs TGRAG_ALERT_WEBHOOK_SECRET"),
])
def test_bad_digest_webhook_settings(monkeypatch: pytest.MonkeyPatch, value: str,
                                     secret: str | None, needle: str) -> None:
    monkeypatch.setenv("TGRAG_DIGEST_WEBHOOKS", value)
    if secret:
        monkeypatch.setenv("TGRAG_ALERT_WEBHOOK_SECRET", secret)
    with pytest.raises(InputError, match=needle):
        load_settings()


def test_a_host_without_the_bot_sends_the_digest_webhooks(index: Any) -> None:
    """``tgrag worker`` / ``serve`` without a bot token: the webhooks still get the digest."""
    import time
    from dataclasses import replace

    from pydantic import SecretStr

    from api.bot.hosting import running_bot
    from api.services import Services
    from ingest.documents import Post
    from ingest.pipeline import PostPipeline
    from tests.webhook_receiver import WebhookReceiver

    now = datetime.now(UTC)
    PostPipeline(index).ingest([Post(channel_id=7, channel="news", channel_title="Новости",
                                     message_id=1, date=int(now.timestamp()) - 600,
                                     text="В Москве открылась новая станция метро «Ясная».")])
    receiver = WebhookReceiver("k").start()
    try:
        settings = index.settings.model_copy(update={
            "digest_schedule": f"{now:%H:%M} UTC",  # due this very minute: sent at once
            "digest_webhooks": [f"default={receiver.url}"],
            "alert_webhook_secret": SecretStr("k")})
        services = Services(replace(index, settings=settings), llm=None)

        async def host() -> None:
            async with running_bot(services) as runner:
                assert runner is None  # no token: no bot, the webhooks only
                deadline = time.monotonic() + 60
                while not receiver.requests and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)

        asyncio.run(host())
        [got] = receiver.requests
        assert got["verified"] and got["body"]["digest"]["stories"][0]["title"].startswith(
            "В Москве открылась новая станция метро")
    finally:
        receiver.stop()
