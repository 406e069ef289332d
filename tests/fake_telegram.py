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

    # Updates as Telegram pushes them, with a consistent channel pts (no gaps).
    def _updates(self, update: Any) -> types.Updates:
        return types.Updates(updates=[update], users=[], chats=[self.tl], date=NOW, seq=0)

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

    def add(self, channel: FakeChannel) -> FakeChannel:
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
        me = self._me(request, sender)  # everything below needs a logged-in key
        if isinstance(request, functions.users.GetUsersRequest):
            return [me]
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
            raise errors.UsernameNotOccupiedError(request)
        if isinstance(request, functions.messages.GetHistoryRequest):
            ch = self._channel(request.peer, request)
            return self._history(ch, request)
        if isinstance(request, functions.channels.GetMessagesRequest):
            ch = self._channel(request.channel, request)
            msgs = [ch.messages.get(i.id) or types.MessageEmpty(id=i.id) for i in request.id]
            return types.messages.ChannelMessages(pts=1, count=len(msgs), messages=msgs,
                                                  topics=[], chats=[ch.tl], users=[])
        raise NotImplementedError(type(request).__name__)

    def _me(self, request: Any, sender: FakeSender) -> types.User:
        if not self.require_auth:
            return ME
        user = self.authorized.get(sender.auth_key.key or b"")
        if user is None:
            raise errors.AuthKeyUnregisteredError(request)
        return user

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

    def _channel(self, peer: Any, request: Any) -> FakeChannel:
        ch = self.channels.get(peer.channel_id)
        if ch is None or ch.access_hash != peer.access_hash:
            raise errors.ChannelInvalidError(request)
        if ch.private:
            raise errors.ChannelPrivateError(request)
        return ch

    @staticmethod
    def _history(ch: FakeChannel, req: Any) -> types.messages.ChannelMessages:
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
        return types.messages.ChannelMessages(pts=1, count=len(desc), messages=page, topics=[],
                                              chats=[ch.tl], users=[])


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
        if not self.auth_key.key:
            self.auth_key.key = os.urandom(256)  # the key exchange of a new session
        self._opened = self._connected = True
        self._disconnected = asyncio.get_running_loop().create_future()
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
        return self.server.handle(request, self)

    # -- the server's side of the connection --------------------------------------------------

    def push(self, updates: Any) -> None:
        """Deliver updates as the real sender does: into the client's update queue."""
        self._updates.put_nowait(updates)

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
    update._entities = {utils.get_peer_id(channel.tl): channel.tl}
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
