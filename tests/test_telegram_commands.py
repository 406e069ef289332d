"""``tgrag login``, ``watch``, ``worker`` and ``channels remove --delete-posts``, run as commands.

The real CLI (``api.cli.app`` through ``CliRunner``) with the real ``TelegramClient``; only its
MTProto transport is fake (``tests/fake_telegram.py``), put in through the one seam,
``ingest.telegram.connector.new_client``.  The fake server checks logins for real (codes, and
two-step verification by SRP), so a session is usable by a later command only if the login
produced it.  While ``watch`` or ``worker`` runs, ``FakeTelegram.script`` plays Telegram inside
the command's event loop: it pushes updates, adds posts, and finally stops the command with the
signal a user (Ctrl-C) or ``docker stop`` (SIGTERM) would send.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from telethon import functions, types
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession, StringSession
from typer.testing import CliRunner

from api.cli import app
from ingest.pipeline import PostPipeline
from ingest.telegram import connector
from ingest.telegram.reader import make_client
from ingest.telegram.state import ChannelRegistry
from ingest.telegram.sync import ChannelSync, remove_channel
from rag.index import Index
from rag.settings import Settings
from rag.store import StoreFilter
from tests.fake_telegram import (
    FakeChannel,
    FakeSender,
    FakeTelegram,
    new_client,
    printed,
    run,
    send_signal,
    until,
)

NEWS_ID, SPORT_ID = 1500000001, 1500000003
Cli = Callable[..., Result]


@pytest.fixture
def fake() -> FakeTelegram:
    fake = FakeTelegram(require_auth=True)
    news = fake.add(FakeChannel(NEWS_ID, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи", age=timedelta(days=10))
    news.post("Курс рубля стабилен", age=timedelta(days=9))
    news.service()
    news.post("", media=types.MessageMediaPhoto())  # media-only: skipped
    news.post("Открылась выставка роботов", age=timedelta(days=1))
    sport = fake.add(FakeChannel(SPORT_ID, "sport", "Спорт"))
    sport.post("Футбольный матч закончился вничью")
    return fake


@pytest.fixture
def cli(settings: Settings, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TGRAG_TG_API_ID", "1")
    monkeypatch.setenv("TGRAG_TG_API_HASH", "x")
    # The seam: the commands' clients are the real make_client's, over the fake transport.
    monkeypatch.setattr(connector, "new_client",
                        lambda s, **options: fake.attach(make_client(s, **options)))
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return invoke


def logged_in(fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_TG_SESSION", fake.login_session())


def doc_ids(index: Index) -> set[str]:
    return set(index.docstore.get_all_document_hashes().values())


def channel_points(index: Index, channel_id: int) -> int:
    return index.store.count(StoreFilter(channel_ids=(channel_id,)))


# -- login ----------------------------------------------------------------------------------------


def test_login_prints_a_session_that_later_commands_use(
    cli: Cli, fake: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_account("+7 999 000-00-01", username="alice")
    result = cli("login", input="+7 999 000-00-01\n12345\n")
    assert result.exit_code == 0, result.output
    # stdout is the one line to append to .env (CliRunner echoes the typed answers there too,
    # as a terminal would show them); prompts and messages went to stderr
    *typed, line = result.stdout.splitlines()
    assert [t.strip() for t in typed] == ["+7 999 000-00-01", "12345"]
    assert line.startswith("TGRAG_TG_SESSION=")
    session = line.split("=", 1)[1]
    assert "Logged in as @alice" in result.stderr and "secret" in result.stderr
    assert fake.authorized[StringSession(session).auth_key.key].username == "alice"
    assert not (settings.data_dir / "telegram.session").exists()
    assert fake.count(functions.auth.SendCodeRequest) == 1

    not_yet = cli("sync", "-c", "technews")  # no session configured at all
    assert not_yet.exit_code == 2 and "tgrag login --save" in not_yet.stderr
    monkeypatch.setenv("TGRAG_TG_SESSION", session)
    synced = cli("sync", "-c", "technews")
    assert synced.exit_code == 0, synced.output
    assert "technews: 3 new, 0 updated" in synced.stdout


def test_login_with_two_step_verification(cli: Cli, fake: FakeTelegram) -> None:
    fake.add_account("+79990000002", password="correct horse", username="bob")
    result = cli("login", "--phone", "+79990000002", input="12345\nwrong\ncorrect horse\n")
    assert result.exit_code == 0, result.output
    assert "two-step verification" in result.stderr
    assert "Wrong password; try again (2 left)" in result.stderr
    assert "correct horse" not in result.output  # the password is never echoed
    # the server checked both SRP proofs: the first failed, the second logged in
    assert fake.count(functions.auth.CheckPasswordRequest) == 2
    session = result.stdout.splitlines()[-1].split("=", 1)[1]
    assert fake.authorized[StringSession(session).auth_key.key].username == "bob"


def test_login_wrong_code_retries_then_gives_up(cli: Cli, fake: FakeTelegram) -> None:
    fake.add_account("+79990000003", username="carol")
    retried = cli("login", input="+79990000003\n00000\n12345\n")
    assert retried.exit_code == 0, retried.output
    assert "That code is not right; try again (2 left)" in retried.stderr

    failed = cli("login", input="+79990000003\n1\n2\n3\n")
    assert failed.exit_code == 2
    assert "error: the login code was wrong 3 times" in failed.stderr
    assert "hint: run `tgrag login` again" in failed.stderr
    assert "TGRAG_TG_SESSION" not in failed.stdout
    assert fake.count(functions.auth.SignInRequest) == 2 + 3

    bad_phone = cli("login", "--phone", "+1 000")
    assert bad_phone.exit_code == 2 and "not a valid phone number" in bad_phone.stderr


def test_login_save_writes_a_private_session_file_that_later_commands_use(
    cli: Cli, fake: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_account("+79990000004", username="dave")
    monkeypatch.setenv("TGRAG_TG_SESSION", "not-even-a-session")  # login ignores it, warns
    result = cli("login", "--save", input="+79990000004\n12345\n")
    assert result.exit_code == 0, result.output
    assert "TGRAG_TG_SESSION" not in result.stdout  # nothing secret printed
    path = settings.data_dir / "telegram.session"
    assert f"Session saved to {path}" in result.stderr
    assert "TGRAG_TG_SESSION is set and wins" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in settings.data_dir.iterdir() if "session" in p.name] == [path.name]
    saved = SQLiteSession(str(path))
    try:
        assert fake.authorized[saved.auth_key.key].username == "dave"
    finally:
        saved.close()

    monkeypatch.delenv("TGRAG_TG_SESSION")
    synced = cli("sync", "-c", "technews")  # picks the file up
    assert synced.exit_code == 0, synced.output
    assert "technews: 3 new" in synced.stdout


def test_commands_refuse_a_session_that_is_not_logged_in(
    cli: Cli, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = StringSession()
    stale.set_dc(2, "149.154.167.51", 443)
    stale.auth_key = AuthKey(os.urandom(256))  # a key the server does not know (logged out)
    monkeypatch.setenv("TGRAG_TG_SESSION", stale.save())
    for command in ("sync", "watch", "worker"):
        result = cli(command)
        assert result.exit_code == 2, (command, result.output)
        assert "not logged in" in result.stderr and "tgrag login" in result.stderr
    assert all(s.disconnects for s in fake.senders)


# -- watch ----------------------------------------------------------------------------------------


def test_watch_indexes_edits_and_deletes_pushed_updates_until_ctrl_c(
    cli: Cli, fake: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(fake, monkeypatch)
    assert cli("channels", "add", "technews").exit_code == 0
    news = fake.channels[NEWS_ID]

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: "watching" in printed(), "the catch-up")
        conn.push(news.new_message_update(news.post("Срочно: запуск ракеты перенесён")))
        await until(lambda: "technews: 1 new, 0 updated" in printed(), "the new post")
        conn.push(news.edit_update(news.edit(1, "Спутник связи выведен на орбиту")))
        await until(lambda: "technews: post 1 edited, re-indexed" in printed(), "the edit")
        conn.push(news.delete_update([2]))
        await until(lambda: "technews: post 2 deleted" in printed(), "the deletion")
        send_signal(signal.SIGINT)  # Ctrl-C

    fake.script = telegram
    result = cli("watch")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    assert "technews: 3 new" in result.stdout  # the catch-up before following updates
    assert result.stderr.rstrip().endswith("stopped")
    assert fake.senders[-1].disconnects
    with Index.open(settings) as index:
        assert doc_ids(index) == {f"tg:{NEWS_ID}:{i}" for i in (1, 5, 6)}
        (point,) = index.store.chunks_of(f"tg:{NEWS_ID}:1")
        assert "орбиту" in point.payload["text"]
        assert index.store.chunks_of(f"tg:{NEWS_ID}:2") == []
        state = ChannelRegistry(index.redis, index.namespace).require("technews")
        assert (state.status, state.last_message_id) == ("ok", 6)
        assert not index.redis.exists(ChannelRegistry(index.redis, index.namespace)
                                      .lock("technews", 1).key)


def test_watch_exits_with_a_clear_error_when_the_connection_is_lost(
    cli: Cli, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(fake, monkeypatch)
    assert cli("channels", "add", "technews").exit_code == 0

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: "watching" in printed(), "the catch-up")
        conn.drop(ConnectionError("connection reset by peer"))

    fake.script = telegram
    result = cli("watch")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 3, result.output
    assert "error: lost the connection to Telegram: connection reset by peer" in result.stderr
    assert "catches up" in result.stderr


# -- worker ---------------------------------------------------------------------------------------


def test_worker_syncs_every_interval_respects_locks_and_stops_on_sigterm(
    cli: Cli, fake: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(fake, monkeypatch)
    assert cli("channels", "add", "technews", "sport").exit_code == 0
    with Index.open(settings) as index:  # another worker is syncing `sport`
        other = ChannelRegistry(index.redis, index.namespace).lock("sport", ttl=600)
        assert other.acquire()
    news = fake.channels[NEWS_ID]

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: "technews: 3 new" in printed()
                    and "sport: skipped, another worker is syncing it" in printed(),
                    "the first round")
        news.post("Пост для второго круга")
        await until(lambda: "technews: 1 new" in printed(), "the second round")
        send_signal(signal.SIGTERM)  # what `docker stop` sends

    fake.script = telegram
    result = cli("worker", "--interval", "0.5")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    assert result.stderr.rstrip().endswith("stopped")
    assert fake.senders[-1].disconnects
    with Index.open(settings) as index:
        assert doc_ids(index) == {f"tg:{NEWS_ID}:{i}" for i in (1, 2, 5, 6)}
        assert index.redis.get(other.key).decode() == other.token  # never taken from its owner
        mine = ChannelRegistry(index.redis, index.namespace).lock("technews", 1)
        assert not index.redis.exists(mine.key)  # released on SIGTERM
        registry = ChannelRegistry(index.redis, index.namespace)
        assert registry.require("technews").status == "ok"
        assert registry.require("sport").last_message_id == 0
        jobs = list(index.redis.scan_iter(f"{index.namespace}:tg:job:*"))
        assert len(jobs) >= 2  # one job per round, visible to GET /sync/{id}


def test_worker_refuses_a_zero_interval(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_SYNC_INTERVAL", "0")
    result = cli("worker")
    assert result.exit_code == 2 and "use `tgrag sync`" in result.stderr


# -- channels remove --delete-posts ---------------------------------------------------------------


def test_channels_remove_keeps_or_deletes_posts(
    cli: Cli, fake: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(fake, monkeypatch)
    synced = cli("sync", "-c", "technews", "-c", "sport")
    assert synced.exit_code == 0, synced.output

    kept = cli("channels", "remove", "sport")
    assert kept.exit_code == 0 and "its posts stay indexed" in kept.stdout
    with Index.open(settings) as index:
        assert f"tg:{SPORT_ID}:1" in doc_ids(index)
        busy = ChannelRegistry(index.redis, index.namespace).lock("technews", ttl=600)
        assert busy.acquire()  # a sync of technews is running somewhere

    monkeypatch.setenv("TGRAG_SYNC_LOCK_TTL", "0.3")  # how long removal waits for it
    refused = cli("channels", "remove", "technews", "--delete-posts")
    assert refused.exit_code == 3
    assert "error: channel technews is being synced right now" in refused.stderr
    with Index.open(settings) as index:
        assert len(doc_ids(index)) == 4  # nothing touched
        assert ChannelRegistry(index.redis, index.namespace).get("technews") is not None
        index.redis.delete(busy.key)  # that sync ends

    gone = cli("channels", "remove", "technews", "--delete-posts")
    assert gone.exit_code == 0, gone.output
    assert "removed technews and deleted its 3 posts" in gone.stdout
    # a channel indexed but no longer followed (here: removed without --delete-posts)
    late = cli("channels", "remove", "sport", "--delete-posts")
    assert late.exit_code == 0 and "sport was not followed; deleted its 1 posts" in late.stdout
    again = cli("channels", "remove", "sport", "--delete-posts")
    assert again.exit_code == 2 and "neither followed nor indexed" in again.stderr

    with Index.open(settings) as index:
        assert doc_ids(index) == set() and index.store.count() == 0
        assert index.catalog.channels() == []
        assert ChannelRegistry(index.redis, index.namespace).list() == []


def test_remove_channel_interrupted_is_finished_by_running_it_again(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTelegram()
    news = fake.add(FakeChannel(NEWS_ID, "technews", "Тех новости"))
    for text in ("Первый пост", "Второй пост", "Третий пост"):
        news.post(text)
    other = fake.add(FakeChannel(SPORT_ID, "sport", "Спорт"))
    other.post("Футбольный матч закончился вничью")

    async def sync_all() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=PostPipeline(index, batch_size=2))
        return [await sync.sync_channel(ref) for ref in ("technews", "sport")]

    assert [r.new for r in run(sync_all())] == [3, 1]
    # a crash between a docstore commit and the catalog write: only the docstore knows post 3
    index.catalog.forget_posts(NEWS_ID, [3])

    real_delete = index.docstore.delete_document
    calls = {"n": 0}

    def dies_on_the_second_post(doc_id: str, *args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        real_delete(doc_id, *args, **kw)

    monkeypatch.setattr(index.docstore, "delete_document", dies_on_the_second_post)
    with pytest.raises(RuntimeError, match="killed"):
        remove_channel(index, "technews", delete_posts=True)
    # half done: unfollowed and unsearchable (Qdrant goes first), the rest still traceable
    assert ChannelRegistry(index.redis, index.namespace).get("technews") is None
    assert channel_points(index, NEWS_ID) == 0
    assert any(d.startswith(f"tg:{NEWS_ID}:") for d in doc_ids(index))
    assert not index.redis.exists(ChannelRegistry(index.redis, index.namespace)
                                  .lock("technews", 1).key)

    monkeypatch.setattr(index.docstore, "delete_document", real_delete)
    done = remove_channel(index, "technews", delete_posts=True)
    assert done.removed is None and done.channel_id == NEWS_ID and done.deleted_posts == 3
    assert doc_ids(index) == {f"tg:{SPORT_ID}:1"} and channel_points(index, SPORT_ID) == 1
    assert [c.channel for c in index.catalog.channels()] == ["sport"]

    async def stale_run() -> Any:  # a scheduler round listed technews before the removal
        sync = ChannelSync(index, new_client(fake), pipeline=PostPipeline(index))
        return await sync.sync_all(["technews"])

    (stale,) = run(stale_run())
    assert stale.status == "removed"
    assert ChannelRegistry(index.redis, index.namespace).get("technews") is None
    assert doc_ids(index) == {f"tg:{SPORT_ID}:1"}  # nothing re-indexed


def test_delete_channels_route_with_delete_posts(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import LOCAL

    settings = Settings(data_dir=tmp_path / "api-data", sync_lock_ttl=0.3,
                        _env_file=None)  # type: ignore[call-arg]
    fake = FakeTelegram()
    news = fake.add(FakeChannel(NEWS_ID, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи")
    news.post("Курс рубля стабилен")
    with Index.open(settings) as index:
        run(ChannelSync(index, new_client(fake), pipeline=PostPipeline(index))
            .sync_channel("technews"))
        with TestClient(create_app(settings, index=index), client=LOCAL) as http:
            lock = ChannelRegistry(index.redis, index.namespace).lock("technews", ttl=600)
            assert lock.acquire()
            busy = http.delete("/channels", params={"channel": "technews", "delete_posts": True})
            assert busy.status_code == 409, busy.text
            assert busy.json()["title"] == "Busy" and "TGRAG_SYNC_LOCK_TTL" in busy.json()["hint"]
            lock.release()

            done = http.delete("/channels", params={"channel": "technews", "delete_posts": True})
            assert done.status_code == 200, done.text
            body = done.json()
            assert body["removed"]["ref"] == "technews"
            assert (body["channel_id"], body["deleted_posts"]) == (NEWS_ID, 2)
            assert http.get("/stats").json()["posts"] == 0
            assert http.get("/channels").json()["channels"] == []
            missing = http.delete("/channels", params={"channel": "technews"})
            assert missing.status_code == 404
