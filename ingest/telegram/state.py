"""Sync state in Redis: the channel registry with per-channel cursors, per-channel locks, and the
account the syncs read with (its id and username: what a mention of it looks like).

Redis (not a local file) so that every worker — the API process, ``tgrag worker`` on other
machines — sees one registry, one cursor per channel, and one lock per channel.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import redis

from rag.errors import InputError, NotFoundError
from rag.ids import normalize_ref

STATUSES = ("pending", "syncing", "ok", "failed")


def _try_normalize(ref: str | int) -> str | None:
    try:
        return normalize_ref(ref)
    except InputError:
        return None  # maybe a title with spaces


@dataclass
class ChannelState:
    """One followed channel: what to read next and how the last sync went."""

    ref: str  # normalized username or id, the registry key
    channel_id: int | None = None
    channel: str = ""
    channel_title: str = ""
    last_message_id: int = 0  # the cursor: every message up to it is committed to the index
    last_sync: int | None = None  # unix seconds of the last successful sync
    posts_indexed: int = 0
    last_error: str | None = None
    status: str = "pending"
    added: int = 0
    group: bool = False  # opted in as a group chat (`channels add --group`): members' messages
    chat_type: str | None = None  # channel | group, once resolved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ChannelState:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ChannelRegistry:
    """The channels to follow, in one Redis hash ``ref → state json`` (``<ns>:tg:channels``),
    and their sync locks (``<ns>:tg:lock:<ref>``)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.namespace = namespace
        self.key = f"{namespace}:tg:channels"

    @property
    def redis(self) -> redis.Redis:
        """The client, for the owners of the other ``<ns>:tg:*`` keys (the sync job records)."""
        return self._r

    def lock(self, ref: str, ttl: float) -> RedisLock:
        """The lock a worker holds while syncing the channel ``ref`` (or deleting its posts)."""
        return RedisLock(self._r, f"{self.namespace}:tg:lock:{ref}", ttl)

    def add(self, ref: str | int, *, group: bool = False) -> ChannelState:
        """Register a channel (idempotent: an existing one keeps its cursor); ``group`` opts it
        in as a group chat (also for one already registered)."""
        key = normalize_ref(ref)
        existing = self.get(key)
        if existing is not None:
            if group and not existing.group:
                existing.group = True
                if existing.status == "failed":  # most likely "is a group chat": retry it
                    existing.status, existing.last_error = "pending", None
                self.save(existing)
            return existing
        state = ChannelState(ref=key, added=int(time.time()), group=group)
        self._r.hsetnx(self.key, key, json.dumps(state.to_dict(), ensure_ascii=False))
        return self.get(key) or state

    def get(self, ref: str | int) -> ChannelState | None:
        key = _try_normalize(ref)
        raw = self._r.hget(self.key, key) if key else None
        if raw is not None:
            return ChannelState.from_json(raw)
        return self.find(ref)

    def find(self, ref: str | int) -> ChannelState | None:
        """A registered channel by key, resolved username, channel id or exact title."""
        text = str(ref).strip()
        key = _try_normalize(ref)
        for state in self.list():
            if (state.ref == key or (state.channel and state.channel.lower() == key)
                    or (state.channel_id is not None and str(state.channel_id) == key)
                    or (state.channel_title and state.channel_title == text)):
                return state
        return None

    def by_channel_id(self, channel_id: int) -> ChannelState | None:
        for state in self.list():
            if state.channel_id == channel_id or state.ref == str(channel_id):
                return state
        return None

    def require(self, ref: str | int) -> ChannelState:
        state = self.get(ref)
        if state is None:
            raise NotFoundError(f"channel {ref!r} is not registered",
                                hint="add it with `tgrag channels add` or POST /channels")
        return state

    def save(self, state: ChannelState) -> None:
        self._r.hset(self.key, state.ref, json.dumps(state.to_dict(), ensure_ascii=False))

    def remove(self, ref: str | int) -> ChannelState:
        """Stop following a channel (its posts stay indexed; see ``sync.remove_channel``)."""
        state = self.require(ref)
        self._r.hdel(self.key, state.ref)
        return state

    def list(self) -> list[ChannelState]:
        return sorted(
            (ChannelState.from_json(raw) for raw in self._r.hgetall(self.key).values()),
            key=lambda s: s.ref,
        )


@dataclass(frozen=True, slots=True)
class Account:
    """The Telegram account the syncs read with."""

    user_id: int
    username: str = ""  # without "@"; may be empty

    @property
    def usernames(self) -> list[str]:
        return [self.username] if self.username else []


class AccountIdentity:
    """Who the sync account is (``<ns>:tg:account``), recorded by a group sync when it connects,
    so the mention rule knows the account's @username and id in any process."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.key = f"{namespace}:tg:account"

    def save(self, account: Account) -> None:
        self._r.set(self.key, json.dumps(asdict(account), ensure_ascii=False))

    def load(self) -> Account | None:
        raw = self._r.get(self.key)
        if raw is None:
            return None
        data = json.loads(raw)
        return Account(user_id=int(data["user_id"]), username=data.get("username") or "")


# Compare-and-act scripts: only the token holder may renew or release its lock.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
           "return redis.call('del', KEYS[1]) else return 0 end"


class RedisLock:
    """A lock with expiry (``SET NX PX`` + a random token): a crashed worker's lock runs out."""

    def __init__(self, client: redis.Redis, key: str, ttl: float) -> None:
        self._r = client
        self.key = key
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = secrets.token_hex(16)
        self.held = False

    def acquire(self) -> bool:
        self.held = bool(self._r.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def renew(self) -> bool:
        """Extend the expiry; False if the lock was lost (expired and taken by another worker)."""
        self.held = bool(self._r.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        return self.held

    def release(self) -> None:
        self._r.eval(_RELEASE, 1, self.key, self.token)
        self.held = False

    def owner(self) -> str | None:
        raw = self._r.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def wait(self, timeout: float, poll: float = 0.2) -> bool:
        """Acquire, retrying for up to ``timeout`` seconds (blocking: call it from a thread)."""
        deadline = time.monotonic() + timeout
        while not self.acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True
