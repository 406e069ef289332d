"""The mention rule: group-chat windows synced through the fake Telegram (``FakeGroup``), the
account's identity recorded by that sync, the services' pipeline (its commit hook fills the
outbox) and the dispatcher's pass, which hands each committed window to the mention matcher."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from telethon import types
from typer.testing import CliRunner

from api.services import Services
from rag.errors import InputError
from rag.index import Index
from tests.conftest import LOCAL
from tests.fake_telegram import FakeChannel, FakeGroup, FakeTelegram, new_client, run

GROUP_ID, NEWS_ID = 1700000001, 1500000001
ME = types.User(id=4242, is_self=True, access_hash=1, first_name="Тест", username="tester")


@pytest.fixture
def telegram() -> FakeTelegram:
    fake = FakeTelegram()
    fake.me = ME  # the account the syncs read with: @tester
    return fake


@pytest.fixture
def people(telegram: FakeTelegram) -> dict[str, types.User]:
    return {"ivan": telegram.add_person(501, "Иван", username="ivan"),
            "petr": telegram.add_person(502, "Пётр")}


@pytest.fixture
def group(telegram: FakeTelegram, people: dict[str, types.User]) -> FakeGroup:
    g = telegram.add(FakeGroup(GROUP_ID, "devchat", "Разработчики"))
    g.say(people["ivan"], "Кто обновлял базу?", age=timedelta(hours=5))  # window 1 (1-2)
    g.say(ME, "Я, @tester тут: миграция прошла", age=timedelta(hours=5) - timedelta(minutes=1))
    g.say(people["ivan"], "Обед в час", age=timedelta(hours=3))  # window 3 (3-4)
    g.say(people["petr"], "@Tester посмотри PR про релиз, пожалуйста",
          age=timedelta(hours=3) - timedelta(minutes=2))
    return g


@pytest.fixture
def news(telegram: FakeTelegram) -> FakeChannel:
    channel = telegram.add(FakeChannel(NEWS_ID, "technews", "Тех новости"))
    channel.post("Подписывайтесь: @tester рассказал про релиз", age=timedelta(hours=2))
    return channel


def sync(services: Services, telegram: FakeTelegram, *refs: str) -> None:
    async def main() -> None:
        syncer = services.channel_sync(new_client(telegram))  # THE pipeline: the outbox hook
        for ref in refs:
            await syncer.sync_channel(ref)

    run(main())


def matches(services: Services, alert_id: str) -> list[dict[str, Any]]:
    return services.alert_matches(alert_id)["results"]


def test_a_mention_of_the_account_notifies_once(index: Index, telegram: FakeTelegram,
                                                group: FakeGroup, news: FakeChannel) -> None:
    services = Services(index)  # the index fixture closes it
    services.follow("@devchat", group=True)
    services.follow("@technews")
    alert = services.add_alert("", rule="mention")
    sync(services, telegram, "devchat", "technews")

    report = services.dispatch_alerts()
    assert report.checked == 3 and report.matches == 1
    (hit,) = matches(services, alert.id)
    # Window 3 by Пётр; not window 1 (the account's own message), not the channel post.
    assert hit["id"] == f"tg:{GROUP_ID}:3"
    assert (hit["message_id"], hit["link"]) == (4, "https://t.me/devchat/4")  # the message itself
    assert hit["snippet"] == "Пётр: @Tester посмотри PR про релиз, пожалуйста"
    assert [hit["snippet"][s:e] for s, e in hit["highlights"]] == ["@Tester"]

    # Synced again (nothing new) and a pass again: nothing is notified twice.
    sync(services, telegram, "devchat", "technews")
    assert services.dispatch_alerts().matches == 0
    assert len(matches(services, alert.id)) == 1


def test_keywords_and_the_channel_filter(index: Index, telegram: FakeTelegram,
                                         group: FakeGroup, news: FakeChannel,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    services = Services(index)
    services.follow("@devchat", group=True)
    services.follow("@technews")
    monkeypatch.setattr(services.settings, "mention_keywords", ["обед"])
    with_words = services.add_alert("релиз, обновлял базу", rule="mention")
    sync(services, telegram, "devchat", "technews")
    services.dispatch_alerts()
    got = {h["id"]: (h["message_id"], [h["snippet"][s:e] for s, e in h["highlights"]])
           for h in matches(services, with_words.id)}
    # "релиз" by Пётр (with the @username: the first mention of window 3 is message 3's "Обед",
    # a TGRAG_MENTION_KEYWORDS word); "обновлял базу" in Иван's message 1. The channel post
    # says "релиз" and "@tester" too: channel posts never match mention alerts.
    assert got == {f"tg:{GROUP_ID}:1": (1, ["обновлял базу"]),
                   f"tg:{GROUP_ID}:3": (3, ["Обед"])}

    # Keywords are extra: the @username still counts.  An alert limited to another chat sees
    # nothing of this group (the store filter applies as for posts).
    elsewhere = services.add_alert("", rule="mention", channels=["technews"])
    msg = group.say(group.senders[502], "@tester ещё вопрос", age=timedelta(minutes=1))
    sync(services, telegram, "devchat")
    services.dispatch_alerts()
    assert matches(services, elsewhere.id) == []
    assert msg.id in [h["message_id"] for h in matches(services, with_words.id)]


def test_without_an_identity_only_keywords_match(index: Index, telegram: FakeTelegram,
                                                 group: FakeGroup) -> None:
    """No group sync has run in this deployment yet: the account's @username is unknown, so an
    empty mention alert matches nothing; its keywords still do."""
    services = Services(index)
    plain = services.add_alert("", rule="mention")
    words = services.add_alert("релиз", rule="mention")
    from ingest.chat_windows import ChatMessage, window_post

    window = window_post(GROUP_ID, "devchat", "Разработчики", [
        ChatMessage(message_id=9, date=1_700_000_000, text="@tester релиз вышел", sender_id=7,
                    sender_name="Ира")])
    services.ingest([window])
    services.dispatch_alerts()
    assert matches(services, plain.id) == []
    assert [h["message_id"] for h in matches(services, words.id)] == [9]


def test_mention_alerts_are_checked_when_saved(index: Index) -> None:
    services = Services(index)
    with pytest.raises(InputError, match="no threshold"):
        services.add_alert("", rule="mention", threshold=0.9)
    with pytest.raises(InputError, match="no mode"):
        services.add_alert("", rule="mention", mode="dense")
    with pytest.raises(InputError, match="'и' has no words"):
        services.add_alert("релиз, и", rule="mention")
    with pytest.raises(InputError, match="indexed for tenant default"):
        services.for_tenant("acme").add_alert("", rule="mention")
    alert = services.add_alert(" релиз ,  ключевая ставка ", rule="mention")
    assert alert.keywords == ["релиз", "ключевая ставка"] and alert.threshold is None
    assert alert.to_dict()["rule"] == "mention"


def test_mention_alerts_through_the_cli_and_http(index: Index, telegram: FakeTelegram,
                                                 group: FakeGroup, tmp_path: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from api.app import create_app
    from api.cli import app

    services = Services(index)
    services.follow("@devchat", group=True)
    sync(services, telegram, "devchat")  # records the account's identity
    with TestClient(create_app(index.settings, services=services),
                    client=LOCAL) as http:
        made = http.post("/alerts", json={"rule": "mention", "query": "релиз"})
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["rule"], body["query"], body["threshold"]) == ("mention", "релиз", None)
        trial = http.post("/alerts/test", json={"rule": "mention", "days": 30}).json()
        assert [h["message_id"] for h in trial["results"]] == [4], trial  # window 3: Пётр
        refused = http.post("/alerts", json={"rule": "mention", "threshold": 0.5})
        assert refused.status_code == 400 and "no threshold" in refused.json()["detail"]
    index.close()  # the CLI opens the data folder itself
    monkeypatch.setenv("TGRAG_DATA_DIR", str(index.settings.data_dir))
    added = CliRunner().invoke(app, ["alerts", "add", "--rule", "mention", "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["rule"] == "mention"
    listed = CliRunner().invoke(app, ["alerts", "list"])
    assert "(mentions of the account)  mention" in listed.stdout
    assert "«релиз»  mention" in listed.stdout
    tried = CliRunner().invoke(app, ["alerts", "test", "--rule", "mention", "--days", "30"])
    assert tried.exit_code == 0 and "1 of 2 posts" in tried.stdout, tried.output
    assert "https://t.me/devchat/4" in tried.stdout
