"""Group chats: windows of a thread, senders and replies, opt-in, private chats refused, live
updates and mentions — through the real ``TelegramClient`` over the fake Telegram
(``tests/fake_telegram.py``: ``FakeGroup`` supergroups, ``FakeSmallGroup`` small groups)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from telethon import functions, types

from ingest.chat_windows import ChatMessage, WindowRule, window_post, windows
from ingest.documents import Post
from ingest.pipeline import PostPipeline
from ingest.telegram.live import LiveSync, register_live_handlers
from ingest.telegram.state import AccountIdentity, ChannelRegistry
from ingest.telegram.sync import ChannelSync
from rag import ids
from rag.index import Index
from rag.mentions import MentionMatcher, MentionRule
from rag.search import PostSearcher
from rag.settings import Settings
from tests.conftest import LOCAL
from tests.fake_telegram import (
    NOW,
    FakeChannel,
    FakeGroup,
    FakeSmallGroup,
    FakeTelegram,
    dispatch,
    new_client,
    run,
)
from tests.lock_holder import LockHolder

GROUP_ID = 1700000001
RULE = WindowRule(gap=600, max_chars=300)


def msg(mid: int, minute: float, text: str, *, sender: int = 1, name: str = "Иван",
        thread: int = 0, reply_to: int | None = None) -> ChatMessage:
    return ChatMessage(message_id=mid, date=1_700_000_000 + int(minute * 60), text=text,
                       sender_id=sender, sender_name=name, thread_id=thread, reply_to=reply_to)


def doc_ids(index: Any) -> set[str]:
    return set(index.docstore.get_all_document_hashes().values())


def metadata(index: Any, doc_id: str) -> dict[str, Any]:
    doc = index.docstore.get_document(doc_id)
    assert doc is not None, doc_id
    return dict(doc.metadata)


def histories(fake: FakeTelegram) -> list[Any]:
    return [r for r in fake.requests if isinstance(r, functions.messages.GetHistoryRequest)]


# -- the window rule ------------------------------------------------------------------------------


def test_windows_split_on_gap_thread_and_size() -> None:
    messages = [
        msg(1, 0, "Кто идёт на митап?"),
        msg(2, 3, "Я иду", sender=2, name="Пётр", reply_to=1),
        msg(3, 9, "И я"),                          # 6 minutes after 2: same window
        msg(4, 30, "Напоминаю: начало в 19:00"),  # 21 minutes: a new window
        msg(5, 31, "Вопрос по докладу", thread=4),  # another thread: a new window
        msg(6, 32, "x" * 290),                     # too long to join: its own window
        msg(7, 33, "ок"),
    ]
    got = [[m.message_id for m in w] for w in windows(messages, RULE)]
    assert got == [[1, 2, 3], [4], [5], [6], [7]]
    # Re-reading from any window's first message rebuilds the same windows after it.
    for k, first in enumerate([1, 4, 5, 6, 7]):
        tail = [m for m in messages if m.message_id >= first]
        assert [[m.message_id for m in w] for w in windows(tail, RULE)] == got[k:]


def test_window_post_ids_text_senders_and_spans() -> None:
    window = [msg(10, 0, "Привет всем"), msg(11, 1, "Привет!\nКак дела?", sender=2, name="Пётр",
                                               reply_to=10)]
    post = window_post(GROUP_ID, "chatname", "Чат", window)
    assert post.doc_id == ids.window_doc_id(GROUP_ID, 10) == f"tg:{GROUP_ID}:10"
    assert post.text == "Иван: Привет всем\nПётр: Привет!\nКак дела?"
    assert post.link == "https://t.me/chatname/10"
    meta = post.to_document().metadata
    assert (meta["chat_type"], meta["sender_id"], meta["sender_name"], meta["reply_to"]) == (
        "group", 1, "Иван", None)
    spans = [(p["id"], p["sender_id"], post.text[p["start"]:p["end"]]) for p in meta["window"]]
    assert spans == [(10, 1, "Привет всем"), (11, 2, "Привет!\nКак дела?")]
    # The senders' names are in the text; none of the group metadata is embedded.
    from llama_index.core.schema import MetadataMode

    assert post.to_document().get_content(MetadataMode.EMBED) == post.text


def test_channel_posts_keep_their_old_hash() -> None:
    """``chat_type="channel"`` is new metadata; the hash must not change for it (a changed hash
    would re-embed every post indexed before).  The value was computed at the commit before."""
    post = Post(channel_id=1000724666, message_id=5, date=1700000000, text="Курс рубля стабилен",
                channel="dengi", channel_title="Деньги", forwarded_from="Другой канал",
                grouped_id=7, links=["https://example.com/a"], views=10, reactions={"👍": 3},
                edited=1700000100)
    doc = post.to_document()
    assert doc.metadata["chat_type"] == "channel"
    assert doc.hash == "dba323ffced8f1012f7edd56b91bea72daab2887834bd2cb510d11b91cb6564d"
    tenant = Post(channel_id=1000724666, message_id=5, date=1700000000,
                  text="Курс рубля стабилен", tenant="acme")
    assert tenant.to_document().hash == (
        "f265dde12eba5d536ef091661592b568434948e47057bb7f3e613a29136528ac")


# -- syncing a supergroup -------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def people(fake: FakeTelegram) -> dict[str, types.User]:
    return {"ivan": fake.add_person(501, "Иван", username="ivan"),
            "petr": fake.add_person(502, "Пётр")}


@pytest.fixture
def group(fake: FakeTelegram, people: dict[str, types.User]) -> FakeGroup:
    g = fake.add(FakeGroup(GROUP_ID, "devchat", "Разработчики"))
    ivan, petr = people["ivan"], people["petr"]
    g.say(ivan, "Кто-нибудь пробовал новый релиз библиотеки?", age=timedelta(hours=5))
    g.say(petr, "Да, обновились вчера", reply_to=1, age=timedelta(hours=5) - timedelta(minutes=2))
    g.service()
    g.say(ivan, "Миграция базы прошла без проблем?", age=timedelta(hours=5) - timedelta(minutes=4))
    g.say(petr, "Встречаемся в пятницу в офисе", age=timedelta(hours=2))
    return g


@pytest.fixture
def pipeline(index: Any) -> PostPipeline:
    return PostPipeline(index, batch_size=2)


def test_supergroup_is_indexed_in_windows_with_senders(index: Any, pipeline: PostPipeline,
                                                       fake: FakeTelegram,
                                                       group: FakeGroup) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        return await sync.sync_channel("devchat"), sync.registry.require("devchat")

    result, state = run(main())
    assert (result.status, result.new, result.skipped) == ("ok", 2, 1)
    assert state.chat_type == "group" and state.group and state.last_message_id == 5
    assert doc_ids(index) == {f"tg:{GROUP_ID}:1", f"tg:{GROUP_ID}:5"}
    first = index.post_text(f"tg:{GROUP_ID}:1")
    assert first == ("Иван: Кто-нибудь пробовал новый релиз библиотеки?\n"
                     "Пётр: Да, обновились вчера\nИван: Миграция базы прошла без проблем?")
    meta = metadata(index, f"tg:{GROUP_ID}:1")
    assert (meta["chat_type"], meta["sender_id"], meta["sender_name"]) == ("group", 501, "Иван")
    assert [(p["id"], p["sender_id"]) for p in meta["window"]] == [(1, 501), (2, 502), (4, 501)]
    assert meta["link"] == "https://t.me/devchat/1"
    assert index.catalog.post_count(GROUP_ID) == 2
    hits = PostSearcher(index).search("миграция базы данных", k=3)
    assert hits[0].id == f"tg:{GROUP_ID}:1"


def test_group_needs_opt_in(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                            group: FakeGroup) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat")
        failed = await sync.sync_channel("devchat")
        sync.registry.add("@devchat", group=True)  # the opt-in, also for a followed chat
        return failed, await sync.sync_channel("devchat")

    failed, ok = run(main())
    assert failed.status == "failed" and "group chat" in (failed.error or "")
    assert ok.status == "ok" and ok.new == 2


@pytest.mark.parametrize("ref", ["@ivan", "501"])
def test_private_chat_is_never_read(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                    people: dict[str, types.User], ref: str) -> None:
    fake.private_chats.append(501)  # the account talks to Ivan: the chat is in its dialogs

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add(ref, group=True)  # named explicitly, even opted in as a group
        return await sync.sync_channel(ref)

    result = run(main())
    assert result.status == "failed" and "private chat" in (result.error or "")
    assert histories(fake) == [] and doc_ids(index) == set()


def test_new_messages_extend_the_open_window(index: Any, pipeline: PostPipeline,
                                             fake: FakeTelegram, group: FakeGroup,
                                             people: dict[str, types.User]) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        await sync.sync_channel("devchat")
        group.say(people["ivan"], "Я приду к обеду", age=timedelta(hours=2) - timedelta(minutes=1))
        grown = await sync.sync_channel("devchat", rescan=False)
        group.say(people["petr"], "Отлично", age=timedelta(minutes=1))  # long after: new window
        fresh = await sync.sync_channel("devchat", rescan=False)
        return grown, fresh

    grown, fresh = run(main())
    assert (grown.new, grown.updated) == (0, 1)
    assert index.post_text(f"tg:{GROUP_ID}:5") == (
        "Пётр: Встречаемся в пятницу в офисе\nИван: Я приду к обеду")
    assert (fresh.new, fresh.updated) == (1, 0)
    assert doc_ids(index) == {f"tg:{GROUP_ID}:{i}" for i in (1, 5, 7)}


def test_edit_and_delete_inside_windows(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                        group: FakeGroup) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        await sync.sync_channel("devchat")
        group.edit(2, "Да, обновились вчера вечером")
        del group.messages[1]  # the first message of window 1: the window becomes window 2
        return await sync.sync_channel("devchat")

    result = run(main())
    assert result.status == "ok" and result.deleted == 1 and result.new == 1
    assert doc_ids(index) == {f"tg:{GROUP_ID}:2", f"tg:{GROUP_ID}:5"}
    assert index.post_text(f"tg:{GROUP_ID}:2") == (
        "Пётр: Да, обновились вчера вечером\nИван: Миграция базы прошла без проблем?")
    assert index.store.chunks_of(f"tg:{GROUP_ID}:1") == []
    assert sorted(index.catalog.post_ids(GROUP_ID)) == [2, 5]


def test_forum_topics_are_threads(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                  people: dict[str, types.User]) -> None:
    forum = fake.add(FakeGroup(1700000002, "forum", "Форум", forum=True))
    ivan, petr = people["ivan"], people["petr"]
    forum.say(ivan, "Тема: релизы", age=timedelta(minutes=30))              # 1: topic 1 opens
    forum.say(petr, "Тема: офис", age=timedelta(minutes=29))                # 2: topic 2 opens
    forum.say(ivan, "Релиз 2.0 вышел", topic=1, age=timedelta(minutes=28))  # 3
    forum.say(petr, "Поздравляю", topic=1, reply_to=3, age=timedelta(minutes=27))  # 4
    forum.say(ivan, "Кондиционер сломался", topic=2, age=timedelta(minutes=26))  # 5

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@forum", group=True)
        return await sync.sync_channel("forum")

    assert run(main()).status == "ok"
    assert sorted(index.catalog.post_ids(1700000002)) == [1, 3, 5]
    meta = metadata(index, "tg:1700000002:3")
    assert meta["thread_id"] == 1 and [p["id"] for p in meta["window"]] == [3, 4]
    assert meta["reply_to"] is None  # in the topic, replying to nothing in it
    assert metadata(index, "tg:1700000002:5")["thread_id"] == 2


def test_small_group_by_id(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                           people: dict[str, types.User]) -> None:
    chat = fake.add(FakeSmallGroup(4321, "Семья"))
    chat.say(people["ivan"], "Купить хлеба", age=timedelta(minutes=20))
    chat.say(people["petr"], "И молока", age=timedelta(minutes=19))

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("4321", group=True)  # a small group has no username
        return await sync.sync_channel("4321")

    result = run(main())
    assert result.status == "ok" and result.new == 1
    assert doc_ids(index) == {"tg:4321:1"}
    assert index.post_text("tg:4321:1") == "Иван: Купить хлеба\nПётр: И молока"
    assert metadata(index, "tg:4321:1")["link"] == "https://t.me/c/4321/1"


# -- live updates ---------------------------------------------------------------------------------


async def synced_live(index: Any, fake: FakeTelegram, pipeline: PostPipeline,
                      events: list[tuple[str, dict[str, Any]]]) -> tuple[Any, LiveSync]:
    """A client with devchat followed as a group and synced, and live handlers whose events
    (name, data) go into ``events``."""
    client = new_client(fake)
    sync = ChannelSync(index, client, pipeline=pipeline,
                       listener=lambda ref, ev, data: events.append((ev, data)))
    sync.registry.add("@devchat", group=True)
    await sync.sync_channel("devchat")
    return client, register_live_handlers(client, sync)


def test_live_updates_in_a_supergroup(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                      group: FakeGroup, people: dict[str, types.User]) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def main() -> None:
        client, live = await synced_live(index, fake, pipeline, events)

        new = group.say(people["ivan"], "Я приду к обеду",
                        age=timedelta(hours=2) - timedelta(minutes=1))
        await dispatch(client, group, types.UpdateNewChannelMessage(new, pts=1, pts_count=1))
        await live.drain()

        edited = group.edit(2, "Да, обновились сегодня утром")
        await dispatch(client, group, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()

        del group.messages[5]  # window 5 loses its first message: it is window 6 now
        await dispatch(client, group, types.UpdateDeleteChannelMessages(
            channel_id=group.id, messages=[5], pts=3, pts_count=1))
        await live.drain()

    run(main())
    assert doc_ids(index) == {f"tg:{GROUP_ID}:1", f"tg:{GROUP_ID}:6"}
    assert "сегодня утром" in (index.post_text(f"tg:{GROUP_ID}:1") or "")
    assert index.post_text(f"tg:{GROUP_ID}:6") == "Иван: Я приду к обеду"
    live_events = [d for e, d in events if e == "live"]
    assert {"edited": 2, "reindexed": True} in live_events and {"deleted": [5]} in live_events


def test_live_group_edit_and_deletion_wait_for_the_chats_lock(
    quick_index: Index, fake: FakeTelegram, group: FakeGroup, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An edit of an older message is outside the next sync's re-scan: while another worker
    syncs the chat, the live update waits for its lock rather than being dropped."""
    index = quick_index
    events: list[tuple[str, dict[str, Any]]] = []
    first, second = f"tg:{GROUP_ID}:1", f"tg:{GROUP_ID}:5"
    # At each retry: window 1's text, and whether window 5 is indexed.
    other = LockHolder(index, "devchat",
                       lambda: (index.post_text(first), second in doc_ids(index)))

    async def main() -> None:
        client, live = await synced_live(index, fake, PostPipeline(index, batch_size=2), events)
        before = index.post_text(first)
        other.spy(monkeypatch)

        # Another worker syncs devchat for longer than the retries last: the edit is given up.
        other.holds()
        edited = group.edit(2, "Да, обновились сегодня утром")
        await dispatch(client, group, types.UpdateEditChannelMessage(edited, pts=1, pts_count=1))
        await live.drain()
        assert other.retries == [(before, True)] * 5
        assert index.post_text(first) == before
        other.lock.release()

        # Its sync ends during the retries: the edit is applied then, not before.
        other.holds(release_at=2)
        edited = group.edit(2, "Да, обновились сегодня вечером")
        await dispatch(client, group, types.UpdateEditChannelMessage(edited, pts=2, pts_count=1))
        await live.drain()
        assert other.retries == [(before, True)] * 2
        after = index.post_text(first)
        assert "сегодня вечером" in (after or "")

        # A deletion waits the same way: given up while the lock is held throughout ...
        other.holds()
        del group.messages[5]
        deletion = types.UpdateDeleteChannelMessages(channel_id=group.id, messages=[5], pts=3,
                                                     pts_count=1)
        await dispatch(client, group, deletion)
        await live.drain()
        assert other.retries == [(after, True)] * 5
        assert second in doc_ids(index)
        other.lock.release()

        # ... and applied at the retry after the lock's release.
        other.holds(release_at=1)
        deletion.pts = 4
        await dispatch(client, group, deletion)
        await live.drain()
        assert other.retries == [(after, True)]

    with caplog.at_level(logging.WARNING, logger="tgrag.live"):
        run(main())
    assert "live edit of devchat/2 not applied (busy)" in caplog.text
    assert "live deletion of devchat/[5] not applied (busy)" in caplog.text
    assert doc_ids(index) == {first}
    assert [d for e, d in events if e == "live"] == [{"edited": 2, "reindexed": True},
                                                   {"deleted": [5]}]
    assert index.redis.get(other.lock.key) is None  # every lock released


def test_live_ignores_private_chats(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                    people: dict[str, types.User]) -> None:
    """A private message — even from a person whose id is registered — is never read."""
    ivan = people["ivan"]

    async def main() -> None:
        client = new_client(fake)
        sync = ChannelSync(index, client, pipeline=pipeline)
        state = sync.registry.add("501", group=True)
        state.channel_id, state.chat_type = 501, "group"  # as if it had resolved (it cannot)
        sync.registry.save(state)
        live = register_live_handlers(client, sync)
        private = types.Message(id=1, peer_id=types.PeerUser(ivan.id),
                                from_id=types.PeerUser(ivan.id), date=NOW, message="привет")
        update = types.UpdateNewMessage(private, pts=1, pts_count=1)
        update._entities = {ivan.id: ivan}
        await client._dispatch_update(update)
        await live.drain()

    run(main())
    assert histories(fake) == [] and doc_ids(index) == set()


def test_live_small_group_new_message(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                      people: dict[str, types.User]) -> None:
    chat = fake.add(FakeSmallGroup(4321, "Семья"))
    chat.say(people["ivan"], "Купить хлеба", age=timedelta(minutes=20))

    async def main() -> None:
        client = new_client(fake)
        sync = ChannelSync(index, client, pipeline=pipeline)
        sync.registry.add("4321", group=True)
        await sync.sync_channel("4321")
        live = register_live_handlers(client, sync)
        new = chat.say(people["petr"], "И молока", age=timedelta(minutes=19))
        await dispatch(client, chat, types.UpdateNewMessage(new, pts=1, pts_count=1))
        await live.drain()

    run(main())
    assert index.post_text("tg:4321:1") == "Иван: Купить хлеба\nПётр: И молока"


# -- mentions -------------------------------------------------------------------------------------


def test_mention_rule_matching() -> None:
    rule = MentionRule.build(usernames=["@Tester"], user_ids=[4242],
                             keywords=["релиз", "ключевая ставка", "и"])
    window = [msg(1, 0, "@tester глянь релизы", sender=7, name="Ира"),
              msg(2, 1, "@tester_bot не ты", sender=8, name="Ян"),
              msg(3, 2, "Ключевую ставку подняли", sender=7, name="Ира"),
              msg(4, 3, "мой релиз вышел", sender=4242, name="Я"),  # the account's own
              ChatMessage(message_id=5, date=1_700_000_300, text="спасибо, Тест", sender_id=9,
                          sender_name="Ли", mentioned_ids=(4242,))]
    post = window_post(GROUP_ID, "", "Чат", window)
    meta = post.to_document().metadata
    found = MentionMatcher(rule)(post.doc_id, post.text, meta)
    got = [(m.message_id, m.kind, m.term, post.text[m.start:m.end]) for m in found]
    assert got == [(1, "username", "@tester", "@tester"), (1, "keyword", "релиз", "релизы"),
                   (3, "keyword", "ключевая ставка", "Ключевую ставку"),
                   (5, "user_id", "4242", "спасибо, Тест")]
    assert [k for k, _ in rule.phrases] == ["релиз", "ключевая ставка"]  # "и" is a stopword
    channel = Post(channel_id=1, message_id=1, date=1, text="@tester релиз").to_document()
    assert MentionMatcher(rule)("tg:1:1", channel.text, channel.metadata) == []


def test_mentions_of_a_synced_group(index: Any, pipeline: PostPipeline, fake: FakeTelegram,
                                    group: FakeGroup, people: dict[str, types.User]) -> None:
    """What the alert checker sees: the committed window from the docstore, the account's
    identity recorded by the sync, the matcher per committed document."""
    fake.me = types.User(id=4242, is_self=True, access_hash=1, first_name="Тест",
                         username="tester")
    group.say(people["petr"], "@tester посмотри PR про релиз", age=timedelta(minutes=5))

    async def main() -> None:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        await sync.sync_channel("devchat")

    run(main())
    account = AccountIdentity(index.redis, index.namespace).load()
    assert account is not None and (account.user_id, account.username) == (4242, "tester")
    rule = MentionRule.build(account.usernames, [account.user_id], ["миграция"])
    matcher = MentionMatcher(rule)
    found = {}
    for doc_id in sorted(doc_ids(index)):
        doc = index.docstore.get_document(doc_id)
        found[doc_id] = [(m.message_id, m.term) for m in matcher(doc_id, doc.text, doc.metadata)]
    assert found == {f"tg:{GROUP_ID}:1": [(4, "миграция")], f"tg:{GROUP_ID}:5": [],
                     f"tg:{GROUP_ID}:6": [(6, "@tester")]}


def test_channels_are_unchanged_by_groups(index: Any, pipeline: PostPipeline,
                                          fake: FakeTelegram) -> None:
    news = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи")

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        ChannelRegistry(index.redis, index.namespace).add("technews", group=True)
        return await sync.sync_channel("technews")

    result = run(main())
    assert result.status == "ok" and result.new == 1
    meta = metadata(index, "tg:1500000001:1")
    assert meta["chat_type"] == "channel" and "sender_id" not in meta


def test_window_settings_are_read(settings: Settings) -> None:
    rule = WindowRule.from_settings(settings.model_copy(update={"group_window_minutes": 2,
                                                                 "group_window_chars": 500}))
    assert (rule.gap, rule.max_chars) == (120, 500)


def test_http_follow_a_group(index: Any) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(index.settings, index=index), client=LOCAL) as http:
        added = http.post("/channels", json={"channel": "@devchat", "group": True})
        assert added.status_code == 201 and added.json()["group"] is True
        plain = http.post("/channels", json={"channel": "@technews"})
        assert plain.status_code == 201 and plain.json()["group"] is False
        listed = {c["ref"]: c["group"] for c in http.get("/channels").json()["channels"]}
        assert listed == {"devchat": True, "technews": False}


def test_cli_sync_of_a_group(settings: Settings, fake: FakeTelegram, group: FakeGroup,
                             people: dict[str, types.User],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import app
    from ingest.telegram import connector
    from ingest.telegram.reader import make_client
    from rag.index import Index

    for key, value in {"TGRAG_DATA_DIR": str(settings.data_dir), "TGRAG_TG_API_ID": "1",
                       "TGRAG_TG_API_HASH": "x",
                       "TGRAG_TG_SESSION": fake.login_session()}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(connector, "new_client",
                        lambda s, **options: fake.attach(make_client(s, **options)))
    runner = CliRunner()
    refused = runner.invoke(app, ["sync", "-c", "@devchat"])  # followed, but not as a group
    assert refused.exit_code == 1 and "is a group chat" in refused.stderr
    assert "channels add --group" in refused.stderr
    assert runner.invoke(app, ["channels", "add", "--group", "@devchat"]).exit_code == 0
    synced = runner.invoke(app, ["sync"])
    assert synced.exit_code == 0 and "devchat: 2 new" in synced.stdout, synced.output
    private = runner.invoke(app, ["sync", "-c", "@ivan"])
    assert private.exit_code == 1 and "never reads private chats" in private.stderr
    with Index.open(settings) as index:
        assert doc_ids(index) == {f"tg:{GROUP_ID}:1", f"tg:{GROUP_ID}:5"}


def test_since_and_backfill_reread_from_a_window_boundary(index: Any, pipeline: PostPipeline,
                                                          fake: FakeTelegram,
                                                          group: FakeGroup) -> None:
    """A read that starts mid-window (the last N messages, or a date) starts at the window
    before instead, so it rebuilds the same windows rather than cutting one in two; a read
    reaching further back than the windows did rebuilds them and deletes the ones it replaced."""
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        first = await sync.sync_channel("devchat", backfill=2)  # messages 4 and 5 only
        ids_then = doc_ids(index)
        deeper = await sync.sync_channel("devchat", since=group.messages[1].date, rescan=False)
        backfill = await sync.sync_channel("devchat", backfill=2, rescan=False)
        since = await sync.sync_channel("devchat", since=group.messages[4].date, rescan=False)
        return first, ids_then, deeper, backfill, since

    first, ids_then, deeper, backfill, since = run(main())
    assert first.new == 2 and ids_then == {f"tg:{GROUP_ID}:4", f"tg:{GROUP_ID}:5"}
    # From message 1, message 4 joins window 1: window 4 is replaced.
    assert (deeper.new, deeper.unchanged, deeper.deleted) == (1, 1, 1)
    assert doc_ids(index) == {f"tg:{GROUP_ID}:1", f"tg:{GROUP_ID}:5"}
    assert sorted(index.catalog.post_ids(GROUP_ID)) == [1, 5]
    for again in (backfill, since):  # both start inside window 1: read from its first message
        assert (again.new, again.updated, again.unchanged, again.deleted) == (0, 0, 2, 0)


def test_an_edit_rereads_only_until_the_old_windows(index: Any, pipeline: PostPipeline,
                                                    fake: FakeTelegram, group: FakeGroup) -> None:
    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=pipeline)
        sync.registry.add("@devchat", group=True)
        await sync.sync_channel("devchat")
        edited = group.edit(2, "Да, обновились вчера вечером")
        return await sync.resync_group("devchat", [2], edited.date.timestamp())

    result = run(main())
    # Window 1 re-embedded; window 5 starts where the old partition does: not even rebuilt.
    assert (result.status, result.updated, result.unchanged, result.deleted) == ("ok", 1, 0, 0)
    assert "вечером" in (index.post_text(f"tg:{GROUP_ID}:1") or "")
