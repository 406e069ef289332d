"""Channels known to the index, in Redis: names for ``--channel`` resolution, and per-channel stats.

Each channel has a sorted set of its indexed message ids scored by date.  Adding the same post twice
is a no-op, so the counts stay exact after a crash and a re-run, and the first and last dates come
for free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

from rag.errors import InputError
from rag.ids import DEFAULT_TENANT, is_channel_id, normalize_channel_id


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    channel_id: int
    channel: str
    channel_title: str
    posts: int = 0
    first_date: int | None = None
    last_date: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChannelCatalog:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self._names = f"{namespace}:channels"

    def _posts_key(self, channel_id: int) -> str:
        return f"{self._names}:{channel_id}:posts"

    def record_posts(self, posts: list[tuple[int, str, str, int, int]]) -> None:
        """Record ``(channel_id, username, title, message_id, date)`` tuples, idempotently.

        A channel's username and title are the last non-empty ones seen: an empty one (a source
        that lacks it, e.g. ``result.json`` without ``channels.json``) never replaces a known one.
        """
        pipe = self._r.pipeline(transaction=False)
        seen: dict[int, tuple[str, str]] = {}
        for channel_id, username, title, message_id, date in posts:
            old_username, old_title = seen.get(channel_id, ("", ""))
            seen[channel_id] = (username or old_username, title or old_title)
            pipe.zadd(self._posts_key(channel_id), {str(message_id): date})
        known = self.known_names(list(seen))
        for channel_id, (username, title) in seen.items():
            known_username, known_title = known.get(channel_id, ("", ""))
            pipe.hset(self._names, str(channel_id),
                      json.dumps({"channel": username or known_username,
                                  "channel_title": title or known_title}, ensure_ascii=False))
        pipe.execute()

    def known_names(self, channel_ids: list[int]) -> dict[int, tuple[str, str]]:
        """``channel_id → (username, title)`` for the given channels the catalog knows."""
        if not channel_ids:
            return {}
        raw = self._r.hmget(self._names, [str(c) for c in channel_ids])
        out = {}
        for channel_id, value in zip(channel_ids, raw, strict=True):
            if value is not None:
                names = json.loads(value)
                out[channel_id] = (names.get("channel", ""), names.get("channel_title", ""))
        return out

    def forget_posts(self, channel_id: int, message_ids: list[int]) -> None:
        if message_ids:
            self._r.zrem(self._posts_key(channel_id), *[str(m) for m in message_ids])

    def post_ids(self, channel_id: int) -> list[int]:
        """The indexed message ids of a channel, oldest first."""
        return [int(m) for m in self._r.zrange(self._posts_key(channel_id), 0, -1)]

    def recent_post_ids(self, channel_id: int, last: int, since: float | None) -> list[int]:
        """The ids of a channel's ``last`` newest indexed posts and of every post dated at or
        after ``since`` (unix seconds; None = none), ascending."""
        key = self._posts_key(channel_id)
        found = set(self._r.zrevrange(key, 0, last - 1)) if last > 0 else set()
        if since is not None:
            found |= set(self._r.zrangebyscore(key, since, "+inf"))
        return sorted(int(m) for m in found)

    def post_date(self, channel_id: int, message_id: int) -> int | None:
        """The date a post is recorded with; None if it is not in the catalog."""
        score = self._r.zscore(self._posts_key(channel_id), str(message_id))
        return int(score) if score is not None else None

    def ids_dated_upto(self, channel_id: int, date: float, limit: int = 64) -> list[int]:
        """The ids of up to ``limit`` posts dated at or before ``date``, the newest first."""
        return [int(m) for m in self._r.zrevrangebyscore(self._posts_key(channel_id), date,
                                                          "-inf", start=0, num=limit)]

    def ids_dated_before(self, channel_id: int, cutoff: float) -> list[int]:
        """The ids of the posts dated strictly before ``cutoff`` (retention), oldest first."""
        return [int(m) for m in self._r.zrangebyscore(self._posts_key(channel_id), "-inf",
                                                       f"({cutoff}")]

    def post_count(self, channel_id: int) -> int:
        return int(self._r.zcard(self._posts_key(channel_id)))

    def forget_channel(self, channel_id: int) -> None:
        """Drop a channel: its post list and its names (``channels()`` no longer lists it)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._posts_key(channel_id))
        pipe.hdel(self._names, str(channel_id))
        pipe.execute()

    def channels(self) -> list[ChannelInfo]:
        out = []
        for raw_id, raw in sorted(self._r.hgetall(self._names).items()):
            channel_id = int(raw_id)
            names = json.loads(raw)
            key = self._posts_key(channel_id)
            count = int(self._r.zcard(key))
            first = self._r.zrange(key, 0, 0, withscores=True)
            last = self._r.zrange(key, -1, -1, withscores=True)
            out.append(ChannelInfo(
                channel_id=channel_id,
                channel=names.get("channel", ""),
                channel_title=names.get("channel_title", ""),
                posts=count,
                first_date=int(first[0][1]) if first else None,
                last_date=int(last[0][1]) if last else None,
            ))
        return out

    def resolve(self, ref: str | int) -> int:
        """A channel id from an id, a ``@username``/username, or an exact title."""
        text = str(ref).strip()
        known = self.channels()
        if is_channel_id(text):
            return normalize_channel_id(text)
        name = text.removeprefix("@").removeprefix("https://t.me/").lower()
        for info in known:
            if info.channel and info.channel.lower() == name:
                return info.channel_id
        for info in known:
            if info.channel_title == text:
                return info.channel_id
        choices = ", ".join(c.channel or c.channel_title for c in known[:10]) or "none indexed yet"
        raise InputError(
            f"unknown channel {text!r}",
            hint=f"use a channel id, username or exact title; known: {choices}",
        )


def catalog_tenants(client: redis.Redis, base: str) -> list[str]:
    """The tenants that have a channel catalog under the collection namespace ``base``
    (``rag.ids.catalog_namespace``): the default one first."""
    found = {DEFAULT_TENANT}
    prefix, suffix = f"{base}:tenant:", ":channels"
    for raw in client.scan_iter(match=f"{prefix}*{suffix}", count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        name = key[len(prefix):-len(suffix)]
        if name and ":" not in name:
            found.add(name)
    return [DEFAULT_TENANT, *sorted(found - {DEFAULT_TENANT})]
