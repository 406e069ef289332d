"""The bot hosted: ``tgrag bot`` alone, inside ``tgrag serve`` (the API's lifespan) and inside
``tgrag worker``, each on its process's one event loop, over the fake Telegram (the hosts' one
seam for the bot's client, ``api.bot.hosting.new_client``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from api.bot import hosting
from api.bot.client import make_bot_client
from api.bot.status import StatusBoard
from api.cli import app
from ingest.documents import Post
from ingest.pipeline import PostPipeline
from ingest.telegram import connector
from ingest.telegram.reader import make_client
from rag.index import Index
from rag.settings import Settings
from tests.conftest import LOCAL
from tests.fake_telegram import FakeBot, FakeChannel, FakeSender, FakeTelegram, send_signal, until

ALICE = 501
Cli = Callable[..., Result]


@pytest.fixture
def fake() -> FakeTelegram:
    fake = FakeTelegram(require_auth=True)
    fake.add_person(ALICE, "Алиса", username="alice")
    return fake


@pytest.fixture
def tgbot(fake: FakeTelegram) -> FakeBot:
    return fake.add_bot()


@pytest.fixture
def cli(settings: Settings, fake: FakeTelegram, tgbot: FakeBot,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    for key, value in {"TGRAG_DATA_DIR": str(settings.data_dir), "TGRAG_TG_API_ID": "1",
                       "TGRAG_TG_API_HASH": "x", "TGRAG_TG_BOT_TOKEN": tgbot.token,
                       "TGRAG_BOT_USERS": str(ALICE), "TGRAG_BOT_EDIT_INTERVAL": "0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hosting, "new_client", lambda s: fake.attach(make_bot_client(s)))
    monkeypatch.setattr(connector, "new_client",
                        lambda s, **options: fake.attach(make_client(s, **options)))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def once(script: Callable[[FakeSender], object]) -> Callable[[FakeSender], object]:
    """A server script for the first connection only (the worker connects its account too)."""
    state = {"ran": False}

    async def run(conn: FakeSender) -> None:
        if state["ran"]:
            return
        state["ran"] = True
        await script(conn)  # type: ignore[misc]

    return run


def test_tgrag_bot_answers_until_ctrl_c(cli: Cli, fake: FakeTelegram, tgbot: FakeBot,
                                        settings: Settings) -> None:
    alice = fake.people[ALICE]

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: bool(tgbot.commands), "the bot to log in")
        tgbot.write(alice, "/help")
        await until(lambda: bool(tgbot.sent(alice)), "the help")
        tgbot.write(alice, "курс рубля")
        await until(lambda: len(tgbot.sent(alice)) == 2, "the search")
        send_signal(signal.SIGINT)

    fake.script = once(telegram)
    result = cli("bot")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    assert "bot running; Ctrl-C to stop" in result.stderr and "bot: ok" in result.stderr
    assert result.stderr.rstrip().endswith("stopped")
    help_text, search = (m.message for m in tgbot.sent(alice))
    assert help_text.startswith("tgrag ищет по постам")
    assert search == "🔎 По запросу курс рубля ничего не нашлось."  # an empty index
    with Index.open(settings) as index:
        assert StatusBoard(index.redis, index.namespace).read() is None  # stopped: cleared


def test_tgrag_bot_refuses_to_start_without_what_it_needs(
    cli: Cli, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TGRAG_BOT_USERS", "alice")
    bad_users = cli("bot")
    assert bad_users.exit_code == 2
    assert "TGRAG_BOT_USERS: 'alice' is neither a Telegram user id nor an @username" in \
        bad_users.stderr
    monkeypatch.setenv("TGRAG_BOT_USERS", str(ALICE))
    monkeypatch.setenv("TGRAG_TG_BOT_TOKEN", "not-a-token")
    assert "does not look like a bot token" in cli("bot").stderr
    monkeypatch.delenv("TGRAG_TG_BOT_TOKEN")
    missing = cli("bot")
    assert missing.exit_code == 2 and "hint: create a bot with @BotFather" in missing.stderr


def test_tgrag_bot_in_embedded_mode_needs_the_data_folder(
    cli: Cli, settings: Settings
) -> None:
    with Index.open(settings, purpose="tgrag serve"):
        result = cli("bot")
    assert result.exit_code == 3
    assert "is in use by process" in result.stderr and "(tgrag serve)" in result.stderr


def test_worker_runs_the_bot_on_its_loop_and_follow_uses_its_sync(
    cli: Cli, fake: FakeTelegram, tgbot: FakeBot, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TGRAG_TG_SESSION", fake.login_session())
    monkeypatch.setenv("TGRAG_BOT_ADMINS", "777")
    admin = fake.add_person(777, "Админ")
    news = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи")

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: bool(tgbot.commands), "the bot to log in")
        tgbot.write(admin, "/follow @technews")
        await until(lambda: any("Слежу" in m.message for m in tgbot.sent(admin)), "the follow")
        send_signal(signal.SIGTERM)

    fake.script = once(telegram)
    result = cli("worker", "--interval", "3600")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    (progress,) = tgbot.sent(admin)
    assert progress.message == "Слежу за «Тех новости»: 1 пост в поиске (новых: 1)."
    with Index.open(settings) as index:
        assert index.post_count() == 1


def test_serve_runs_the_bot_in_its_lifespan_and_ready_reports_it(
    settings: Settings, fake: FakeTelegram, tgbot: FakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    alice = fake.people[ALICE]
    monkeypatch.setattr(hosting, "new_client", lambda s: fake.attach(make_bot_client(s)))
    served = Settings(data_dir=settings.data_dir, tg_api_id=1, tg_api_hash="x",
                      tg_bot_token=tgbot.token, bot_users=[str(ALICE)],
                      _env_file=None)  # type: ignore[call-arg]
    with Index.open(served, purpose="pytest") as index:
        PostPipeline(index).ingest([Post(channel_id=1001, channel="econ_daily",
                                         channel_title="Экономика за день", message_id=1,
                                         date=1714557600,
                                         text="Банк России повысил ключевую ставку до 16%.")])
        with TestClient(create_app(served, index=index), client=LOCAL) as http:
            deadline = time.monotonic() + 60
            while http.get("/ready").json().get("bot") != "ok (@tgrag_bot)":
                assert time.monotonic() < deadline, http.get("/ready").json()
                time.sleep(0.05)
            tgbot.write(alice, "ключевая ставка")  # from this thread, into the server's loop
            while not tgbot.sent(alice):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert "https://t.me/econ_daily/1" in [
                e.url for e in tgbot.sent(alice)[0].entities if hasattr(e, "url")]
        assert http.app.state.bot is None
        assert StatusBoard(index.redis, index.namespace).read() is None


def test_serve_with_a_bot_it_cannot_start_stays_ready_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    plain = Settings(data_dir=tmp_path / "plain", _env_file=None)  # type: ignore[call-arg]
    with Index.open(plain, purpose="pytest") as index, \
            TestClient(create_app(plain, index=index), client=LOCAL) as http:
        assert "bot" not in http.get("/ready").json()  # no bot configured: no field
    # a token but no API id/hash: the API serves, the log and /ready tell what is wrong
    broken = Settings(data_dir=tmp_path / "broken", tg_bot_token="123:AAH",
                      _env_file=None)  # type: ignore[call-arg]
    with Index.open(broken, purpose="pytest") as index, \
            TestClient(create_app(broken, index=index), client=LOCAL) as http:
        body = http.get("/ready").json()
    assert body == {"status": "ok", "redis": "ok", "qdrant": "ok", "bot": "not running"}
    assert "the Telegram bot cannot start: the bot needs TGRAG_TG_API_ID" in caplog.text


# -- alerts through the hosted bot ----------------------------------------------------------------


def test_tgrag_bot_delivers_alerts_queued_while_no_bot_ran(
    cli: Cli, fake: FakeTelegram, tgbot: FakeBot, settings: Settings
) -> None:
    """An alert of Alice's chat matched by an ingest in a process without the bot (the CLI's
    pass queues it for the bot); `tgrag bot` runs the dispatcher itself and sends it."""
    from api.services import Services
    from rag.alerts.delivery import DeliveryQueue

    alice = fake.people[ALICE]
    with Services(Index.open(settings)) as services:
        alert = services.add_alert("спутник", rule="words", chat_id=ALICE)
        services.ingest([Post(channel_id=1500000001, channel="technews",
                              channel_title="Тех новости", message_id=7, date=1714557600,
                              text="Запущен новый спутник связи")])
        report = services.dispatch_alerts()
        assert (report.matches, report.delivered) == (1, 0)  # no bot here: queued for it

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: bool(tgbot.sent(alice)), "the notification")
        send_signal(signal.SIGINT)

    fake.script = once(telegram)
    result = cli("bot")
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    (note,) = tgbot.sent(alice)
    assert note.message.startswith("🔔 По оповещению «спутник», все слова:\nТех новости · ")
    assert "https://t.me/technews/7" in [e.url for e in note.entities if hasattr(e, "url")]
    with Index.open(settings) as index:
        queue = DeliveryQueue(index.redis, index.namespace)
        assert queue.pending("bot") == 0 and queue.dead_letters(alert.id) == []


def test_serve_delivers_the_alerts_its_bot_saved(
    settings: Settings, fake: FakeTelegram, tgbot: FakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    alice = fake.people[ALICE]
    monkeypatch.setattr(hosting, "new_client", lambda s: fake.attach(make_bot_client(s)))
    served = Settings(data_dir=settings.data_dir, tg_api_id=1, tg_api_hash="x",
                      tg_bot_token=tgbot.token, bot_users=[str(ALICE)],
                      _env_file=None)  # type: ignore[call-arg]

    def wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    with Index.open(served, purpose="pytest") as index, \
            TestClient(create_app(served, index=index), client=LOCAL) as http:
        wait(lambda: http.get("/ready").json().get("bot") == "ok (@tgrag_bot)")
        tgbot.write(alice, "/alert words: ключевая ставка")
        wait(lambda: bool(tgbot.sent(alice)))
        assert tgbot.sent(alice)[0].message.startswith("🔔 Оповещение ")
        # an upload: the server's background dispatcher checks it and the bot delivers
        body = '{"id": 3, "channel_id": 1001, "channel": "@econ_daily", "date": ' \
               '"2024-05-01T10:00:00+00:00", "text": "Банк России повысил ключевую ставку."}'
        accepted = http.post("/ingest/export", files={"file": ("feed.jsonl", body.encode())})
        assert accepted.status_code == 202, accepted.text
        wait(lambda: len(tgbot.sent(alice)) == 2)
        assert tgbot.sent(alice)[1].message.startswith("🔔 По оповещению «ключевая ставка»")
