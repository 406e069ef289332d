"""Retention: how long posts are kept, and pruning the older ones.

* ``TGRAG_RETENTION_DAYS`` applies to every channel (0 = keep forever); ``tgrag channels set C
  --keep-days N`` overrides it for one channel (``0`` = keep that channel forever, ``default`` =
  back to the setting).  The overrides are one Redis hash, ``<ns>:retention:keep_days`` (channel
  id → days, :class:`RetentionOverrides`), deployment-wide: a channel's override holds in every
  tenant that indexed it.
* :func:`plan_prune` finds, for every tenant's catalog and channel, the posts dated before the
  channel's cutoff (now − keep days): those the catalog lists, plus any the vector store still
  holds without a catalog entry (an ingest killed between its docstore commit and its catalog
  write), so nothing old stays searchable.
* :func:`prune` deletes them by id with :func:`ingest.deletion.delete_posts` — the order channel
  removal uses (store, docstore, catalog), each batch under the index's write lock — and a followed
  channel under its sync lock, so a sync never re-adds what is being deleted.  A kill -9 anywhere
  leaves each post whole or still listed (catalog, store) as old: running the prune again finds and
  finishes it.
* A sync does not index posts older than the channel's retention (``SyncResult.expired``), so a
  backfill does not bring back what a prune deleted; ``tgrag ingest`` and uploads index what they
  are given and the next prune removes what is too old.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from ingest.deletion import delete_posts
from ingest.telegram.state import ChannelRegistry, RedisLock
from rag.catalog import catalog_tenants
from rag.errors import InputError
from rag.ids import DEFAULT_TENANT, parse_doc_id
from rag.index import Index
from rag.settings import Settings
from rag.store import StoreFilter
from rag.store.base import DOC_ID_KEY

log = logging.getLogger("tgrag.retention")

DAY = 86400.0
PRUNE_BATCH = 256  # posts per deletion (one write-lock hold)
MAX_KEEP_DAYS = 100 * 365


def check_days(days: float, what: str) -> float:
    if not (isinstance(days, int | float) and math.isfinite(days)) or not \
            0 <= days <= MAX_KEEP_DAYS:
        raise InputError(f"{what} must be a number of days from 0 to {MAX_KEEP_DAYS}, got {days}",
                         hint="e.g. 30; 0 keeps the posts forever")
    return float(days)


class RetentionOverrides:
    """Per-channel retention in days (``<ns>:retention:keep_days``: channel id → days)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.key = f"{namespace}:retention:keep_days"

    def set(self, channel_id: int, days: float | None) -> None:
        """Keep the channel's posts ``days`` days (0 = forever); None = the global setting."""
        if days is None:
            self._r.hdel(self.key, str(channel_id))
        else:
            self._r.hset(self.key, str(channel_id), repr(check_days(days, "--keep-days")))

    def get(self, channel_id: int) -> float | None:
        raw = self._r.hget(self.key, str(channel_id))
        return float(raw) if raw is not None else None

    def all(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in self._r.hgetall(self.key).items()}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many days each channel's posts are kept (0 = forever)."""

    default_days: float = 0.0
    overrides: dict[int, float] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings, overrides: RetentionOverrides) -> RetentionPolicy:
        return cls(settings.retention_days, overrides.all())

    def keep_days(self, channel_id: int) -> float:
        return self.overrides.get(channel_id, self.default_days)

    def cutoff(self, channel_id: int, now: float | None = None) -> float | None:
        """Posts dated before this (unix seconds) are expired; None = kept forever."""
        days = self.keep_days(channel_id)
        if not days:
            return None
        return (time.time() if now is None else now) - days * DAY

    @property
    def active(self) -> bool:
        """Whether any channel's posts expire at all."""
        return bool(self.default_days) or any(self.overrides.values())


@dataclass
class ChannelPrune:
    """One channel of one tenant: what is expired and what the prune did with it."""

    tenant: str
    channel_id: int
    channel: str
    channel_title: str
    keep_days: float
    cutoff: int  # unix seconds: posts dated before it are expired
    posts: int  # posts the catalog lists for the channel
    expired: list[int] = field(default_factory=list)  # message ids, ascending
    deleted: int = 0
    status: str = "planned"  # planned | done | busy (a sync held the channel; next run)

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "channel_id": self.channel_id, "channel": self.channel,
                "channel_title": self.channel_title, "keep_days": self.keep_days,
                "cutoff": datetime.fromtimestamp(self.cutoff, UTC).isoformat(),
                "posts": self.posts, "expired": len(self.expired), "deleted": self.deleted,
                "status": self.status}


@dataclass
class PruneReport:
    channels: list[ChannelPrune]
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def expired(self) -> int:
        return sum(len(c.expired) for c in self.channels)

    @property
    def deleted(self) -> int:
        return sum(c.deleted for c in self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "expired": self.expired, "deleted": self.deleted,
                "seconds": round(self.seconds, 3),
                "channels": [c.to_dict() for c in self.channels]}


def plan_prune(index: Index, policy: RetentionPolicy, *, older_than: float | None = None,
               now: float | None = None) -> list[ChannelPrune]:
    """Every channel (of every tenant) whose posts expire, with its expired posts' ids.
    ``older_than`` (days) replaces every channel's retention for this run."""
    if older_than is not None:
        check_days(older_than, "--older-than")
        if not older_than:
            raise InputError("--older-than 0 would delete every post",
                             hint="give a number of days, e.g. --older-than 30")
    at = time.time() if now is None else now
    plans: list[ChannelPrune] = []
    for tenant in catalog_tenants(index.redis, index.namespace):
        view = index.for_tenant(tenant)
        for info in view.catalog.channels():
            days = older_than if older_than is not None else policy.keep_days(info.channel_id)
            if not days:
                continue
            cutoff = at - days * DAY
            expired = set(view.catalog.ids_dated_before(info.channel_id, cutoff))
            expired |= _stored_before(view, info.channel_id, cutoff)
            plans.append(ChannelPrune(
                tenant=tenant, channel_id=info.channel_id, channel=info.channel,
                channel_title=info.channel_title, keep_days=days, cutoff=int(cutoff),
                posts=info.posts, expired=sorted(expired)))
    return plans


def _stored_before(view: Index, channel_id: int, cutoff: float) -> set[int]:
    """Message ids of the channel's chunks in the store dated before ``cutoff``."""
    flt = StoreFilter(tenant=view.tenant, channel_ids=(channel_id,), until=math.ceil(cutoff) - 1)
    found: set[int] = set()
    for chunk in view.store.scroll(flt, fields=[DOC_ID_KEY]):
        try:
            _, _, message_id = parse_doc_id(chunk.doc_id)
        except InputError:
            continue
        found.add(message_id)
    return found


BatchCallback = Callable[[ChannelPrune, int], None]


def prune(index: Index, plans: Sequence[ChannelPrune], *, registry: ChannelRegistry | None = None,
          lock_wait: float | None = None, batch: int = PRUNE_BATCH,
          on_batch: BatchCallback | None = None) -> PruneReport:
    """Delete the planned posts (see the module docstring); blocking: run it in a thread from
    async code.  ``lock_wait``: seconds to wait for a followed channel's running sync (default
    ``TGRAG_SYNC_LOCK_TTL``); a channel still busy is skipped (status ``busy``)."""
    started = time.perf_counter()
    registry = registry or ChannelRegistry(index.redis, index.namespace)
    ttl = index.settings.sync_lock_ttl
    wait = ttl if lock_wait is None else lock_wait
    followed = {s.channel_id: s for s in registry.list() if s.channel_id is not None}
    for plan in plans:
        if not plan.expired:
            plan.status = "done"
            continue
        view = index.for_tenant(plan.tenant)
        # Syncs write the default tenant only: only its channels can have one running.
        state = followed.get(plan.channel_id) if plan.tenant == DEFAULT_TENANT else None
        lock: RedisLock | None = None
        if state is not None:
            lock = registry.lock(state.ref, ttl)
            if not lock.wait(wait):
                plan.status = "busy"
                log.warning("prune skipped %s: a sync holds it", state.ref)
                continue
        try:
            for start in range(0, len(plan.expired), batch):
                ids = plan.expired[start:start + batch]
                delete_posts(view, plan.channel_id, ids)
                plan.deleted += len(ids)
                if on_batch is not None:
                    on_batch(plan, len(ids))
                if lock is not None:
                    lock.renew()  # a long prune keeps the channel
            plan.status = "done"
        finally:
            if lock is not None:
                lock.release()
        log.info("pruned %d posts of channel %s (tenant %s)", plan.deleted, plan.channel_id,
                 plan.tenant)
    return PruneReport(list(plans), seconds=time.perf_counter() - started)
