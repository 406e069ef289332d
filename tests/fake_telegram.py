"""A fake Telegram for tests: the real ``telethon.TelegramClient`` over a fake MTProto transport.

:meth:`FakeTelegram.attach` replaces a client's ``_sender`` (the ``MTProtoSender``) with a
:class:`FakeSender`.  Every request the client makes goes ``client(request)`` → ``_call`` →
``self._sender.send(request)``, which must return an awaitable future: the fake unwraps the
connection wrappers (``InvokeWithLayer``, ``InitConnection``, ``InvokeWithoutUpdates``) and
answers with real TL objects or fails the future with a real RPC error or ``ConnectionError``.

* The server side (:class:`FakeTelegram`) holds the channels, the accounts and which auth keys are
  logged in; one server may serve many clients (a login, then a sync with the saved session).
* Channels: ``contacts.ResolvedPeer``, ``messages.ChannelMessages`` with real ``types.Message``
  objects and entities; paging follows Telegram's ``messages.getHistory`` (``offset_id``,
  ``offset_date``, ``add_offset``, ``limit``; newest first), which ``iter_messages(reverse=True)``
  relies on; ``fail_next`` fails chosen requests once (``FloodWaitError``, ``ConnectionError``).
* Login: ``auth.sendCode``, ``auth.signIn`` (``PHONE_CODE_INVALID``, ``SESSION_PASSWORD_NEEDED``)
  and two-step verification for real: ``account.getPassword`` answers SRP parameters over
  Telegram's 2048-bit prime, and ``auth.checkPassword`` verifies the client's SRP proof (M1) the
  way the server does, so a wrong password fails inside the real protocol.
* ``require_auth=True`` makes every other request fail with ``AUTH_KEY_UNREGISTERED`` unless the
  connection's auth key has logged in (``login_session`` makes such a session string).
* ``client.connect()`` works: the fake "handshake" makes an auth key when the session has none,
  the client's init request is answered, and the client's own update loop and keep-alive start.
  :meth:`FakeSender.push` delivers updates the way the real sender does (into the client's update
  queue), :meth:`FakeSender.drop` ends the connection like a network loss.  ``script`` is started
  on each connect, inside the command's event loop, to act as Telegram while a command runs.
* Without ``connect()`` (unit tests), ``is_connected()`` is already true and ``client._loop``
  stays ``None``, so Telethon's "event loop must not change" check is not armed.
* Bots (:class:`FakeBot`, ``add_bot``): ``auth.importBotAuthorization`` logs a connection in with
  the bot's token (a revoked token is ``ACCESS_TOKEN_EXPIRED``, and revoking unregisters the keys
  that used it); people (``add_person``) write to the bot in private chats (``UpdateNewMessage``
  with the account-wide ``pts`` Telegram keeps per bot, the person in ``users`` with their
  ``lang_code``; forwards of channel posts carry ``fwd_from`` with the channel peer), press inline
  buttons (``UpdateBotCallbackQuery``; only buttons the message really has, unless forged) and type
  inline queries (``UpdateBotInlineQuery``).  The bot's ``messages.sendMessage`` /
  ``editMessage`` are checked as Telegram checks them (4,096 UTF-16 units after entity parsing,
  entity bounds, 64-byte button data, ``MESSAGE_NOT_MODIFIED``) and kept per chat, with every
  version, so a test reads what the user saw; ``flood_edits`` answers the next edits with
  ``FLOOD_WAIT_X`` and ``min_edit_interval`` does so for edits that come too fast.  Updates sent
  while the bot is offline wait in its update log and come back through ``updates.getDifference``,
  as Telegram keeps a bot's updates for a while.  A person in ``FakeBot.blocked`` has blocked the
  bot: what it sends them is refused with ``USER_IS_BLOCKED``; ``flood_sends`` answers the next
  sent messages with ``FLOOD_WAIT_X``.  ``refuse_connections`` makes ``connect()`` fail like a
  network that is down.
* Group chats: :class:`FakeGroup` is a supergroup (a ``Channel`` with ``megagroup``; ``forum``
  for topics), :class:`FakeSmallGroup` a small group (``types.Chat``, reached by id through the
  account's dialogs, ``messages.getHistory`` answering ``messagesSlice``).  ``say`` writes as a
  person (``add_person``) with an optional reply and topic; history replies carry the senders in
  ``users``, as Telegram's do, so the real client resolves ``message.sender``.  People resolve
  by username too (a private chat, which tgrag must refuse), and ``messages.getDialogs`` lists
  the channels, groups and people the account talks to.  ``FakeTelegram.me`` is the account
  ``users.getUsers([self])`` answers when no login is required.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from telethon import TelegramClient, errors, functions, types, utils
from telethon import password as pwd
from telethon.crypto import AuthKey
from telethon.helpers import add_surrogate
from telethon.sessions import StringSession

NOW = datetime.now(UTC).replace(microsecond=0)
ME = types.User(id=4242, is_self=True, access_hash=1, first_name="me")
# Telegram's 2048-bit safe prime (generator 3), as telethon.password knows it.
PRIME = bytes.fromhex(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b"
)
WRAPPERS = (functions.InvokeWithLayerRequest, functions.InitConnectionRequest,
            functions.InvokeWithoutUpdatesRequest)


class FakeChannel:
    def __init__(self, channel_id: int, username: str, title: str, private: bool = False):
        self.id, self.username, self.title, self.private = channel_id, username, title, private
        self.access_hash = channel_id * 7
        self.messages: dict[int, Any] = {}
        self.next_id = 1
        self.pts = 1

    @property
    def tl(self) -> types.Channel:
        return types.Channel(
            id=self.id, title=self.title, photo=types.ChatPhotoEmpty(), date=NOW,
            broadcast=True, access_hash=self.access_hash, username=self.username,
        )

    def post(self, text: str, *, entities: list[Any] | None = None, grouped_id: int | None = None,
             age: timedelta = timedelta(hours=1), views: int = 10, **kw: Any) -> types.Message:
        mid = self.next_id
        self.next_id += 1
        msg = types.Message(
            id=mid, peer_id=types.PeerChannel(self.id), date=NOW - age, message=text,
            entities=entities, grouped_id=grouped_id, views=views, forwards=0, post=True, **kw,
        )
        self.messages[mid] = msg
        return msg

    def service(self) -> types.MessageService:
        mid = self.next_id
        self.next_id += 1
        msg = types.MessageService(id=mid, peer_id=types.PeerChannel(self.id), date=NOW,
                                   action=types.MessageActionPinMessage())
        self.messages[mid] = msg
        return msg

    def edit(self, mid: int, text: str) -> types.Message:
        old = self.messages[mid]
        msg = types.Message(id=mid, peer_id=old.peer_id, date=old.date, message=text,
                            grouped_id=old.grouped_id, views=old.views, forwards=0, post=True,
                            edit_date=NOW)
        self.messages[mid] = msg
        return msg

    def users(self) -> list[types.User]:
        """The senders of the messages (a channel's posts have none)."""
        return []

    @property
    def peer(self) -> Any:
        return types.PeerChannel(self.id)

    def dialog(self) -> types.Dialog:
        return types.Dialog(peer=self.peer, top_message=max(self.messages, default=0),
                            read_inbox_max_id=0, read_outbox_max_id=0, unread_count=0,
                            unread_mentions_count=0, unread_reactions_count=0,
                            unread_poll_votes_count=0, notify_settings=types.PeerNotifySettings())

    # Updates as Telegram pushes them, with a consistent channel pts (no gaps).
    def _updates(self, update: Any) -> types.Updates:
        return types.Updates(updates=[update], users=self.users(), chats=[self.tl], date=NOW,
                             seq=0)

    def new_message_update(self, msg: types.Message) -> types.Updates:
        self.pts += 1
        return self._updates(types.UpdateNewChannelMessage(msg, pts=self.pts, pts_count=1))

    def edit_update(self, msg: types.Message) -> types.Updates:
        self.pts += 1
        return self._updates(types.UpdateEditChannelMessage(msg, pts=self.pts, pts_count=1))

    def delete_update(self, ids: list[int]) -> types.Updates:
        for i in ids:
            self.messages.pop(i, None)
        self.pts += len(ids)
        return self._updates(types.UpdateDeleteChannelMessages(
            channel_id=self.id, messages=ids, pts=self.pts, pts_count=len(ids)))


class FakeGroup(FakeChannel):
    """A supergroup (``forum``: with topics): people ``say`` things, reply, and edit."""

    def __init__(self, channel_id: int, username: str, title: str, *, forum: bool = False,
                 private: bool = False) -> None:
        super().__init__(channel_id, username, title, private=private)
        self.forum = forum
        self.senders: dict[int, types.User] = {}

    @property
    def tl(self) -> types.Channel:
        return types.Channel(
            id=self.id, title=self.title, photo=types.ChatPhotoEmpty(), date=NOW,
            megagroup=True, forum=self.forum or None, access_hash=self.access_hash,
            username=self.username or None,
        )

    def users(self) -> list[types.User]:
        return list(self.senders.values())

    def say(self, person: types.User, text: str, *, reply_to: int | None = None,
            topic: int | None = None, age: timedelta = timedelta(hours=1),
            entities: list[Any] | None = None, **kw: Any) -> types.Message:
        """``person`` writes ``text`` (replying to ``reply_to``, in forum topic ``topic``)."""
        self.senders[person.id] = person
        mid = self.next_id
        self.next_id += 1
        msg = types.Message(id=mid, peer_id=self.peer, from_id=types.PeerUser(person.id),
                            date=NOW - age, message=text, entities=entities,
                            reply_to=_reply_header(reply_to, topic), **kw)
        self.messages[mid] = msg
        return msg

    def edit(self, mid: int, text: str) -> types.Message:
        old = self.messages[mid]
        msg = types.Message(id=mid, peer_id=old.peer_id, from_id=old.from_id, date=old.date,
                            message=text, reply_to=old.reply_to, entities=old.entities,
                            edit_date=NOW)
        self.messages[mid] = msg
        return msg


def _reply_header(reply_to: int | None, topic: int | None) -> types.MessageReplyHeader | None:
    if topic is not None:  # Telegram's forum form: the topic is the top message
        if reply_to is None or reply_to == topic:
            return types.MessageReplyHeader(forum_topic=True, reply_to_msg_id=topic)
        return types.MessageReplyHeader(forum_topic=True, reply_to_msg_id=reply_to,
                                        reply_to_top_id=topic)
    return types.MessageReplyHeader(reply_to_msg_id=reply_to) if reply_to else None


class FakeSmallGroup(FakeGroup):
    """A small ("basic") group: a ``types.Chat`` without a username or access hash."""

    def __init__(self, chat_id: int, title: str) -> None:
        super().__init__(chat_id, "", title)

    @property
    def tl(self) -> types.Chat:  # type: ignore[override]
        return types.Chat(id=self.id, title=self.title, photo=types.ChatPhotoEmpty(),
                          participants_count=len(self.senders) + 1, date=NOW, version=1)

    @property
    def peer(self) -> Any:
        return types.PeerChat(self.id)

    def new_message_update(self, msg: types.Message) -> types.Updates:
        self.pts += 1
        return self._updates(types.UpdateNewMessage(msg, pts=self.pts, pts_count=1))

    def edit_update(self, msg: types.Message) -> types.Updates:
        self.pts += 1
        return self._updates(types.UpdateEditMessage(msg, pts=self.pts, pts_count=1))

    def delete_update(self, ids: list[int]) -> types.Updates:
        for i in ids:
            self.messages.pop(i, None)
        self.pts += len(ids)
        # As Telegram sends it: message ids are account-wide here, so no chat id.
        return self._updates(types.UpdateDeleteMessages(messages=ids, pts=self.pts,
                                                        pts_count=len(ids)))


@dataclass
class Account:
    """A Telegram account that can log in: ``phone`` as digits (how Telethon sends it)."""

    phone: str
    user: types.User
    password: str | None = None
    code: str = "12345"
    salt1: bytes = b""
    salt2: bytes = b""
    verifier: int = 0  # g^x mod p, what the server stores instead of the password

    @property
    def algo(self) -> types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow:
        return types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=self.salt1, salt2=self.salt2, g=3, p=PRIME)


MAX_MESSAGE_UTF16 = 4096  # Telegram's limit on a message's text after entity parsing
MAX_BUTTON_DATA = 64  # bytes of an inline button's callback data


def utf16_len(text: str) -> int:
    return len(add_surrogate(text))


def _same(a: Any, b: Any) -> bool:
    """TL values (or lists of them) equal as serialized (what Telegram would compare)."""
    def raw(x: Any) -> Any:
        if x is None:
            return None
        return [bytes(i) for i in x] if isinstance(x, list) else bytes(x)
    return raw(a) == raw(b)


class FakeBot:
    """A bot account on the fake server: its private chats as the bot sees them, the updates it
    was sent (its update log, by account-wide pts) and what it answered."""

    def __init__(self, server: FakeTelegram, bot_id: int, username: str) -> None:
        self.server = server
        self.user = types.User(id=bot_id, is_self=True, bot=True, access_hash=bot_id * 5,
                               first_name="tgrag", username=username, bot_inline_placeholder="")
        self.token = f"{bot_id}:AAH{secrets.token_hex(16)}"
        self.revoked_tokens: list[str] = []
        self.logins = 0  # successful auth.importBotAuthorization calls
        self.pts = 1
        self.next_id = 1
        self.messages: dict[int, types.Message] = {}  # id → the message's current version
        self.versions: dict[int, list[types.Message]] = {}  # id → every version, oldest first
        self.log: list[tuple[int, Any, list[Any]]] = []  # (pts, update, chats) for getDifference
        self.callback_answers: dict[int, Any] = {}  # query id → SetBotCallbackAnswerRequest
        self.inline_answers: dict[int, Any] = {}  # query id → SetInlineBotResultsRequest
        self.commands: list[Any] = []  # SetBotCommandsRequest, as received
        self.edit_times: list[tuple[float, int]] = []  # (monotonic time, message id) per edit
        self.edit_attempts: list[tuple[float, int]] = []  # every editMessage, refused ones too
        self.floods = 0  # FLOOD_WAIT answers given to edits
        self.flood_edits: list[int] = []  # FLOOD_WAIT seconds for the next edits, one each
        self.min_edit_interval: float | None = None  # faster edits in one chat get FLOOD_WAIT
        self.blocked: set[int] = set()  # people who blocked the bot: sendMessage is refused
        self.flood_sends: list[int] = []  # FLOOD_WAIT seconds for the next sendMessage, one each
        self._query_ids = iter(range(9_000_001, 10**9))

    @property
    def id(self) -> int:
        return self.user.id

    def revoke(self) -> str:
        """@BotFather's /revoke: a new token; the old one and every key it logged in are dead."""
        self.revoked_tokens.append(self.token)
        self.token = f"{self.id}:AAH{secrets.token_hex(16)}"
        for key, user in list(self.server.authorized.items()):
            if user.id == self.id:
                del self.server.authorized[key]
        return self.token

    # -- the people's side --------------------------------------------------------------------

    def _person(self, user_id: int) -> types.User:
        person = self.server.people.get(user_id)
        if person is None:
            raise AssertionError(f"add_person({user_id}) first")
        return person

    def _next_id(self) -> int:
        mid = self.next_id
        self.next_id += 1
        return mid

    def write(self, person: types.User, text: str, *, entities: list[Any] | None = None,
              forward_of: tuple[FakeChannel, int] | None = None,
              in_group: int | None = None) -> types.Message:
        """``person`` sends the bot ``text`` (or forwards post ``(channel, message_id)``), in
        their private chat with it or in the small group ``in_group`` both are members of."""
        fwd = None
        chats: list[Any] = []
        if forward_of is not None:
            channel, post_id = forward_of
            fwd = types.MessageFwdHeader(date=NOW, from_id=types.PeerChannel(channel.id),
                                         channel_post=post_id)
            chats = [channel.tl]
        peer: Any = types.PeerUser(person.id)
        if in_group is not None:
            peer = types.PeerChat(in_group)
            chats.append(types.Chat(id=in_group, title="Группа", photo=types.ChatPhotoEmpty(),
                                    participants_count=3, date=NOW, version=1))
        msg = types.Message(id=self._next_id(), peer_id=peer,
                            from_id=types.PeerUser(person.id), date=datetime.now(UTC),
                            message=text, entities=entities, fwd_from=fwd, out=False)
        self._keep(msg)
        self.pts += 1
        self.deliver(types.UpdateNewMessage(msg, pts=self.pts, pts_count=1), [person], chats)
        return msg

    def click(self, person: types.User, message: types.Message, text: str) -> int:
        """``person`` presses the inline button labelled ``text`` under the bot's ``message``."""
        current = self.messages[message.id]
        found = [b for row in buttons_of(current) for b in row if b[0] == text]
        if not found:
            raise AssertionError(f"no button {text!r} under message {message.id}: "
                                 f"{buttons_of(current)}")
        return self.forge_click(person, message.id, found[0][1])

    def forge_click(self, person: types.User, message_id: int, data: bytes) -> int:
        """A callback query with any data (a modified client can send one)."""
        query_id = next(self._query_ids)
        self.deliver(types.UpdateBotCallbackQuery(
            query_id=query_id, user_id=person.id, peer=types.PeerUser(person.id),
            msg_id=message_id, chat_instance=person.id * 13, data=data), [person], [])
        return query_id

    def inline(self, person: types.User, query: str, offset: str = "") -> int:
        """``person`` types ``@bot query`` in some chat."""
        query_id = next(self._query_ids)
        self.deliver(types.UpdateBotInlineQuery(query_id=query_id, user_id=person.id,
                                                query=query, offset=offset), [person], [])
        return query_id

    def deliver(self, update: Any, users: list[Any], chats: list[Any]) -> None:
        """Send an update to the bot's connections; pts-bearing ones are also logged for
        ``getDifference`` (a bot that is offline gets them when it comes back)."""
        if getattr(update, "pts", None):
            self.log.append((update.pts, update, users + chats))
        updates = types.Updates(updates=[update], users=users, chats=chats, date=NOW, seq=0)
        for sender in self.server.senders:
            user = self.server.authorized.get(sender.auth_key.key or b"")
            if sender.is_connected() and sender._opened and user is not None \
                    and user.id == self.id:
                sender.push(updates)

    # -- what the bot showed ------------------------------------------------------------------

    def chat(self, person: types.User) -> list[types.Message]:
        """The private chat with ``person``, oldest first, each message as it is now."""
        return [m for _, m in sorted(self.messages.items())
                if m.peer_id == types.PeerUser(person.id)]

    def sent(self, person: types.User) -> list[types.Message]:
        """The bot's own messages to ``person``, oldest first."""
        return [m for m in self.chat(person) if m.out]

    def edits_of(self, message_id: int) -> list[types.Message]:
        return self.versions.get(message_id, [])[1:]

    # -- requests -----------------------------------------------------------------------------

    def _keep(self, msg: types.Message) -> None:
        self.messages[msg.id] = msg
        self.versions.setdefault(msg.id, []).append(msg)

    def _check_text(self, request: Any, text: str, entities: list[Any] | None,
                    markup: Any) -> None:
        if not text.strip():
            raise errors.MessageEmptyError(request)
        size = utf16_len(text)
        if size > MAX_MESSAGE_UTF16:
            raise errors.MessageTooLongError(request)
        for ent in entities or []:
            if ent.offset < 0 or ent.length <= 0 or ent.offset + ent.length > size:
                raise errors.EntityBoundsInvalidError(request)
            if isinstance(ent, types.MessageEntityTextUrl) and not ent.url.startswith(
                    ("https://", "http://", "tg://")):
                raise errors.EntityBoundsInvalidError(request)
        for row in getattr(markup, "rows", None) or []:
            for button in row.buttons:
                data = button_data(button)
                if data is not None and not 1 <= len(data) <= MAX_BUTTON_DATA:
                    raise errors.ButtonDataInvalidError(request)

    def _peer(self, peer: Any, request: Any) -> types.User:
        person = self.server.people.get(getattr(peer, "user_id", 0))
        if person is None or peer.access_hash != person.access_hash:
            raise errors.PeerIdInvalidError(request)
        return person

    def _updates(self, update: Any, person: types.User) -> types.Updates:
        return types.Updates(updates=update if isinstance(update, list) else [update],
                             users=[self.user, person], chats=[], date=NOW, seq=0)

    def answer(self, request: Any) -> Any:
        if isinstance(request, functions.updates.GetStateRequest):
            return types.updates.State(pts=self.pts, qts=0, date=NOW, seq=0, unread_count=0)
        if isinstance(request, functions.updates.GetDifferenceRequest):
            return self._difference(request)
        if isinstance(request, functions.messages.SendMessageRequest):
            return self._send(request)
        if isinstance(request, functions.messages.EditMessageRequest):
            return self._edit(request)
        if isinstance(request, functions.messages.GetMessagesRequest):
            msgs = [self.messages.get(i.id) or types.MessageEmpty(id=i.id, peer_id=None)
                    for i in request.id]
            people = {p.user_id for m in msgs if isinstance(m, types.Message)
                      for p in [m.peer_id]}
            return types.messages.Messages(messages=msgs, chats=[], topics=[],
                                           users=[self.server.people[u] for u in people])
        if isinstance(request, functions.messages.SetBotCallbackAnswerRequest):
            if request.query_id in self.callback_answers:
                raise errors.QueryIdInvalidError(request)
            self.callback_answers[request.query_id] = request
            return True
        if isinstance(request, functions.messages.SetInlineBotResultsRequest):
            return self._inline_results(request)
        if isinstance(request, functions.bots.SetBotCommandsRequest):
            self.commands.append(request)
            return True
        if isinstance(request, functions.messages.GetDialogsRequest | functions.messages.
                      GetHistoryRequest | functions.contacts.ResolveUsernameRequest):
            raise errors.BotMethodInvalidError(request)  # what Telegram answers a bot
        raise NotImplementedError(f"bot: {type(request).__name__}")

    def _difference(self, request: Any) -> Any:
        missed = [(pts, u, ents) for pts, u, ents in self.log if pts > request.pts]
        if not missed:
            return types.updates.DifferenceEmpty(date=NOW, seq=0)
        users = {e.id: e for _, _, ents in missed for e in ents if isinstance(e, types.User)}
        chats = {e.id: e for _, _, ents in missed for e in ents if isinstance(e, types.Channel)}
        return types.updates.Difference(
            new_messages=[u.message for _, u, _ in missed if isinstance(u, types.UpdateNewMessage)],
            new_encrypted_messages=[],
            other_updates=[u for _, u, _ in missed if not isinstance(u, types.UpdateNewMessage)],
            chats=list(chats.values()), users=[self.user, *users.values()],
            state=types.updates.State(pts=self.pts, qts=0, date=NOW, seq=0, unread_count=0))

    def _send(self, request: Any) -> types.Updates:
        person = self._peer(request.peer, request)
        if person.id in self.blocked:
            raise errors.UserIsBlockedError(request)
        if self.flood_sends:
            self.floods += 1
            raise errors.FloodWaitError(request, capture=self.flood_sends.pop(0))
        self._check_text(request, request.message, request.entities, request.reply_markup)
        reply_to = getattr(request.reply_to, "reply_to_msg_id", None)
        msg = types.Message(
            id=self._next_id(), peer_id=types.PeerUser(person.id), date=datetime.now(UTC),
            message=request.message, out=True, entities=request.entities,
            reply_markup=request.reply_markup,
            reply_to=types.MessageReplyHeader(reply_to_msg_id=reply_to) if reply_to else None,
        )
        self._keep(msg)
        self.pts += 1
        update = types.UpdateNewMessage(msg, pts=self.pts, pts_count=1)
        self.log.append((self.pts, update, [person]))
        return self._updates([types.UpdateMessageID(id=msg.id, random_id=request.random_id),
                              update], person)

    def _edit(self, request: Any) -> types.Updates:
        person = self._peer(request.peer, request)
        old = self.messages.get(request.id)
        if old is None or old.peer_id != types.PeerUser(person.id):
            raise errors.MessageIdInvalidError(request)
        if not old.out:
            raise errors.MessageAuthorRequiredError(request)
        now = time.monotonic()
        self.edit_attempts.append((now, old.id))
        if self.flood_edits:
            self.floods += 1
            raise errors.FloodWaitError(request, capture=self.flood_edits.pop(0))
        chat_edits = [t for t, mid in self.edit_times if self.messages[mid].peer_id == old.peer_id]
        if self.min_edit_interval and chat_edits and now - chat_edits[-1] < self.min_edit_interval:
            self.floods += 1
            raise errors.FloodWaitError(request, capture=1)
        text = old.message if request.message is None else request.message
        entities = old.entities if request.message is None else request.entities
        markup = request.reply_markup
        self._check_text(request, text, entities, markup)
        if text == old.message and _same(entities or [], old.entities or []) \
                and _same(markup, old.reply_markup):
            raise errors.MessageNotModifiedError(request)
        msg = types.Message(id=old.id, peer_id=old.peer_id, date=old.date, message=text,
                            out=True, entities=entities, reply_markup=markup,
                            reply_to=old.reply_to, edit_date=datetime.now(UTC))
        self._keep(msg)
        self.edit_times.append((now, msg.id))
        self.pts += 1
        update = types.UpdateEditMessage(msg, pts=self.pts, pts_count=1)
        self.log.append((self.pts, update, [person]))
        return self._updates(update, person)

    def _inline_results(self, request: Any) -> bool:
        if request.query_id in self.inline_answers:
            raise errors.QueryIdInvalidError(request)
        if len(request.results) > 50:
            raise errors.ResultsTooMuchError(request)
        for result in request.results:
            if not 1 <= len(result.id.encode()) <= 64:
                raise errors.ResultIdInvalidError(request)
            sent = result.send_message
            self._check_text(request, sent.message, sent.entities, sent.reply_markup)
        self.inline_answers[request.query_id] = request
        return True


def button_data(button: Any) -> bytes | None:
    """A button's callback data (layer 220+ buttons carry it in ``type``); None for URL ones."""
    kind = getattr(button, "type", None)
    return getattr(kind, "data", None) if kind is not None else getattr(button, "data", None)


def button_url(button: Any) -> str | None:
    kind = getattr(button, "type", None)
    return getattr(kind, "url", None) if kind is not None else getattr(button, "url", None)


def buttons_of(message: Any) -> list[list[tuple[str, bytes]]]:
    """The inline keyboard under a message (or an inline result) as ``[[(text, data)]]``
    (``data`` is ``b""`` for a URL button)."""
    rows = getattr(getattr(message, "reply_markup", None), "rows", None) or []
    return [[(b.text, button_data(b) or b"") for b in row.buttons] for row in rows]


def html_of(message: Any) -> str:
    """A message's text and entities as Telegram HTML (what the user sees, formatting included)."""
    from telethon.extensions import html

    return html.unparse(message.message, message.entities or [])


class FakeTelegram:
    """The server: channels, accounts, logged-in auth keys; answers requests with TL objects."""

    def __init__(self, *, require_auth: bool = False) -> None:
        self.channels: dict[int, FakeChannel] = {}
        self.accounts: dict[str, Account] = {}
        self.authorized: dict[bytes, types.User] = {}
        self.require_auth = require_auth
        self.requests: list[Any] = []
        self.fail_next: list[tuple[type, BaseException]] = []  # (request type, error) once each
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.senders: list[FakeSender] = []
        self.script: Callable[[FakeSender], Coroutine[Any, Any, None]] | None = None
        self.script_error: BaseException | None = None
        self._srp: dict[int, tuple[Account, int, int]] = {}  # srp_id → (account, b, B)
        self.bots: dict[int, FakeBot] = {}
        self.people: dict[int, types.User] = {}
        self.refuse_connections = False  # connect() fails, like a network that is down
        self.small_groups: dict[int, FakeSmallGroup] = {}
        self.me = ME  # who users.getUsers([self]) is when no login is required
        self.private_chats: list[int] = []  # people the account talks to (in its dialogs)

    def add(self, channel: FakeChannel) -> Any:
        """Add a channel, a supergroup or a small group; returns it."""
        if isinstance(channel, FakeSmallGroup):
            self.small_groups[channel.id] = channel
        else:
            self.channels[channel.id] = channel
        return channel

    def add_account(self, phone: str, *, password: str | None = None, username: str = "me",
                    user_id: int = 4242) -> Account:
        digits = utils.parse_phone(phone)
        user = types.User(id=user_id, is_self=True, access_hash=user_id * 3, first_name="Test",
                          username=username, phone=digits)
        account = Account(phone=digits, user=user, password=password)
        if password is not None:
            account.salt1, account.salt2 = os.urandom(40), os.urandom(16)
            x = int.from_bytes(pwd.compute_hash(account.algo, password), "big")
            account.verifier = pow(3, x, int.from_bytes(PRIME, "big"))
        self.accounts[digits] = account
        return account

    def add_bot(self, username: str = "tgrag_bot", bot_id: int = 777000111) -> FakeBot:
        """A bot made with @BotFather: its token is ``<bot_id>:<secret>``."""
        bot = FakeBot(self, bot_id, username)
        self.bots[bot_id] = bot
        return bot

    def add_person(self, user_id: int, first_name: str = "Иван", *, username: str | None = None,
                   lang_code: str = "ru") -> types.User:
        """Somebody who writes to bots; the bot sees their ``lang_code`` (the app's language)."""
        user = types.User(id=user_id, access_hash=user_id * 11, first_name=first_name,
                          username=username, lang_code=lang_code)
        self.people[user_id] = user
        return user

    def login_session(self, user: types.User = ME) -> str:
        """A session string whose auth key is logged in as ``user`` (what `tgrag login` makes)."""
        key = os.urandom(256)
        self.authorized[key] = user
        session = StringSession()
        session.set_dc(2, "149.154.167.51", 443)
        session.auth_key = AuthKey(key)
        return session.save()

    def attach(self, client: TelegramClient) -> TelegramClient:
        """Put a fake transport under ``client``; returns it."""
        sender = FakeSender(self, client)
        self.senders.append(sender)
        client._sender = sender  # type: ignore[assignment]
        return client

    def count(self, kind: type) -> int:
        return sum(isinstance(r, kind) for r in self.requests)

    # -- requests ---------------------------------------------------------------------------------

    def handle(self, request: Any, sender: FakeSender) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        self.loops.append(loop)
        future = loop.create_future()
        while isinstance(request, WRAPPERS):
            request = request.query
        self.requests.append(request)
        try:
            for i, (kind, exc) in enumerate(self.fail_next):
                if isinstance(request, kind):
                    del self.fail_next[i]
                    raise exc
            future.set_result(self._answer(request, sender))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def _answer(self, request: Any, sender: FakeSender) -> Any:
        if isinstance(request, functions.help.GetConfigRequest):
            return None  # the connection's init request; the client does not read the answer
        if isinstance(request, functions.auth.SendCodeRequest):
            return self._send_code(request)
        if isinstance(request, functions.auth.SignInRequest):
            return self._sign_in(request, sender)
        if isinstance(request, functions.account.GetPasswordRequest):
            return self._get_password(request, sender)
        if isinstance(request, functions.auth.CheckPasswordRequest):
            return self._check_password(request, sender)
        if isinstance(request, functions.auth.ImportBotAuthorizationRequest):
            return self._import_bot(request, sender)
        me = self._me(request, sender)  # everything below needs a logged-in key
        if isinstance(request, functions.users.GetUsersRequest):
            return [self.people.get(getattr(u, "user_id", None)) or me for u in request.id]
        bot = self.bots.get(me.id) if me.bot else None
        if bot is not None:
            return bot.answer(request)
        if isinstance(request, functions.updates.GetStateRequest):
            return types.updates.State(pts=1, qts=0, date=NOW, seq=0, unread_count=0)
        if isinstance(request, functions.updates.GetDifferenceRequest):
            return types.updates.DifferenceEmpty(date=NOW, seq=0)
        if isinstance(request, functions.updates.GetChannelDifferenceRequest):
            ch = self._channel(request.channel, request)
            return types.updates.ChannelDifferenceEmpty(pts=ch.pts, final=True)
        if isinstance(request, functions.contacts.ResolveUsernameRequest):
            for ch in self.channels.values():
                if ch.username.lower() == request.username.lower():
                    return types.contacts.ResolvedPeer(peer=types.PeerChannel(ch.id),
                                                       chats=[ch.tl], users=[])
            for person in self.people.values():
                if (person.username or "").lower() == request.username.lower():
                    return types.contacts.ResolvedPeer(peer=types.PeerUser(person.id),
                                                       chats=[], users=[person])
            raise errors.UsernameNotOccupiedError(request)
        if isinstance(request, functions.messages.GetHistoryRequest):
            if isinstance(request.peer, types.InputPeerChat):
                return self._history(self._small_group(request.peer.chat_id, request), request)
            if isinstance(request.peer, types.InputPeerUser):
                raise AssertionError("a private chat's history was requested")
            ch = self._channel(request.peer, request)
            return self._history(ch, request)
        if isinstance(request, functions.messages.GetChatsRequest):
            return types.messages.Chats(chats=[self._small_group(i, request).tl
                                               for i in request.id])
        if isinstance(request, functions.messages.GetDialogsRequest):
            return self._dialogs()
        if isinstance(request, functions.channels.GetMessagesRequest):
            ch = self._channel(request.channel, request)
            msgs = [ch.messages.get(i.id) or types.MessageEmpty(id=i.id, peer_id=None)
                    for i in request.id]
            return types.messages.ChannelMessages(pts=1, count=len(msgs), messages=msgs,
                                                  topics=[], chats=[ch.tl], users=[])
        raise NotImplementedError(type(request).__name__)

    def _me(self, request: Any, sender: FakeSender) -> types.User:
        if not self.require_auth:
            return self.me
        user = self.authorized.get(sender.auth_key.key or b"")
        if user is None:
            raise errors.AuthKeyUnregisteredError(request)
        return user

    def _import_bot(self, request: Any, sender: FakeSender) -> types.auth.Authorization:
        bot_id, _, _ = request.bot_auth_token.partition(":")
        bot = self.bots.get(int(bot_id)) if bot_id.isdigit() else None
        if bot is None or request.bot_auth_token not in (bot.token, *bot.revoked_tokens):
            raise errors.AccessTokenInvalidError(request)
        if request.bot_auth_token in bot.revoked_tokens:
            raise errors.AccessTokenExpiredError(request)
        self.authorized[sender.auth_key.key] = bot.user
        bot.logins += 1
        return types.auth.Authorization(user=bot.user)

    def _account(self, phone: str, request: Any) -> Account:
        account = self.accounts.get(phone)
        if account is None:
            raise errors.PhoneNumberInvalidError(request)
        return account

    def _send_code(self, request: Any) -> types.auth.SentCode:
        self._account(request.phone_number, request)
        return types.auth.SentCode(type=types.auth.SentCodeTypeApp(length=5),
                                   phone_code_hash=f"hash-{request.phone_number}")

    def _sign_in(self, request: Any, sender: FakeSender) -> types.auth.Authorization:
        account = self._account(request.phone_number, request)
        if request.phone_code_hash != f"hash-{account.phone}":
            raise errors.PhoneCodeExpiredError(request)
        if request.phone_code != account.code:
            raise errors.PhoneCodeInvalidError(request)
        if account.password is not None:
            sender.awaiting_password = account
            raise errors.SessionPasswordNeededError(request)
        return self._authorize(sender, account)

    def _authorize(self, sender: FakeSender, account: Account) -> types.auth.Authorization:
        self.authorized[sender.auth_key.key] = account.user
        return types.auth.Authorization(user=account.user)

    def _get_password(self, request: Any, sender: FakeSender) -> types.account.Password:
        account = sender.awaiting_password
        if account is None:
            raise errors.AuthKeyUnregisteredError(request)
        p, g = int.from_bytes(PRIME, "big"), 3
        k = int.from_bytes(pwd.sha256(PRIME, pwd.big_num_for_hash(g)), "big")
        while True:
            b = int.from_bytes(os.urandom(256), "big")
            g_b = pow(g, b, p)
            if pwd.is_good_mod_exp_first(g_b, p):
                break
        srp_b = (k * account.verifier + g_b) % p
        srp_id = secrets.randbits(62)
        self._srp[srp_id] = (account, b, srp_b)
        return types.account.Password(
            new_algo=types.PasswordKdfAlgoUnknown(),
            new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=os.urandom(256), has_password=True, current_algo=account.algo,
            srp_B=pwd.big_num_for_hash(srp_b), srp_id=srp_id, hint="the usual one",
        )

    def _check_password(self, request: Any, sender: FakeSender) -> types.auth.Authorization:
        """SRP-6a as Telegram's server does it: recompute M1 from A, B, b and the verifier."""
        check = request.password
        entry = self._srp.pop(check.srp_id, None)
        if entry is None:
            raise errors.SrpIdInvalidError(request)
        account, b, srp_b = entry
        p, g = int.from_bytes(PRIME, "big"), 3
        a_for_hash = pwd.num_bytes_for_hash(check.A)
        b_for_hash = pwd.big_num_for_hash(srp_b)
        big_a = int.from_bytes(check.A, "big")
        if not pwd.is_good_large(big_a, p):
            raise errors.PasswordHashInvalidError(request)
        u = int.from_bytes(pwd.sha256(a_for_hash, b_for_hash), "big")
        s = pow(big_a * pow(account.verifier, u, p) % p, b, p)
        expected = pwd.sha256(
            pwd.xor(pwd.sha256(pwd.num_bytes_for_hash(PRIME)),
                    pwd.sha256(pwd.big_num_for_hash(g))),
            pwd.sha256(account.salt1), pwd.sha256(account.salt2), a_for_hash, b_for_hash,
            pwd.sha256(pwd.big_num_for_hash(s)),
        )
        if not secrets.compare_digest(expected, bytes(check.M1)):
            raise errors.PasswordHashInvalidError(request)
        sender.awaiting_password = None
        return self._authorize(sender, account)

    def _small_group(self, chat_id: int, request: Any) -> FakeSmallGroup:
        group = self.small_groups.get(chat_id)
        if group is None:
            raise errors.ChatIdInvalidError(request)
        return group

    def _dialogs(self) -> types.messages.Dialogs:
        """Every chat the account is in (channels, groups, private chats), one chunk."""
        chats = [c for c in (*self.channels.values(), *self.small_groups.values())
                 if not c.private]
        people = [self.people[i] for i in self.private_chats if i in self.people]
        dialogs = [c.dialog() for c in chats]
        dialogs += [types.Dialog(peer=types.PeerUser(p.id), top_message=0, read_inbox_max_id=0,
                                 read_outbox_max_id=0, unread_count=0, unread_mentions_count=0,
                                 unread_reactions_count=0, unread_poll_votes_count=0,
                                 notify_settings=types.PeerNotifySettings()) for p in people]
        tops = [c.messages[d.top_message] for c, d in zip(chats, dialogs, strict=False)
                if d.top_message in c.messages]
        senders = {u.id: u for c in chats for u in c.users()}
        return types.messages.Dialogs(dialogs=dialogs, messages=tops, chats=[c.tl for c in chats],
                                      users=[*people, *senders.values()])

    def _channel(self, peer: Any, request: Any) -> FakeChannel:
        ch = self.channels.get(peer.channel_id)
        if ch is None or ch.access_hash != peer.access_hash:
            raise errors.ChannelInvalidError(request)
        if ch.private:
            raise errors.ChannelPrivateError(request)
        return ch

    @staticmethod
    def _history(ch: FakeChannel, req: Any) -> Any:
        """``messages.getHistory``: newest first; start at the first message older than the
        offset (``offset_id`` wins over ``offset_date``), shifted by ``add_offset``."""
        desc = [ch.messages[i] for i in sorted(ch.messages, reverse=True)]
        if req.offset_id:
            start = next((k for k, m in enumerate(desc) if m.id < req.offset_id), len(desc))
        elif req.offset_date:
            start = next((k for k, m in enumerate(desc) if m.date < req.offset_date), len(desc))
        else:
            start = 0
        start += req.add_offset
        end = start + req.limit
        page = desc[max(start, 0):max(end, 0)]
        if req.min_id:
            page = [m for m in page if m.id > req.min_id]
        if req.max_id:
            page = [m for m in page if m.id < req.max_id]
        if isinstance(ch, FakeSmallGroup):
            return types.messages.MessagesSlice(count=len(desc), messages=page, topics=[],
                                                chats=[ch.tl], users=ch.users())
        return types.messages.ChannelMessages(pts=1, count=len(desc), messages=page, topics=[],
                                              chats=[ch.tl], users=ch.users())


class FakeSender:
    """Stands in for one client's ``MTProtoSender``: what ``TelegramClient`` uses of it."""

    def __init__(self, server: FakeTelegram, client: TelegramClient) -> None:
        self.server = server
        self.auth_key: AuthKey = client._sender.auth_key  # the session's key (maybe empty)
        self._updates = client._updates_queue
        self._connected = True  # unit tests never call connect()
        self._opened = False
        self._disconnected: asyncio.Future[None] | None = None
        self.disconnects = 0
        self.awaiting_password: Account | None = None
        self.script_task: asyncio.Task[None] | None = None

    def is_connected(self) -> bool:
        return self._connected

    def _transport_connected(self) -> bool:
        return self._connected

    async def connect(self, connection: Any = None) -> bool:
        if self._opened and self._connected:
            return False  # already connected: the client skips its init
        if self.server.refuse_connections:
            raise ConnectionError("network is unreachable")
        if not self.auth_key.key:
            self.auth_key.key = os.urandom(256)  # the key exchange of a new session
        self._opened = self._connected = True
        self._loop = asyncio.get_running_loop()
        self._disconnected = self._loop.create_future()
        if self.server.script is not None:
            self.script_task = asyncio.get_running_loop().create_task(self._run_script())
        return True

    async def disconnect(self) -> None:
        """Like MTProtoSender.disconnect: the client calls it when it is done."""
        self._connected = False
        self.disconnects += 1
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)

    @property
    def disconnected(self) -> asyncio.Future[None]:
        if self._disconnected is None:
            self._disconnected = asyncio.get_running_loop().create_future()
        return asyncio.shield(self._disconnected)

    def send(self, request: Any, ordered: bool = False) -> asyncio.Future[Any]:
        future = self.server.handle(request, self)
        if self._opened and future.done() and future.exception() is None:
            self._store_own_updates(future.result())
        return future

    def _store_own_updates(self, result: Any) -> None:
        """What MTProtoSender does with the ``Updates`` a request returns (a sent or edited
        message): processed by the update loop, so the account's pts moves on, not dispatched."""
        if isinstance(result, types.Updates | types.UpdateShortSentMessage):
            result._self_outgoing = True
            self._updates.put_nowait(result)

    # -- the server's side of the connection --------------------------------------------------

    def push(self, updates: Any) -> None:
        """Deliver updates as the real sender does: into the client's update queue (from any
        thread: a test may play Telegram while the client runs in a server's loop)."""
        loop = getattr(self, "_loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._updates.put_nowait(updates)
        else:
            loop.call_soon_threadsafe(self._updates.put_nowait, updates)

    def drop(self, exc: BaseException) -> None:
        """The connection is lost for good (the real sender's reconnects failed)."""
        self._connected = False
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_exception(exc)

    async def _run_script(self) -> None:
        assert self.server.script is not None
        try:
            await self.server.script(self)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # end the command rather than let it hang
            self.server.script_error = exc
            self.drop(ConnectionError(f"test script failed: {exc!r}"))
            with_handler = signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            if with_handler:
                signal.raise_signal(signal.SIGINT)


def new_client(fake: FakeTelegram) -> TelegramClient:
    return fake.attach(TelegramClient(StringSession(), 1, "x", receive_updates=False))


async def dispatch(client: TelegramClient, channel: FakeChannel, update: Any) -> None:
    """Feed an update the way Telethon's update loop does (it attaches the entities first)."""
    update._entities = {utils.get_peer_id(x): x for x in (channel.tl, *channel.users())}
    await client._dispatch_update(update)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# -- acting as Telegram while a CLI command runs (``FakeTelegram.script``) ------------------------


def printed() -> str:
    """What the running command has printed so far (CliRunner's captured stdout and stderr)."""
    out = b""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        buffer = getattr(stream, "buffer", None)
        out += buffer.getvalue() if hasattr(buffer, "getvalue") else b""
    return out.decode("utf-8", "replace")


async def until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}; printed so far:\n{printed()}")
        await asyncio.sleep(0.02)


def send_signal(sig: signal.Signals) -> None:
    """Deliver Ctrl-C (SIGINT) or SIGTERM to this process, only when the running command
    handles it (asyncio.run's Ctrl-C handler, the command's SIGTERM handler): otherwise it would
    stop the test run itself."""
    handler = signal.getsignal(sig)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, None, signal.default_int_handler):
        raise AssertionError(f"nothing in the command handles {sig.name}")
    signal.raise_signal(sig)
