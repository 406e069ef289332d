"""Saved alerts and their matches in Redis (the owner of every ``<ns>:alerts:*`` key but the
outbox's and the delivery queues').

* ``<ns>:alerts:def`` — hash: alert id → the alert's record (JSON);
* ``<ns>:alerts:tenant:<tenant>`` — set: the ids of a tenant's alerts;
* ``<ns>:alerts:notified:<id>`` — hash: doc id → ``{"copy_of"}`` for every post that notified the
  alert or was attached to a notification as a copy: a post notifies an alert at most once, ever;
* ``<ns>:alerts:matches:<id>`` — sorted set: the notified posts (not their copies) by match time;
* ``<ns>:alerts:hits:<id>`` — hash: doc id → the search hit that notified (a snapshot, with the
  copies attached since), what ``GET /alerts/{id}/matches`` pages through.

:meth:`AlertStore.record` writes a pass's new matches in one ``MULTI`` guarded by ``WATCH`` on the
notified hash (and the caller adds the deliveries to the same transaction), so two processes
checking the same posts record each (alert, post) once, and a kill before ``EXEC`` records
nothing (the outbox entry is still there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from rag.alerts.model import Alert, is_alert_id
from rag.errors import InputError, NotFoundError

MAX_MATCHES_KEPT = 1000  # per alert, newest kept in the pull list; the notified marks stay
MAX_RECORD_RETRIES = 20

Enqueue = Callable[[Any, Alert, str], None]  # (transaction, alert, notified doc id)


@dataclass(slots=True)
class NewMatch:
    """A post to record as a notification of an alert, with the copies it brings along."""

    doc_id: str
    hit: dict[str, Any]  # PostHit.to_dict() with its copies
    copies: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Attached:
    """A post recorded as a copy of an earlier notification (no new notification)."""

    doc_id: str
    copy_of: str
    copy: dict[str, Any]  # PostHit.copy_dict()


class AlertStore:
    """The alert keys' owner (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.prefix = f"{namespace}:alerts"
        self.defs = f"{self.prefix}:def"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}"

    def notified_key(self, alert_id: str) -> str:
        return f"{self.prefix}:notified:{alert_id}"

    def _matches_key(self, alert_id: str) -> str:
        return f"{self.prefix}:matches:{alert_id}"

    def _hits_key(self, alert_id: str) -> str:
        return f"{self.prefix}:hits:{alert_id}"

    # -- alerts ---------------------------------------------------------------------------------

    def add(self, alert: Alert, limit: int) -> Alert:
        """Save a new alert; an :class:`InputError` when its tenant already has ``limit``."""
        key = self._tenant_key(alert.tenant)
        with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.scard(key) >= limit:
                        raise InputError(f"this tenant already has {limit} alerts",
                                         hint="remove one first (tgrag alerts remove ID or "
                                              "DELETE /alerts?id=ID)")
                    pipe.multi()
                    pipe.hset(self.defs, alert.id, json.dumps(alert.to_record(),
                                                              ensure_ascii=False))
                    pipe.sadd(key, alert.id)
                    pipe.execute()
                    return alert
                except redis.WatchError:
                    continue

    def get(self, alert_id: str, tenant: str) -> Alert:
        """The tenant's alert ``alert_id``; another tenant's does not exist for it."""
        alert = self.load(alert_id)
        if alert is None or alert.tenant != tenant:
            raise NotFoundError(f"no alert {alert_id!r}",
                                hint="list your alerts: tgrag alerts list or GET /alerts")
        return alert

    def load(self, alert_id: str) -> Alert | None:
        raw = self._r.hget(self.defs, alert_id) if is_alert_id(alert_id) else None
        return Alert.from_record(json.loads(raw)) if raw is not None else None

    def list(self, tenant: str) -> list[Alert]:
        """The tenant's alerts, oldest first."""
        ids = sorted(_text(i) for i in self._r.smembers(self._tenant_key(tenant)))
        raws = self._r.hmget(self.defs, ids) if ids else []
        alerts = [Alert.from_record(json.loads(r)) for r in raws if r is not None]
        return sorted((a for a in alerts if a.tenant == tenant), key=lambda a: a.created)

    def has_alerts(self, tenant: str) -> bool:
        return bool(self._r.scard(self._tenant_key(tenant)))

    def remove(self, alert_id: str, tenant: str) -> Alert:
        """Delete the tenant's alert and its matches (queued deliveries of it are dropped when
        their turn comes)."""
        alert = self.get(alert_id, tenant)
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(self.defs, alert.id)
        pipe.srem(self._tenant_key(tenant), alert.id)
        pipe.delete(self.notified_key(alert.id), self._matches_key(alert.id),
                    self._hits_key(alert.id))
        pipe.execute()
        return alert

    # -- matches --------------------------------------------------------------------------------

    def notified(self, alert_id: str, doc_ids: Sequence[str]) -> set[str]:
        """Which of ``doc_ids`` already notified the alert (or came along as a copy)."""
        if not doc_ids:
            return set()
        found = self._r.hmget(self.notified_key(alert_id), list(doc_ids))
        return {d for d, v in zip(doc_ids, found, strict=True) if v is not None}

    def recent(self, alert_id: str, since: float, limit: int) -> list[str]:
        """The alert's notified posts since ``since`` (unix seconds), newest first."""
        return [_text(m) for m in self._r.zrevrangebyscore(self._matches_key(alert_id), "+inf",
                                                            since, start=0, num=limit)]

    def hit(self, alert_id: str, doc_id: str) -> dict[str, Any] | None:
        raw = self._r.hget(self._hits_key(alert_id), doc_id)
        return json.loads(raw) if raw is not None else None

    def record(self, alert: Alert, plan: Callable[[set[str]], tuple[list[NewMatch],
                                                                     list[Attached]]],
               candidates: Sequence[str], enqueue: Enqueue) -> list[NewMatch]:
        """Record new matches exactly once; returns the notifications written.

        ``plan(already)`` gets the ``candidates`` that already notified and returns what to
        write: new notifications (with their copies) and posts attached to earlier ones.  It runs
        under ``WATCH`` of the notified hash and is re-run if another process wrote meanwhile;
        ``enqueue(transaction, alert, doc_id)`` adds each notification's deliveries to the same
        ``MULTI``.
        """
        key = self.notified_key(alert.id)
        with self._r.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RECORD_RETRIES):
                try:
                    pipe.watch(key)
                    found = pipe.hmget(key, list(candidates)) if candidates else []
                    already = {d for d, v in zip(candidates, found, strict=True) if v is not None}
                    new, attached = plan(already)
                    hits = self._attach(pipe, alert.id, attached)
                    if not new and not attached:
                        pipe.unwatch()
                        return []
                    now = time.time()
                    pipe.multi()
                    for match in new:
                        pipe.hset(key, match.doc_id, json.dumps({"copy_of": None}))
                        for copy in match.copies:
                            pipe.hset(key, copy, json.dumps({"copy_of": match.doc_id}))
                        pipe.hset(self._hits_key(alert.id), match.doc_id,
                                  json.dumps(match.hit, ensure_ascii=False))
                        pipe.zadd(self._matches_key(alert.id), {match.doc_id: now})
                        enqueue(pipe, alert, match.doc_id)
                    for a in attached:
                        pipe.hset(key, a.doc_id, json.dumps({"copy_of": a.copy_of}))
                    for doc_id, hit in hits.items():
                        pipe.hset(self._hits_key(alert.id), doc_id,
                                  json.dumps(hit, ensure_ascii=False))
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
            else:
                raise redis.WatchError(f"alert {alert.id}: gave up after "
                                       f"{MAX_RECORD_RETRIES} conflicting writers")
        if new:
            self._trim(alert.id)
        if self.load(alert.id) is None:  # removed meanwhile: leave nothing behind
            self._r.delete(key, self._matches_key(alert.id), self._hits_key(alert.id))
        return new

    def _attach(self, pipe: Any, alert_id: str, attached: Sequence[Attached]) -> dict[str, Any]:
        """The notified hits with the ``attached`` copies added (read under the caller's WATCH)."""
        hits: dict[str, Any] = {}
        for a in attached:
            if a.copy_of not in hits:
                raw = pipe.hget(self._hits_key(alert_id), a.copy_of)
                if raw is None:
                    continue  # trimmed from the pull list: only the mark is written
                hits[a.copy_of] = json.loads(raw)
            copies = hits[a.copy_of].setdefault("copies", [])
            if all(c.get("id") != a.doc_id for c in copies):
                copies.append(a.copy)
                copies.sort(key=lambda c: c.get("date") or "")
        return hits

    def _trim(self, alert_id: str) -> None:
        old = self._r.zrange(self._matches_key(alert_id), 0, -MAX_MATCHES_KEPT - 1)
        if old:
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self._matches_key(alert_id), *old)
            pipe.hdel(self._hits_key(alert_id), *old)
            pipe.execute()

    def matches(self, alert_id: str, k: int, offset: int) -> tuple[list[dict[str, Any]],
                                                                   int | None]:
        """Notified hits, newest first: ``k`` from ``offset``, and the next page's offset."""
        ids = [_text(m) for m in self._r.zrevrange(self._matches_key(alert_id), offset,
                                                    offset + k)]
        more = len(ids) > k
        ids = ids[:k]
        raws = self._r.hmget(self._hits_key(alert_id), ids) if ids else []
        hits = [json.loads(r) for r in raws if r is not None]
        return hits, (offset + k if more else None)

    def match_count(self, alert_id: str) -> int:
        return int(self._r.zcard(self._matches_key(alert_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
