"""Alerts through their surfaces: ``tgrag alerts …`` and ``tgrag ingest`` (CliRunner), and the
``/alerts`` routes (TestClient, lifespan included: the server's background dispatcher finds what
an upload adds), with tenants by API key and problem+json errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from tests.conftest import module_settings
from tests.search_corpus import corpus
from tests.test_api import assert_problem
from tests.test_auth import wait_done
from tests.test_cli import SEARCH_KEYS, assert_one_line_error
from tests.webhook_receiver import WebhookReceiver

POSTS = [p for p in corpus() if p.message_id <= 3]
ALERT_KEYS = ["id", "query", "filters", "rule", "threshold", "webhook", "created"]


def dump(path: Path, records: list[tuple[int, str, str]]) -> Path:
    path.write_text(json.dumps([
        {"message_id": mid, "sender_id": -1004445556667, "date": day + "T10:00:00+00:00",
         "channel": "Сводки", "text": text} for mid, day, text in records],
        ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = module_settings(tmp_path_factory, "alerts_cli")
    with Index.open(settings, purpose="pytest alerts cli") as index:
        PostPipeline(index).ingest(POSTS)
    return settings.data_dir


@pytest.fixture
def cli_dir(cli_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(cli_data))
    return cli_data


def tgrag(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_alerts_from_add_to_matches(cli_dir: Path, tmp_path: Path,
                                        receiver: WebhookReceiver) -> None:
    added = tgrag("alerts", "add", "ставки", "--rule", "words", "--webhook", receiver.url,
                  "--json")
    assert added.exit_code == 0, added.stderr
    alert = json.loads(added.stdout)
    assert list(alert)[:7] == ALERT_KEYS and alert["rule"] == "words"
    receiver.secret = alert["webhook_secret"]
    human = tgrag("alerts", "add", "пробки на дорогах", "--threshold", "0.9", "--mode", "dense")
    assert human.exit_code == 0, human.stderr
    assert human.stdout.startswith("saved alert ") and "semantic ≥ 0.9 (dense)" in human.stdout
    assert "secret" not in human.stdout

    listed = tgrag("alerts", "list", "--json")
    assert [a["query"] for a in json.loads(listed.stdout)["alerts"]] == ["ставки",
                                                                        "пробки на дорогах"]

    # Before saving anything: what the rule would have matched.
    tried = tgrag("alerts", "test", "ставки", "--rule", "words", "--days", "30", "--json")
    assert tried.exit_code == 0, tried.stderr
    found = json.loads(tried.stdout)
    assert [h["id"] for h in found["results"]] == ["tg:1001:1"] and found["near_misses"] == []
    assert set(found["results"][0]) == SEARCH_KEYS
    tried = tgrag("alerts", "test", "ставки", "--rule", "words", "--days", "30")
    assert tried.stdout.splitlines()[0].startswith("1 of ")
    assert "https://t.me/econ_daily/1" in tried.stdout

    # An ingest is checked against the alerts when it is done: matches kept, webhooks sent.
    result = tgrag("ingest", str(dump(tmp_path / "d.json", [
        (1, "2024-06-01", "ЦБ сохранил ставку на уровне 16%."),
        (2, "2024-06-02", "Ставки по ипотеке снижаются.")])))
    assert result.exit_code == 0, result.stderr
    assert "alerts: 2 new matches, 2 delivered" in result.stderr
    hooks = receiver.wait_for(2)
    assert all(h["verified"] for h in hooks)
    assert {h["body"]["match"]["id"] for h in hooks} == {"tg:4445556667:1", "tg:4445556667:2"}

    page = tgrag("alerts", "matches", alert["id"], "-k", "1", "--json")
    data = json.loads(page.stdout)
    assert list(data) == ["results", "next_offset"] and data["next_offset"] == 1
    assert set(data["results"][0]) == SEARCH_KEYS
    assert data["results"][0]["id"] in {"tg:4445556667:1", "tg:4445556667:2"}
    human = tgrag("alerts", "matches", alert["id"])
    assert human.stdout.count("https://t.me/c/4445556667/") == 2

    listed = tgrag("alerts", "list")
    assert f"{alert['id']}  «ставки»  words  → {receiver.url}  matches 2" in listed.stdout
    assert tgrag("alerts", "failed", alert["id"]).stdout == "no undelivered notifications\n"
    again = tgrag("ingest", str(tmp_path / "d.json"), "--json")
    assert json.loads(again.stdout)["alerts"]["matches"] == 0  # unchanged posts: nothing new

    removed = tgrag("alerts", "remove", alert["id"])
    assert removed.stdout == f"removed alert {alert['id']} «ставки»\n"
    assert_one_line_error(tgrag("alerts", "matches", alert["id"]), 2, "no alert")


@pytest.mark.parametrize(("args", "needle"), [
    (["add", "ставки", "--rule", "regex"], "unknown alert rule"),
    (["add", "ставки", "--rule", "words", "--threshold", "0.8"], "no threshold"),
    (["add", "ставки", "--mode", "sparse"], "not a mode of semantic alerts"),
    (["add", "ставки", "--channel", "nosuch"], "unknown channel"),
    (["add", "ставки", "--webhook", "example.org"], "is not a webhook URL"),
    (["test", "ставки", "--days", "0"], "days must be positive"),
    (["remove", "0123456789ab"], "no alert"),
    (["matches", "nonsense"], "no alert"),
    (["failed", "0123456789ab"], "no alert"),
])
def test_cli_alert_errors_are_one_line(cli_dir: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(tgrag("alerts", *args), 2, needle)


# -- HTTP -----------------------------------------------------------------------------------------

KEYS = "op-key,acme-key:acme,globex-key:globex"
OP, ACME, GLOBEX = ({"Authorization": "Bearer op-key"}, {"X-API-Key": "acme-key"},
                    {"X-API-Key": "globex-key"})


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = module_settings(tmp_path_factory, "alerts_api", api_keys=KEYS, rate_limit=0,
                               alert_poll_interval=0.2, alert_webhook_private=True,
                               sync_interval=0)
    with Index.open(settings, purpose="pytest alerts api") as index:
        PostPipeline(index).ingest(POSTS)
    return settings


@pytest.fixture(scope="module")
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as client:
        yield client


def upload(client: TestClient, headers: dict, records: list[tuple[int, str, str]]) -> None:
    body = "\n".join(json.dumps({"id": mid, "channel_id": 5001, "channel": "@feed",
                                 "channel_title": "Лента", "date": day + "T09:00:00+00:00",
                                 "text": text}, ensure_ascii=False) for mid, day, text in records)
    response = client.post("/ingest/export", headers=headers,
                           files={"file": ("feed.jsonl", body.encode())})
    assert response.status_code == 202, response.text
    assert wait_done(client, response.json()["job_id"], headers)["status"] == "done"


def wait_matches(client: TestClient, alert_id: str, headers: dict, count: int) -> dict:
    deadline = time.monotonic() + 60
    while True:
        page = client.get(f"/alerts/{alert_id}/matches", headers=headers).json()
        if len(page["results"]) >= count or time.monotonic() > deadline:
            return page
        time.sleep(0.1)


def test_http_alerts_per_tenant(client: TestClient, receiver: WebhookReceiver) -> None:
    response = client.post("/alerts", headers=ACME, json={
        "query": "метро", "rule": "words", "webhook": receiver.url})
    assert response.status_code == 201, response.text
    alert = response.json()
    assert list(alert) == [*ALERT_KEYS, "webhook_secret"]
    receiver.secret = alert["webhook_secret"]
    semantic = client.post("/alerts", headers=GLOBEX, json={"query": "метро", "mode": "dense"})
    assert semantic.status_code == 201 and semantic.json()["webhook_secret"] is None
    other = semantic.json()
    assert other["rule"] == "semantic" and other["threshold"] == 0.86

    assert [a["id"] for a in client.get("/alerts", headers=ACME).json()["alerts"]] == \
        [alert["id"]]
    assert client.get("/alerts", headers=OP).json() == {"alerts": []}
    for method, path in (("GET", f"/alerts/{alert['id']}/matches"),
                         ("GET", f"/alerts/{alert['id']}/dead-letters"),
                         ("POST", f"/alerts/{alert['id']}/dead-letters/retry"),
                         ("DELETE", f"/alerts?id={alert['id']}")):
        assert_problem(client.request(method, path, headers=GLOBEX), 404, "no alert")

    # The server's dispatcher checks what an upload adds, in the uploader's tenant only.
    upload(client, GLOBEX, [(1, "2024-06-01", "В метро открыли новую станцию.")])
    upload(client, ACME, [(1, "2024-06-01", "Метро закроют на ночь."),
                          (2, "2024-06-02", "Автобусы пойдут чаще.")])
    page = wait_matches(client, alert["id"], ACME, 1)
    assert [h["id"] for h in page["results"]] == ["acme/tg:5001:1"]
    assert set(page["results"][0]) == SEARCH_KEYS and page["next_offset"] is None
    (hook,) = receiver.wait_for(1)
    assert hook["verified"] and hook["body"]["match"]["id"] == "acme/tg:5001:1"
    assert hook["body"]["alert"] == {k: v for k, v in alert.items() if k != "webhook_secret"}
    time.sleep(0.5)
    assert all(h["id"].startswith("globex/") for h in
               client.get(f"/alerts/{other['id']}/matches", headers=GLOBEX).json()["results"])
    assert client.get(f"/alerts/{alert['id']}/dead-letters", headers=ACME).json() == \
        {"dead_letters": []}

    removed = client.delete("/alerts", params={"id": alert["id"]}, headers=ACME)
    assert removed.status_code == 200 and removed.json()["removed"]["id"] == alert["id"]
    assert client.get("/alerts", headers=ACME).json() == {"alerts": []}


def test_http_alert_test_and_errors(client: TestClient) -> None:
    response = client.post("/alerts/test", headers=OP, json={
        "query": "ставки", "rule": "words", "days": 30})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [h["id"] for h in data["results"]] == ["tg:1001:1"] and data["matched"] == 1
    assert client.get("/alerts", headers=OP).json() == {"alerts": []}  # nothing was saved

    for body, needle in (({"query": ""}, "empty alert query"),
                         ({"query": "x", "rule": "regex"}, "unknown alert rule"),
                         ({"query": "ставки", "threshold": 2}, "threshold must be in"),
                         ({"query": "ставки", "webhook": "ftp://x"}, "not a webhook URL"),
                         ({"query": "ставки", "channel": ["nosuch"]}, "unknown channel")):
        assert_problem(client.post("/alerts", headers=OP, json=body), 400, needle)
    assert_problem(client.post("/alerts", headers=OP, json={"rule": "words"}), 422, "query")
    assert_problem(client.get("/alerts/0123456789ab/matches", headers=OP), 404, "no alert")
    assert_problem(client.get("/alerts/x/matches", params={"k": 0}, headers=OP), 400, "k must")
    assert_problem(client.get("/alerts", headers={"X-API-Key": "wrong"}), 401)


# -- Telegram: sync and live updates --------------------------------------------------------------


def test_synced_and_live_posts_are_checked(index: Index) -> None:
    from datetime import timedelta

    from telethon import types

    from api.services import Services
    from ingest.telegram.live import register_live_handlers
    from tests.fake_telegram import FakeChannel, FakeTelegram, dispatch, new_client, run

    services = Services(index)  # the index fixture closes it
    alert = services.add_alert("ракета", rule="words")
    fake = FakeTelegram()
    news = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    news.post("Запуск ракеты назначен на пятницу", age=timedelta(days=1))
    news.post("Курс рубля стабилен", age=timedelta(days=1))

    async def main() -> None:
        client = new_client(fake)
        sync = services.channel_sync(client)  # THE pipeline, with the outbox hook
        await sync.sync_channel("@technews")
        live = register_live_handlers(client, sync)
        msg = news.post("Ракету вывезли на стартовый стол")
        await dispatch(client, news, types.UpdateNewChannelMessage(msg, pts=1, pts_count=1))
        await live.drain()
        edited = news.edit(2, "Курс рубля упал после запуска ракеты")  # now it matches
        await dispatch(client, news, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()

    run(main())
    report = services.dispatch_alerts()
    assert report.matches == 3
    assert sorted(h["message_id"] for h in services.alert_matches(alert.id)["results"]) == [1, 2, 3]
