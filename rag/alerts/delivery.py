"""Delivering notifications: the :class:`Notifier` interface, and the delivery queues in Redis.

Recording a match (``AlertStore.record``) queues, in the same transaction, one delivery per
channel the alert has (``Alert.channels``: ``webhook`` when it has a URL, ``bot`` when the bot
saved it for a chat).  Each channel has its own queue, consumed by the processes that have a
:class:`Notifier` for it (the webhook one in ``tgrag serve``, ``worker``, ``watch`` and after a CLI
ingest; the bot's in the bot's process), so a process never takes work it cannot do.

A delivery is claimed while it is sent (``rag.alerts.claims``), so two processes never send it at
the same time; it leaves the queue when the notifier returns.  A failure (``DeliveryFailed``) puts
it back with exponential backoff (``TGRAG_ALERT_RETRY_BACKOFF`` · 2^(attempt−1)); after
``TGRAG_ALERT_MAX_ATTEMPTS`` failures it becomes a dead letter of its alert (``tgrag alerts
failed``, ``GET /alerts/{id}/dead-letters``), from where it can be queued again.  A process killed
after the receiver got the notification but before the queue heard back sends it again once its
claim expires: receivers deduplicate on the delivery id (the same on every attempt).

Keys: ``<ns>:alerts:delivery:items`` (hash: delivery id → state), ``…:queue:<channel>`` (sorted
set by due time), ``…:dead:<alert id>`` (hash: delivery id → dead letter), ``…:claim:<id>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

import redis

from rag.alerts.claims import Claims
from rag.alerts.model import Alert

Outcome = Literal["retry", "dead"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One post (with its copies) notifying one alert through one channel."""

    id: str  # the delivery id, ``<channel>:<alert id>:<doc id>``: the same on every attempt
    alert: Alert
    hit: dict[str, Any]  # the search hit (the contract's shape) with its copies
    attempt: int = 1

    def text(self) -> str:
        """The notification as a short message (the bot sends this; webhooks get it too)."""
        hit = self.hit
        where = hit.get("channel_title") or (f"@{hit['channel']}" if hit.get("channel")
                                             else str(hit.get("channel_id", "")))
        lines = [f"🔔 «{self.alert.query}»", f"{where} · {_when(hit.get('date'))}",
                 hit.get("snippet") or "", hit.get("link") or ""]
        copies = hit.get("copies") or []
        if copies:
            lines.append("также в: " + ", ".join(
                f"{c.get('channel_title') or c.get('channel') or c.get('channel_id')} "
                f"{c.get('link', '')}".strip() for c in copies))
        return "\n".join(line for line in lines if line)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"delivery_id": self.id, "attempt": self.attempt, "alert": self.alert.to_dict(),
                "match": self.hit, "text": self.text(),
                "sent": datetime.now(UTC).isoformat(timespec="seconds")}


@runtime_checkable
class Notifier(Protocol):
    """Sends the notifications of one delivery channel.

    ``channel`` names the queue it consumes (``"webhook"``, ``"bot"``).  ``available()`` says
    whether this process can send right now (the bot: connected and holding the bot's claim); when
    it is false the queue is left alone, nothing is counted as a failure.  ``send`` delivers one
    notification or raises :class:`rag.errors.DeliveryFailed` (retried with backoff, then
    dead-lettered; any other exception counts the same).  Both are called from the dispatcher's
    thread, one notification at a time; ``send`` may block up to its own timeout (an asyncio
    client hands the coroutine to its loop: ``run_coroutine_threadsafe(...).result(timeout)``).
    """

    channel: str

    def available(self) -> bool: ...

    def send(self, notification: Notification) -> None: ...


@dataclass(slots=True)
class DeliveryItem:
    id: str
    channel: str
    alert_id: str
    tenant: str
    doc_id: str
    attempts: int = 0
    error: str | None = None
    queued: float = 0.0
    failed: float | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeliveryItem:
        data = json.loads(raw)
        # Fields a newer version added are ignored, so an older process can still read it.
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "post": self.doc_id,
                "attempts": self.attempts, "error": self.error,
                "queued": _iso(self.queued), "failed": _iso(self.failed)}


class DeliveryQueue:
    """The delivery keys' owner (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str, claim_ttl: float = 60.0) -> None:
        self._r = client
        self.prefix = f"{namespace}:alerts:delivery"
        self.items = f"{self.prefix}:items"
        self.claims = Claims(client, f"{self.prefix}:claim", claim_ttl)

    def _queue(self, channel: str) -> str:
        return f"{self.prefix}:queue:{channel}"

    def _dead(self, alert_id: str) -> str:
        return f"{self.prefix}:dead:{alert_id}"

    def enqueue(self, pipe: Any, alert: Alert, doc_id: str) -> None:
        """Queue the deliveries of one notification, on the caller's transaction ``pipe``."""
        now = time.time()
        for channel in alert.channels:
            item = DeliveryItem(f"{channel}:{alert.id}:{doc_id}", channel, alert.id,
                                alert.tenant, doc_id, queued=now)
            pipe.hsetnx(self.items, item.id, json.dumps(asdict(item), ensure_ascii=False))
            pipe.zadd(self._queue(channel), {item.id: now}, nx=True)

    def take(self, channel: str, limit: int = 16) -> list[DeliveryItem]:
        """Due deliveries of ``channel`` this process now holds a claim on, oldest first."""
        due = [_text(m) for m in self._r.zrangebyscore(self._queue(channel), "-inf", time.time(),
                                                        start=0, num=limit)]
        mine = self.claims.take(due)
        if not mine:
            return []
        raws = self._r.hmget(self.items, mine)
        items, lost = [], []
        for member, raw in zip(mine, raws, strict=True):
            if raw is None:  # delivered by someone whose claim had expired: nothing left to do
                lost.append(member)
                continue
            items.append(DeliveryItem.from_json(raw))
        if lost:
            self._r.zrem(self._queue(channel), *lost)
            self.claims.release(lost)
        return items

    def done(self, item: DeliveryItem) -> None:
        """Delivered (or no longer wanted: the alert was removed)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(self._queue(item.channel), item.id)
        pipe.hdel(self.items, item.id)
        pipe.execute()
        self.claims.release([item.id])

    def failed(self, item: DeliveryItem, error: str, max_attempts: int,
               backoff: float) -> Outcome:
        """Count a failed attempt: back in the queue after the backoff, or a dead letter."""
        item.attempts += 1
        item.error = error[:500]
        pipe = self._r.pipeline(transaction=True)
        if item.attempts >= max_attempts:
            item.failed = time.time()
            pipe.zrem(self._queue(item.channel), item.id)
            pipe.hdel(self.items, item.id)
            pipe.hset(self._dead(item.alert_id), item.id,
                      json.dumps(asdict(item), ensure_ascii=False))
            outcome: Outcome = "dead"
        else:
            due = time.time() + backoff * 2 ** (item.attempts - 1)
            pipe.hset(self.items, item.id, json.dumps(asdict(item), ensure_ascii=False))
            pipe.zadd(self._queue(item.channel), {item.id: due}, xx=True)
            outcome = "retry"
        pipe.execute()
        self.claims.release([item.id])
        return outcome

    def dead_letters(self, alert_id: str) -> list[DeliveryItem]:
        """The alert's dead letters, oldest failure first."""
        items = [DeliveryItem.from_json(raw)
                 for raw in self._r.hgetall(self._dead(alert_id)).values()]
        return sorted(items, key=lambda i: i.failed or 0)

    def requeue_dead(self, alert_id: str, channels: Sequence[str]) -> int:
        """Queue the alert's dead letters again (attempts from zero) for the channels it still
        has; the others are dropped.  Returns how many were queued."""
        dead = self.dead_letters(alert_id)
        if not dead:
            return 0
        now = time.time()
        pipe = self._r.pipeline(transaction=True)
        queued = 0
        for item in dead:
            pipe.hdel(self._dead(alert_id), item.id)
            if item.channel not in channels:
                continue
            item.attempts, item.error, item.failed, item.queued = 0, None, None, now
            pipe.hset(self.items, item.id, json.dumps(asdict(item), ensure_ascii=False))
            pipe.zadd(self._queue(item.channel), {item.id: now})
            queued += 1
        pipe.execute()
        return queued

    def pending(self, channel: str) -> int:
        return int(self._r.zcard(self._queue(channel)))

    def forget(self, alert_id: str) -> None:
        """Drop an alert's dead letters (the alert was removed; its queued items are dropped
        when their turn comes)."""
        self._r.delete(self._dead(alert_id))


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _when(date: str | None) -> str:
    return (date or "")[:16].replace("T", " ") + (" UTC" if date else "")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
