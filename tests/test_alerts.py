"""Alerts end to end on a real index (embedded Qdrant and Redis, the bundled model): posts go
through the services' pipeline (whose commit hook fills the outbox), the dispatcher checks them
and delivers to a local webhook receiver or a test notifier.

Each test works in a tenant of its own over one module index, so their alerts never see each
other's posts (tenant isolation is tested on its own, too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from api.services import Services
from ingest.documents import Post
from rag.alerts.delivery import Notification
from rag.alerts.dispatcher import AlertDispatcher
from rag.alerts.outbox import COMMIT_GRACE, Outbox
from rag.alerts.store import AlertStore
from rag.alerts.webhook import WebhookNotifier
from rag.errors import DeliveryFailed, InputError, NotFoundError
from rag.index import Index
from tests.conftest import module_settings
from tests.search_corpus import corpus, ts
from tests.webhook_receiver import WebhookReceiver

ECON = (2001, "econ", "Экономика")
CITY = (2002, "city", "Город")
NEWS = (2003, "", "Новости")


def post(channel: tuple[int, str, str], message_id: int, day: int, text: str) -> Post:
    cid, username, title = channel
    return Post(channel_id=cid, channel=username, channel_title=title, message_id=message_id,
                date=ts(day), text=text)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    settings = module_settings(tmp_path_factory, "alerts", alert_retry_backoff=0.05,
                               alert_max_attempts=3, alert_webhook_private=True,
                               sync_interval=0)
    services = Services(Index.open(settings, purpose="pytest alerts"))
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def tenant(root: Services, request: pytest.FixtureRequest) -> Services:
    name = request.node.name.removeprefix("test_")[:40].replace("[", "-").strip("]").lower()
    return root.for_tenant("".join(c if c.isalnum() or c in "_-" else "_" for c in name))


def ids(page: dict) -> list[str]:
    return [h["id"].split("/", 1)[-1] for h in page["results"]]


# -- rules ----------------------------------------------------------------------------------------


def test_semantic_and_words_rules(root: Services, request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    semantic = me.add_alert("повышение ключевой ставки Банком России", threshold=0.84,
                            mode="dense")
    words = me.add_alert("ставки", rule="words")
    posts = [
        post(ECON, 1, 1, "Банк России повысил ключевую ставку до 18% годовых."),
        post(ECON, 2, 2, "Регулятор ужесточил денежно-кредитную политику, подняв стоимость "
                         "кредитов для банков."),
        post(ECON, 3, 3, "Ставки по вкладам в крупных банках снова выросли."),
        post(CITY, 1, 4, "В парке открылся новый каток с прокатом коньков."),
    ]
    me.ingest(posts)
    report = root.dispatch_alerts()
    assert report.checked == 4 and report.matches >= 2

    own_ids = [replace(p, tenant=me.tenant).doc_id for p in posts]
    scored = {s.doc_id.split("/")[-1]: s.score
              for s in root.alert_dispatcher().matcher.score(semantic, own_ids)}
    # The semantic rule is the cosine threshold, exactly: what scored ≥ 0.84 matched.
    expected = sorted(d for d, score in scored.items() if score >= 0.84)
    assert sorted(ids(me.alert_matches(semantic.id))) == expected
    assert "tg:2001:1" in expected and "tg:2002:1" not in expected
    assert scored["tg:2001:1"] > scored["tg:2002:1"] + 0.05
    # Words: any form of the word ("ставку", "Ставки"), nothing about the meaning.
    assert sorted(ids(me.alert_matches(words.id))) == ["tg:2001:1", "tg:2001:3"]
    hit = me.alert_matches(words.id)["results"][-1]
    assert hit["snippet"].startswith("Банк России повысил ключевую ставку")
    assert [hit["snippet"][s:e] for s, e in hit["highlights"]] == ["ставку"]


def test_hybrid_mode_also_needs_one_of_the_query_words(
        root: Services, request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    dense = me.add_alert("ключевая ставка", threshold=0.8, mode="dense")
    hybrid = me.add_alert("ключевая ставка", threshold=0.8, mode="hybrid")
    me.ingest([post(ECON, 1, 1, "ЦБ поднял ключевую ставку до 18%."),
               post(ECON, 2, 2, "Регулятор ужесточил денежно-кредитную политику.")])
    root.dispatch_alerts()
    dense_ids, hybrid_ids = ids(me.alert_matches(dense.id)), ids(me.alert_matches(hybrid.id))
    assert "tg:2001:1" in hybrid_ids
    assert set(hybrid_ids) == set(dense_ids) - {"tg:2001:2"}


def test_filters_channel_tag_and_dates(root: Services, request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    me.ingest([post(ECON, 1, 1, "Ставка — вводный пост."), post(CITY, 1, 1, "Город: ставка.")])
    by_channel = me.add_alert("ставка", rule="words", channels=["econ"])
    by_date = me.add_alert("ставка", rule="words", since="2024-05-10")
    by_tag = me.add_alert("ставка", rule="words", tags=["#ипотека"])
    me.ingest([post(ECON, 2, 5, "Ставка по ипотеке снизится. #ипотека"),
               post(CITY, 2, 12, "Ставка аренды в центре выросла."),
               post(NEWS, 3, 15, "Ставка на спорт: новый закон.")])
    root.dispatch_alerts()
    assert ids(me.alert_matches(by_channel.id)) == ["tg:2001:2"]
    assert sorted(ids(me.alert_matches(by_date.id))) == ["tg:2002:2", "tg:2003:3"]
    assert ids(me.alert_matches(by_tag.id)) == ["tg:2001:2"]
    with pytest.raises(InputError, match="unknown channel"):
        me.add_alert("ставка", rule="words", channels=["nosuch"])


# -- once per (alert, post) -----------------------------------------------------------------------


def test_only_posts_indexed_after_the_alert(root: Services,
                                            request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    me.ingest([post(CITY, 1, 1, "Новая станция метро открылась.")])
    alert = me.add_alert("метро", rule="words")
    assert root.dispatch_alerts().matches == 0
    me.ingest([post(CITY, 2, 2, "Метро закроют на ремонт.")])
    root.dispatch_alerts()
    assert ids(me.alert_matches(alert.id)) == ["tg:2002:2"]
    # ... while `alerts test` shows what it would have matched among the recent posts.
    trial = me.test_alert("метро", rule="words", days=30)
    assert sorted(h.id.split("/")[-1] for h in trial.matches) == ["tg:2002:1", "tg:2002:2"]


def test_a_post_notifies_once_and_an_edit_only_when_it_newly_matches(
        root: Services, request: pytest.FixtureRequest, receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("метро", rule="words", webhook=receiver.url)
    receiver.secret = alert.secret
    me.ingest([post(CITY, 1, 1, "Трамваи пойдут по новому маршруту.")])
    assert root.dispatch_alerts().matches == 0
    me.ingest([post(CITY, 1, 1, "Трамваи пойдут до станции метро.")])  # edited: now it matches
    assert root.dispatch_alerts().matches == 1
    me.ingest([post(CITY, 1, 1, "Трамваи пойдут до станции метро «Сокол».")])  # still matches
    me.ingest([post(CITY, 1, 1, "Трамваи пойдут до станции метро «Сокол».")])  # unchanged
    again = root.dispatch_alerts()
    assert again.checked == 1 and again.matches == 0  # the unchanged one was not even recorded
    me.ingest([post(CITY, 1, 1, "Трамваи пойдут по старому маршруту."),  # no longer matches,
               post(CITY, 2, 2, "Метро: новые вагоны.")])
    root.dispatch_alerts()
    me.ingest([post(CITY, 1, 1, "Трамваи снова пойдут до метро.")])  # matches again: notified
    root.dispatch_alerts()  # once already, so not again
    assert sorted(ids(me.alert_matches(alert.id))) == ["tg:2002:1", "tg:2002:2"]
    got = receiver.wait_for(2)
    time.sleep(0.2)
    assert len(receiver.requests) == 2 and all(r["verified"] for r in receiver.requests)
    assert sorted(r["body"]["match"]["message_id"] for r in got) == [1, 2]


COPY = ("Банк России повысил ключевую ставку до 18% годовых на внеочередном заседании совета "
        "директоров в понедельник.")


def test_copies_notify_once_with_their_channels(root: Services, request: pytest.FixtureRequest,
                                                receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("ключевая ставка", rule="words", webhook=receiver.url)
    receiver.secret = alert.secret
    me.ingest([post(NEWS, 10, 2, "🔴 " + COPY + "\n\nПодписаться | Прислать новость"),
               post(ECON, 10, 1, COPY),
               post(CITY, 5, 3, "Ключевая ставка и ипотека: что будет с платежами.")])
    first = root.dispatch_alerts()
    assert (first.matches, first.copies, first.delivered) == (2, 1, 2)
    page = me.alert_matches(alert.id)
    by_id = {h["id"].split("/")[-1]: h for h in page["results"]}
    assert sorted(by_id) == ["tg:2001:10", "tg:2002:5"]  # the copy is shown as the oldest
    assert [c["channel_title"] for c in by_id["tg:2001:10"]["copies"]] == ["Новости"]
    hooks = {r["body"]["match"]["id"].split("/")[-1]: r for r in receiver.wait_for(2)}
    assert "также в: Новости" in hooks["tg:2001:10"]["body"]["text"]

    # A copy that comes later joins the notification instead of making a new one.
    me.ingest([post(CITY, 6, 4, COPY + "\n\nhttps://t.me/city")])
    later = root.dispatch_alerts()
    assert (later.matches, later.copies, later.delivered) == (0, 1, 0)
    copies = next(h for h in me.alert_matches(alert.id)["results"]
                  if h["id"].endswith("tg:2001:10"))["copies"]
    assert [c["channel_title"] for c in copies] == ["Новости", "Город"]
    assert len(receiver.requests) == 2


def test_tenants_are_isolated(root: Services, request: pytest.FixtureRequest) -> None:
    a = tenant(root, request)
    b = root.for_tenant(a.tenant[:30] + "_other")
    alert = a.add_alert("выборы", rule="words")
    b.ingest([post(NEWS, 1, 1, "Выборы пройдут в сентябре.")])
    a.ingest([post(NEWS, 2, 2, "Выборы мэра: итоги.")])
    root.dispatch_alerts()
    assert ids(a.alert_matches(alert.id)) == ["tg:2003:2"]
    assert [x.id for x in a.alerts()] == [alert.id] and b.alerts() == []
    for call in (b.alert, b.remove_alert, b.alert_matches, b.alert_dead_letters):
        with pytest.raises(NotFoundError):
            call(alert.id)
    assert b.test_alert("выборы", rule="words", days=30).matches[0].id == \
        f"{b.tenant}/tg:2003:1"


def test_alerts_per_tenant_are_limited(root: Services, request: pytest.FixtureRequest,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    me = tenant(root, request)
    monkeypatch.setattr(root.settings, "alert_max_per_tenant", 2)
    me.add_alert("ставка", rule="words")
    me.add_alert("метро", rule="words")
    with pytest.raises(InputError, match="already has 2 alerts"):
        me.add_alert("выборы", rule="words")


# -- the outbox and several processes -------------------------------------------------------------


def test_the_outbox_waits_for_the_commit_and_drops_what_never_committed(
        root: Services, request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    alert = me.add_alert("мост", rule="words")
    me.ingest([post(CITY, 1, 1, "Мост через реку откроют летом.")])
    committed = me.index.docstore.get_document_hash(f"{me.tenant}/tg:2002:1")
    outbox = Outbox(root.index.redis, root.index.namespace)
    outbox.record([(f"{me.tenant}/tg:2002:1", "not-" + committed),  # a batch still committing
                   (f"{me.tenant}/tg:2002:9", "never")])  # or one that died before its commit
    first = root.dispatch_alerts()
    assert (first.checked, first.waiting, first.dropped) == (1, 2, 0)
    assert ids(me.alert_matches(alert.id)) == ["tg:2002:1"]
    old = time.time() - COMMIT_GRACE - 1
    root.index.redis.hset(outbox.seen_key, mapping={m: old for m in _members(outbox)})
    root.index.redis.zadd(outbox.key, dict.fromkeys(_members(outbox), 0))
    second = root.dispatch_alerts()
    assert (second.checked, second.dropped, outbox.size()) == (0, 2, 0)


def _members(outbox: Outbox) -> list[str]:
    return [m.decode() for m in outbox._r.zrange(outbox.key, 0, -1)]


def test_two_dispatchers_record_and_deliver_each_match_once(
        root: Services, request: pytest.FixtureRequest, receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("пожар", rule="words", webhook=receiver.url)
    receiver.secret = alert.secret
    me.ingest([post(NEWS, i, 1 + i % 20, f"Пожар номер {i} на складе потушили.")
               for i in range(1, 31)])
    index = root.index
    dispatchers = [AlertDispatcher(index, AlertStore(index.redis, index.namespace),
                                   Outbox(index.redis, index.namespace),
                                   _queue(index), [WebhookNotifier(index.settings)])
                   for _ in range(3)]
    threads = [threading.Thread(target=d.run_pass) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    root.dispatch_alerts()  # whatever a claim left for later
    assert len(ids(me.alert_matches(alert.id, k=100))) == 30
    got = receiver.wait_for(30)
    time.sleep(0.3)
    assert len(receiver.requests) == 30
    assert len({r["delivery"] for r in got}) == 30 and all(r["verified"] for r in got)


def _queue(index: Index):  # type: ignore[no-untyped-def]
    from rag.alerts.delivery import DeliveryQueue

    return DeliveryQueue(index.redis, index.namespace)


# -- webhook delivery -----------------------------------------------------------------------------


def test_webhook_is_signed_and_retried_with_backoff(
        root: Services, request: pytest.FixtureRequest, receiver: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    me = tenant(root, request)
    monkeypatch.setattr(root.settings, "alert_retry_backoff", 10.0)
    alert = me.add_alert("снегопад", rule="words", webhook=receiver.url)
    receiver.secret = alert.secret
    receiver.fail_next(1, 503)
    receiver.fail_next(1, 0)  # then a dropped connection
    me.ingest([post(NEWS, 1, 1, "Снегопад парализовал движение.")])
    queue = _queue(root.index)
    key, delivery = f"{queue.prefix}:queue:webhook", f"webhook:{alert.id}:{me.tenant}/tg:2003:1"

    first = root.dispatch_alerts()
    assert (first.matches, first.retrying, first.delivered) == (1, 1, 0)
    assert 5 < queue._r.zscore(key, delivery) - time.time() <= 10  # backoff · 2^0
    assert root.dispatch_alerts().retrying == 0  # not due yet
    queue._r.zadd(key, {delivery: 0})  # the time has come
    assert root.dispatch_alerts().retrying == 1  # the dropped connection
    assert 15 < queue._r.zscore(key, delivery) - time.time() <= 20  # backoff · 2^1
    queue._r.zadd(key, {delivery: 0})
    assert root.dispatch_alerts().delivered == 1
    (hook,) = receiver.requests
    assert receiver.attempts == 3 and hook["verified"] and hook["delivery"] == delivery
    assert hook["body"]["attempt"] == 3 and hook["body"]["alert"] == alert.to_dict()
    assert hook["body"]["match"]["snippet"] == "Снегопад парализовал движение."


def test_undeliverable_webhooks_become_dead_letters_and_can_be_retried(
        root: Services, request: pytest.FixtureRequest, receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("гололёд", rule="words", webhook=receiver.url)
    receiver.secret = alert.secret
    receiver.fail_next(3, 500)  # TGRAG_ALERT_MAX_ATTEMPTS = 3 here
    me.ingest([post(NEWS, 1, 1, "Гололед на дорогах: будьте осторожны.")])
    report = root.dispatch_alerts()
    for _ in range(40):
        if report.dead:
            break
        time.sleep(0.05)
        report = root.dispatch_alerts()
    assert report.dead == 1 and receiver.requests == []
    (dead,) = me.alert_dead_letters(alert.id)
    assert dead.attempts == 3 and dead.error == "webhook 127.0.0.1 answered HTTP 500"
    assert dead.to_dict()["post"] == f"{me.tenant}/tg:2003:1"
    assert me.alert_status(alert.id) == {"matches": 1, "dead_letters": 1}
    assert me.retry_alert_deliveries(alert.id) == 1 and me.alert_dead_letters(alert.id) == []
    assert root.dispatch_alerts().delivered == 1 and len(receiver.requests) == 1


def test_a_removed_alert_is_not_delivered(root: Services, request: pytest.FixtureRequest,
                                          receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("туман", rule="words", webhook=receiver.url)
    me.ingest([post(NEWS, 1, 1, "Туман над городом.")])
    dispatcher = root.alert_dispatcher()
    report = dispatcher.run_pass(deliver=False)
    assert report.matches == 1
    me.remove_alert(alert.id)
    assert root.dispatch_alerts().delivered == 0 and receiver.attempts == 0
    assert _queue(root.index).pending("webhook") == 0
    with pytest.raises(NotFoundError):
        me.alert_matches(alert.id)


# -- other channels: the bot's notifier -----------------------------------------------------------


class FakeBot:
    """What the Telegram bot implements: a notifier of the ``bot`` channel."""

    channel = "bot"

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.fail = 0
        self.connected = True

    def available(self) -> bool:
        return self.connected

    def send(self, notification: Notification) -> None:
        if self.fail:
            self.fail -= 1
            raise DeliveryFailed("Telegram said: chat not found")
        self.sent.append(notification)


def test_bot_alerts_are_delivered_by_the_bots_notifier_only(
        root: Services, request: pytest.FixtureRequest, receiver: WebhookReceiver) -> None:
    me = tenant(root, request)
    alert = me.add_alert("наводнение", rule="words", chat_id=4242)
    assert alert.channels == ["bot"]
    me.ingest([post(NEWS, 1, 1, "Наводнение в области: эвакуация.")])
    assert root.dispatch_alerts().delivered == 0  # this process has no bot: the queue waits
    queue = _queue(root.index)
    assert queue.pending("bot") == 1
    bot = FakeBot()
    bot.fail, bot.connected = 1, False
    root.add_notifier(bot)
    try:
        assert root.dispatch_alerts().retrying == 0  # not connected here: left alone
        assert queue.pending("bot") == 1
        bot.connected = True
        assert root.dispatch_alerts().retrying == 1
        time.sleep(0.06)
        assert root.dispatch_alerts().delivered == 1
    finally:
        root.alert_dispatcher().notifiers.remove(bot)
        root._shared.notifiers.remove(bot)
    (note,) = bot.sent
    assert note.alert.chat_id == 4242 and note.attempt == 2
    assert note.text().startswith("🔔 «наводнение»\nНовости · 2024-05-01 10:00 UTC")
    assert receiver.attempts == 0 and queue.pending("bot") == 0


def test_alert_test_shows_matches_and_near_misses(root: Services,
                                                  request: pytest.FixtureRequest) -> None:
    me = tenant(root, request)
    me.ingest([replace(p, tenant=me.tenant) for p in corpus() if p.message_id <= 8])
    trial = me.test_alert("повышение ключевой ставки", threshold=0.85, mode="dense", days=60)
    data = trial.to_dict()
    assert data["alert"]["rule"] == "semantic" and "id" not in data["alert"]
    assert data["checked"] >= len(data["results"]) + len(data["near_misses"])
    assert all(h["score"] >= 0.85 for h in data["results"])
    assert all(0.82 <= h["score"] < 0.85 for h in data["near_misses"])
    assert "tg:1001:1" in [h["id"].split("/")[-1] for h in data["results"]]
    dates = [h["date"] for h in data["results"]]
    assert dates == sorted(dates, reverse=True)
    words = me.test_alert("ставки", rule="words", days=60)
    assert {h.id.split("/")[-1] for h in words.matches} == {"tg:1001:1", "tg:1001:5"}
    assert words.near == [] and root.alerts() == [] and me.alerts() == []
