"""Telegram sync against the real ``telethon.TelegramClient``, with no network.

The client's MTProto sender is the fake of ``tests/fake_telegram.py`` (see there): requests are
answered with real TL objects or fail with real RPC errors.  Live updates are fed through
``client._dispatch_update`` — Telethon's own dispatch path.  Each test runs its coroutine on a
fresh loop with ``loop.run_until_complete`` (no ``asyncio.run``).  The CLI commands over the same
fake are tested in ``tests/test_telegram_commands.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from telethon import errors, functions, types

from ingest.pipeline import PostPipeline
from ingest.telegram.live import register_live_handlers
from ingest.telegram.reader import TelegramReader, extract_links, make_client
from ingest.telegram.scheduler import SyncScheduler
from ingest.telegram.state import ChannelRegistry, RedisLock
from ingest.telegram.sync import ChannelSync, remove_channel
from rag.errors import InputError
from rag.index import Index
from rag.settings import Settings
from tests.fake_telegram import NOW, FakeChannel, FakeTelegram, dispatch, new_client, run
from tests.lock_holder import LockHolder


@pytest.fixture
def fake() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def news(fake: FakeTelegram) -> FakeChannel:
    ch = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    ch.post("Запущен новый спутник связи", age=timedelta(days=10))
    ch.post("Курс рубля стабилен", age=timedelta(days=9))
    ch.service()
    ch.post("", media=types.MessageMediaPhoto())  # media-only: skipped
    ch.post("Открылась выставка роботов", age=timedelta(days=1))
    return ch


@pytest.fixture
def pipeline(index: Any) -> PostPipeline:
    return PostPipeline(index, batch_size=2)


def doc_ids(index: Any) -> set[str]:
    return set(index.docstore.get_all_document_hashes().values())


def points(index: Any, doc_id: str) -> list[Any]:
    return index.store.chunks_of(doc_id)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """asyncio.sleep records the wait instead of sleeping."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        recorded.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return recorded


# -- reader --------------------------------------------------------------------------------------


def test_utf16_links_after_emoji() -> None:
    text = "🔥🚀 Читайте https://example.com/a и 👉 подробнее"
    url_off = len("🔥🚀 Читайте ".encode("utf-16-le")) // 2
    more_off = len("🔥🚀 Читайте https://example.com/a и 👉 ".encode("utf-16-le")) // 2
    entities = [
        types.MessageEntityUrl(offset=url_off, length=len("https://example.com/a")),
        types.MessageEntityTextUrl(offset=more_off, length=len("подробнее"),
                                   url="https://example.org/more"),
        types.MessageEntityBold(offset=0, length=2),
    ]
    assert extract_links(text, entities) == ["https://example.com/a", "https://example.org/more"]


def test_reader_posts_match_export_ids_and_albums(fake: FakeTelegram, news: FakeChannel) -> None:
    album = 777
    news.post("", grouped_id=album, media=types.MessageMediaPhoto())
    news.post("Фоторепортаж 📷 с https://t.me/x", grouped_id=album, media=types.MessageMediaPhoto(),
              entities=[types.MessageEntityUrl(offset=18, length=14)])  # 📷 is 2 units
    news.post("", grouped_id=album, media=types.MessageMediaPhoto())
    news.post("После альбома", fwd_from=types.MessageFwdHeader(date=NOW, from_name="Другой канал"))

    async def main() -> Any:
        reader = TelegramReader(new_client(fake))
        return [p async for p in reader.iter_posts("@technews")], reader.stats

    posts, stats = run(main())
    assert [p.message_id for p in posts] == [1, 2, 5, 6, 9]
    assert all(p.doc_id == f"tg:1500000001:{p.message_id}" for p in posts)
    first = posts[0]
    assert (first.channel, first.channel_title) == ("technews", "Тех новости")
    assert first.link == "https://t.me/technews/1"
    assert first.date == int((NOW - timedelta(days=10)).timestamp())
    alb = posts[3]
    assert alb.grouped_id == album and alb.text.startswith("Фоторепортаж")
    assert alb.links == ["https://t.me/x"]
    assert posts[4].forwarded_from == "Другой канал"
    assert (stats.service, stats.empty, stats.consumed_upto) == (1, 1, 9)


# -- sync ----------------------------------------------------------------------------------------


def test_first_then_incremental_sync(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                     news: FakeChannel) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        first = await sync.sync_channel("@technews")
        news.post("Новая статья про нейросети")
        second = await sync.sync_channel("technews")
        return first, second, sync.registry.require("technews")

    first, second, state = run(main())
    assert (first.status, first.new, first.skipped) == ("ok", 3, 2)
    # A first sync has nothing to re-scan: its posts were just read, not reported again.
    assert (first.embedded_nodes, first.unchanged, first.updated) == (3, 0, 0)
    # unchanged: the re-scan window re-reads what the first sync indexed (1, 2 and 5), not the
    # new post 6; hashes keep them from re-embedding
    assert (second.new, second.unchanged, second.embedded_nodes) == (1, 3, 1)
    assert state.last_message_id == 6 and state.posts_indexed == 4 and state.status == "ok"
    assert state.channel_id == 1500000001 and state.last_error is None
    assert doc_ids(index) == {f"tg:1500000001:{i}" for i in (1, 2, 5, 6)}


def test_backfill_last_n(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                         news: FakeChannel) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        return await sync.sync_channel("technews", backfill=2, rescan=False)

    result = run(main())
    # the last 2 messages are the media-only post (skipped) and post 5
    assert (result.new, result.status) == (1, "ok")
    assert doc_ids(index) == {"tg:1500000001:5"}
    assert ChannelRegistry(index.redis, index.namespace).require("technews").last_message_id == 5


def test_edit_and_deletion_in_rescan_window(index: Any, pipeline: PostPipeline,
                                            fake: FakeTelegram, news: FakeChannel) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        await sync.sync_channel("technews")
        old_points = {p.id for p in points(index, "tg:1500000001:2")}
        news.edit(2, "Курс рубля резко вырос после заседания ЦБ")
        del news.messages[5]
        result = await sync.sync_channel("technews")
        return old_points, result

    old_points, result = run(main())
    assert (result.updated, result.deleted, result.embedded_nodes) == (1, 1, 1)
    pts = points(index, "tg:1500000001:2")
    assert len(pts) == 1 and "резко вырос" in pts[0].payload["text"]
    assert pts[0].payload["edited"] is not None
    assert {p.id for p in pts} == old_points  # overwritten in place: no stale point left
    assert points(index, "tg:1500000001:5") == []
    assert "tg:1500000001:5" not in doc_ids(index)
    assert index.store.count() == 2
    info = {c.channel_id: c for c in index.catalog.channels()}[1500000001]
    assert info.posts == 2


def test_flood_wait_and_dropped_connection_resume(index: Any, pipeline: PostPipeline,
                                                  fake: FakeTelegram, news: FakeChannel,
                                                  sleeps: list[float]) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    req = functions.messages.GetHistoryRequest
    fake.fail_next = [(req, errors.FloodWaitError(None, capture=1)),
                      (req, ConnectionError("connection reset"))]

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline,
                           listener=lambda *e: events.append(e))
        return await sync.sync_channel("technews")

    result = run(main())
    assert result.status == "ok" and result.new == 3
    assert result.flood_waits == [1] and result.retries == 1
    assert 1 in sleeps and 1.0 in sleeps
    assert ("technews", "flood_wait", {"seconds": 1}) in events
    assert any(kind == "retry" for _, kind, _ in events)


def test_private_and_unknown_channels_fail_others_sync(index: Any, pipeline: PostPipeline,
                                                       fake: FakeTelegram,
                                                       news: FakeChannel) -> None:
    fake.add(FakeChannel(1500000002, "secretchan", "Секрет", private=True))
    other = fake.add(FakeChannel(1500000003, "sport", "Спорт"))
    other.post("Футбольный матч закончился вничью")

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        for ref in ("secretchan", "nosuchchannel", "technews", "sport"):
            sync.registry.add(ref)
        return await sync.sync_all(), sync.registry

    results, registry = run(main())
    by_ref = {r.ref: r for r in results}
    assert by_ref["secretchan"].status == "failed" and "private" in by_ref["secretchan"].error
    assert by_ref["nosuchchannel"].status == "failed"
    assert by_ref["technews"].status == "ok" and by_ref["sport"].status == "ok"
    assert registry.require("secretchan").status == "failed"
    assert "private" in registry.require("secretchan").last_error
    assert "tg:1500000003:1" in doc_ids(index)


def test_restart_after_crash_resumes_and_embeds_nothing_twice(
    index: Any, fake: FakeTelegram, news: FakeChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    news.post("Пятый пост про экономику")
    news.post("Шестой пост про науку")
    crashing = PostPipeline(index, batch_size=2)
    real_ingest = crashing.ingest
    calls = {"n": 0}

    def crash_on_second_batch(items: Any, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real_ingest(items, *a, **kw)

    monkeypatch.setattr(crashing, "ingest", crash_on_second_batch)

    async def main() -> Any:
        first = await ChannelSync(index, new_client(fake), pipeline=crashing) \
            .sync_channel("technews")
        cursor = ChannelRegistry(index.redis, index.namespace).require("technews").last_message_id
        # "restart": a new client, a new sync, a new pipeline
        second = await ChannelSync(index, new_client(fake), pipeline=PostPipeline(
            index, batch_size=2)).sync_channel("technews")
        return first, cursor, second

    first, cursor, second = run(main())
    assert first.status == "failed" and "killed" in first.error
    assert first.new == 2 and cursor == 2  # only the committed batch moved the cursor
    assert second.status == "ok" and second.new == 3
    assert first.embedded_nodes + second.embedded_nodes == 5  # every post embedded exactly once
    assert len(doc_ids(index)) == 5 and index.store.count() == 5


def test_lock_keeps_a_channel_to_one_worker(index: Any, pipeline: PostPipeline,
                                            fake: FakeTelegram, news: FakeChannel) -> None:
    other = RedisLock(index.redis, f"{index.namespace}:tg:lock:technews", ttl=30)
    assert other.acquire()

    async def main() -> Any:
        return await ChannelSync(index, new_client(fake), pipeline=pipeline) \
            .sync_channel("technews")

    assert run(main()).status == "busy"
    other.release()
    assert run(main()).status == "ok"
    assert index.redis.get(other.key) is None  # released after the sync


async def synced_live(index: Any, fake: FakeTelegram, pipeline: PostPipeline,
                      events: list[tuple[str, str, dict[str, Any]]] | None = None
                      ) -> tuple[Any, ChannelSync, Any]:
    """A client, a sync (its events into ``events``) with technews synced, and live handlers."""
    client = new_client(fake)
    listener = None if events is None else (lambda *e: events.append(e))
    sync = ChannelSync(index, client, pipeline=pipeline, listener=listener)
    await sync.sync_channel("technews")
    return client, sync, register_live_handlers(client, sync)


def test_live_handlers(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                       news: FakeChannel) -> None:
    async def main() -> Any:
        client, sync, live = await synced_live(index, fake, pipeline)

        msg = news.post("Срочно: запуск ракеты перенесён")
        await dispatch(client, news, types.UpdateNewChannelMessage(msg, pts=1, pts_count=1))
        await live.drain()
        new_ok = "tg:1500000001:6" in doc_ids(index)

        edited = news.edit(1, "Спутник связи выведен на орбиту")
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()

        del news.messages[2]
        await dispatch(client, news, types.UpdateDeleteChannelMessages(
            channel_id=news.id, messages=[2], pts=3, pts_count=1))
        await live.drain()
        return new_ok

    assert run(main())
    pts = points(index, "tg:1500000001:1")
    assert len(pts) == 1 and "орбиту" in pts[0].payload["text"]
    assert points(index, "tg:1500000001:2") == []
    assert doc_ids(index) == {f"tg:1500000001:{i}" for i in (1, 5, 6)}


def text_of(index: Any, message_id: int) -> str | None:
    pts = points(index, f"tg:1500000001:{message_id}")
    return pts[0].payload["text"] if pts else None


def test_live_edit_and_deletion_wait_for_the_channels_lock(
    quick_index: Index, fake: FakeTelegram, news: FakeChannel, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = quick_index
    events: list[tuple[str, str, dict[str, Any]]] = []
    # At each retry: post 1's text, and whether post 2 is indexed.
    other = LockHolder(index, "technews",
                       lambda: (text_of(index, 1), "tg:1500000001:2" in doc_ids(index)))

    async def main() -> None:
        client, sync, live = await synced_live(index, fake, PostPipeline(index, batch_size=2),
                                               events)
        other.spy(monkeypatch)

        # Another worker syncs technews for longer than the retries last: the edit is given up.
        other.holds()
        edited = news.edit(1, "Спутник связи не вышел на орбиту")
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()
        assert other.retries == [("Запущен новый спутник связи", True)] * 5
        assert text_of(index, 1) == "Запущен новый спутник связи"
        assert not [e for e in events if e[1] == "live"]
        other.lock.release()

        # Its sync ends during the retries: the edit is applied then, not before.
        other.holds(release_at=2)
        edited = news.edit(1, "Спутник связи выведен на орбиту")
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=3, pts_count=1))
        await live.drain()
        assert other.retries == [("Запущен новый спутник связи", True)] * 2
        assert "выведен на орбиту" in (text_of(index, 1) or "")

        # A deletion waits the same way: a sync that read the post before cannot re-add it.
        other.holds(release_at=1)
        del news.messages[2]
        await dispatch(client, news, types.UpdateDeleteChannelMessages(
            channel_id=news.id, messages=[2], pts=4, pts_count=1))
        await live.drain()
        assert other.retries == [(text_of(index, 1), True)]

    with caplog.at_level(logging.WARNING, logger="tgrag.live"):
        run(main())
    assert "live edit of technews/1 not applied (busy)" in caplog.text
    assert doc_ids(index) == {f"tg:1500000001:{i}" for i in (1, 5)}
    assert [d for _, e, d in events if e == "live"] == [{"edited": 1, "reindexed": True},
                                                      {"deleted": [2]}]
    assert index.redis.get(other.lock.key) is None  # every lock released


@pytest.mark.parametrize("removed_at", ["lookup", "lock"])
def test_live_edit_never_brings_back_a_removed_channels_post(
    index: Any, pipeline: PostPipeline, fake: FakeTelegram, news: FakeChannel,
    monkeypatch: pytest.MonkeyPatch, removed_at: str,
) -> None:
    """`channels remove --delete-posts` lands after the edit was matched to the channel
    (``lookup``) or just before the live edit takes the channel's lock (``lock``)."""
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def main() -> None:
        client, sync, live = await synced_live(index, fake, pipeline, events)
        name = "by_channel_id" if removed_at == "lookup" else "lock"
        real = getattr(sync.registry, name)

        def then_removed(*args: Any) -> Any:
            found = real(*args)
            remove_channel(index, "technews", delete_posts=True)  # its own registry and lock
            monkeypatch.setattr(sync.registry, name, real)
            return found

        monkeypatch.setattr(sync.registry, name, then_removed)
        edited = news.edit(1, "Спутник связи выведен на орбиту")
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()

    run(main())
    assert ChannelRegistry(index.redis, index.namespace).get("technews") is None
    assert doc_ids(index) == set() and index.store.count() == 0
    assert index.catalog.channels() == []
    assert not [e for e in events if e[1] == "live"]


def test_live_edit_of_an_unread_message_catches_up(index: Any, pipeline: PostPipeline,
                                                   fake: FakeTelegram, news: FakeChannel) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def main() -> None:
        client, _, live = await synced_live(index, fake, pipeline, events)
        draft = news.post("Черновик")  # posted and edited before its NewMessage was handled
        edited = news.edit(draft.id, "Новая статья про нейросети")
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()

    run(main())
    assert "нейросети" in (text_of(index, 6) or "")
    assert [d for _, e, d in events if e == "live"] == [{"new": 1, "updated": 0}]


def test_scheduler_jobs_and_reader_share_one_loop(index: Any, pipeline: PostPipeline,
                                                  fake: FakeTelegram, news: FakeChannel,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = asyncio.run
    loop_thread = threading.get_ident()

    def no_nested_run(*a: Any, **kw: Any) -> Any:
        # The loop's own thread must never start another loop.  The pipeline's worker thread
        # (asyncio.to_thread) has no loop, and LlamaIndex's extractors start a private one there
        # with asyncio.run: a separate loop in a separate thread, not a nested one.
        if threading.get_ident() == loop_thread:
            raise AssertionError("asyncio.run called on the event loop's thread")
        return real_run(*a, **kw)

    monkeypatch.setattr(asyncio, "run", no_nested_run)
    seen: dict[str, Any] = {}

    async def app_request(sync: ChannelSync, sched: SyncScheduler) -> str:
        # what a FastAPI handler does: trigger a job on its own (the running) loop
        seen["app"] = asyncio.get_running_loop()
        return sched.trigger(["technews"]).id

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        sync = ChannelSync(
            index, new_client(fake), pipeline=pipeline,
            listener=lambda *e: seen.setdefault("listener", asyncio.get_running_loop()),
        )
        sync.registry.add("technews")
        sched = SyncScheduler(sync, interval=3600)
        job_id = await app_request(sync, sched)  # POST /sync → background job
        await sched.wait_jobs()
        news.post("Пост для планировщика")
        task = sched.start()  # the periodic task: first run at once, then every hour
        await sched.stop()  # lets the running job finish, cancels the wait
        assert task.done()
        return loop, sched.jobs.get(job_id)

    loop, job = run(main())
    assert job.status == "done" and job.channels_done == 1 and job.channels_total == 1
    assert job.channels_failed == 0 and job.results[0]["status"] == "ok"
    assert "tg:1500000001:6" in doc_ids(index)  # indexed by the scheduled run
    assert seen["app"] is loop and seen["listener"] is loop
    assert fake.loops and all(x is loop for x in fake.loops)


def test_make_client_needs_credentials(settings: Settings) -> None:
    with pytest.raises(InputError, match="TGRAG_TG_API_ID"):
        make_client(settings)
    with_creds = settings.model_copy(update={"tg_api_id": 1, "tg_api_hash": "x"})
    with pytest.raises(InputError, match="tgrag login"):
        make_client(with_creds)


# -- surfaces (api/routes/sync.py, api/cli/sync_commands.py) --------------------------------------


def test_routes_channels_and_background_sync_job(index: Any, pipeline: PostPipeline,
                                                 fake: FakeTelegram, news: FakeChannel) -> None:
    import time

    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import LOCAL

    app = create_app(index.settings, index=index)
    with TestClient(app, client=LOCAL) as http:
        assert http.post("/channels", json={"channel": "@TechNews"}).status_code == 201
        assert [c["ref"] for c in http.get("/channels").json()["channels"]] == ["technews"]
        # the client is created on the server's loop, as get_scheduler would do it
        app.state.services.set_scheduler(
            http.portal.call(_scheduler_on_loop, index, fake, pipeline))
        started = http.post("/sync", json={})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        deadline = time.monotonic() + 120
        while (job := http.get(f"/sync/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job["status"] == "done" and job["posts"] == 3, job
        assert http.get("/sync/nope").status_code == 404
        assert http.delete("/channels", params={"channel": "technews"}).status_code == 200
        assert http.get("/channels").json()["channels"] == []
        assert http.delete("/channels", params={"channel": "technews"}).status_code == 404


async def _scheduler_on_loop(index: Any, fake: FakeTelegram, pipeline: PostPipeline) -> Any:
    return SyncScheduler(ChannelSync(index, new_client(fake), pipeline=pipeline))


def test_cli_channels_commands(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from api.cli import context as cli
    from api.cli.sync_commands import register

    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    app = typer.Typer(cls=cli.TgragGroup)
    app.callback()(cli.root)
    register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["channels", "add", "@technews", "t.me/Sport"]).exit_code == 0
    listed = runner.invoke(app, ["channels", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [c["ref"] for c in json.loads(listed.stdout)["channels"]] == ["sport", "technews"]
    removed = runner.invoke(app, ["channels", "remove", "sport"])
    assert removed.exit_code == 0 and "removed sport" in removed.output
    missing = runner.invoke(app, ["sync"])  # no Telegram credentials
    assert missing.exit_code == 2 and "TGRAG_TG_API_ID" in missing.output
