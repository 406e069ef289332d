"""Scheduled digests: once a day (``TGRAG_DIGEST_SCHEDULE``), each recipient gets its tenant's
digest of the day before, through the sinks that can reach it (the bot today; webhooks plug in
as another :class:`DigestSink`).

Once a day, also across restarts: before a digest goes to a recipient, the delivery *claims*
``(day, recipient)`` in Redis (:class:`DigestLog`), and marks it ``sent`` afterwards.  A process
killed between the two leaves the claim (``sending``): the next process does not know whether the
message left, and does not send it again (at most once — a recipient may miss a day's digest,
never get it twice).  A send that fails with an error (Telegram down, a webhook answering 500) is
retried every ``retry`` seconds, at most ``max_attempts`` times, the same local day.  A process
that starts after the due moment sends the day's digest then (the same local day only), so a
restart at 09:05 does not lose the 09:00 digest.  Several processes may run the scheduler: the
claim is atomic, so each recipient's digest leaves once.

Keys (owner :class:`DigestLog`): ``<ns>:digest:sent:<YYYY-MM-DD>``, a hash recipient → JSON
``{"state": "sending"|"sent"|"empty"|"retry"|"failed", "attempts", "at", "error"}`` (``empty``: the
day had no posts for that tenant, so nothing was sent), expiring after :data:`KEEP_DAYS` days.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import redis

from rag.digest import Digest
from rag.digest_schedule import DigestSchedule

log = logging.getLogger("tgrag.digest")

KEEP_DAYS = 8
State = Literal["sending", "sent", "empty", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who gets a digest: a key unique across sinks (``bot:123456``), their tenant, language."""

    key: str
    tenant: str
    lang: str = "ru"
    address: Any = None  # what the sink sends to (a Telegram user id, a URL)


class DigestSink(Protocol):
    """One way to deliver digests (the bot; webhooks).

    ``available()``: whether this process can send now (the bot: connected and holding its
    claim); when false the sink is skipped this round, nothing is recorded.  ``recipients()``:
    who gets a digest.  ``send`` delivers one digest or raises (then retried, see the module
    docstring)."""

    channel: str

    def available(self) -> bool: ...

    async def recipients(self) -> list[Recipient]: ...

    async def send(self, recipient: Recipient, digest: Digest) -> None: ...


class DigestLog:
    """What the scheduled delivery sent, per local day (the key's owner; see the module
    docstring)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.prefix = f"{namespace}:digest:sent"

    def key(self, day: str) -> str:
        return f"{self.prefix}:{day}"

    def get(self, day: str, recipient: str) -> dict[str, Any] | None:
        raw = self._r.hget(self.key(day), recipient)
        return json.loads(raw) if raw else None

    def day(self, day: str) -> dict[str, dict[str, Any]]:
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v)
                for k, v in self._r.hgetall(self.key(day)).items()}

    def claim(self, day: str, recipient: str) -> dict[str, Any] | None:
        """Take ``(day, recipient)`` for one send (atomically); its record, or None when it was
        sent, is being (or was, by a process since killed) sent, or failed for good."""
        key = self.key(day)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, recipient)
                    record = json.loads(raw) if raw else {"attempts": 0}
                    if record.get("state") not in (None, "retry"):
                        pipe.unwatch()
                        return None
                    record.update(state="sending", attempts=int(record["attempts"]) + 1,
                                  at=int(time.time()))
                    pipe.multi()
                    pipe.hset(key, recipient, json.dumps(record))
                    pipe.expire(key, KEEP_DAYS * 86400)
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue  # another process changed the day's record: look again

    def finish(self, day: str, recipient: str, record: dict[str, Any], state: State,
               error: str | None = None) -> None:
        record = {**record, "state": state, "at": int(time.time()), "error": error}
        self._r.hset(self.key(day), recipient, json.dumps(record))


@dataclass(slots=True)
class DeliveryReport:
    """One round of a day's delivery."""

    day: str
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # this attempt failed (retry or for good)
    skipped: list[str] = field(default_factory=list)  # already done, or claimed elsewhere
    pending: bool = False  # something is left to retry (or a sink was unavailable)


Build = Callable[[str, int, int], Digest]  # (tenant, since, until) → the digest; blocking


class DigestScheduler:
    """Sends the day's digests at the scheduled moment (see the module docstring)."""

    def __init__(self, schedule: DigestSchedule, build: Build, digest_log: DigestLog,
                 sinks: Sequence[DigestSink], *, retry: float = 300.0, max_attempts: int = 3,
                 clock: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] | None = None) -> None:
        self.schedule = schedule
        self.build = build
        self.log = digest_log
        self.sinks = list(sinks)
        self.retry = retry
        self.max_attempts = max_attempts
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sleep = sleep or asyncio.sleep

    async def run(self) -> None:
        """Forever: deliver what is due today, then sleep until the next due moment (or the next
        retry); cancel the task to stop."""
        while True:
            now = self.clock()
            due = self.schedule.last_due(now)
            wait_until = self.schedule.next_due(now)
            if self.schedule.local_day(due) == self.schedule.local_day(now):
                try:
                    report = await self.deliver(due)
                except asyncio.CancelledError:
                    raise
                except Exception:  # e.g. Redis down: try again at the next retry
                    log.exception("digest delivery failed; retrying in %.0fs", self.retry)
                    report = DeliveryReport(self.schedule.day_key(due), pending=True)
                if report.pending:
                    wait_until = min(wait_until, now + timedelta(seconds=self.retry))
            await self.sleep(max(1.0, (wait_until - self.clock()).total_seconds()))

    async def deliver(self, due: datetime) -> DeliveryReport:
        """Send the digest of the day ending at ``due`` to every recipient still without it."""
        day = self.schedule.day_key(due)
        since, until = self.schedule.period(due)
        report = DeliveryReport(day)
        digests: dict[str, Digest] = {}
        for sink in self.sinks:
            if not sink.available():
                report.pending = True
                continue
            for recipient in await sink.recipients():
                record = self.log.claim(day, recipient.key)
                if record is None:
                    report.skipped.append(recipient.key)
                    continue
                try:
                    digest = digests.get(recipient.tenant)
                    if digest is None:
                        digest = await asyncio.to_thread(self.build, recipient.tenant, since,
                                                         until)
                        digests[recipient.tenant] = digest
                    if digest.stories:  # a day without posts sends nothing
                        await sink.send(recipient, digest)
                except asyncio.CancelledError:
                    # Stopped mid-send: whether it left is unknown, so the claim stays (at most
                    # once), exactly as if the process had been killed.
                    raise
                except Exception as exc:
                    final = int(record["attempts"]) >= self.max_attempts
                    self.log.finish(day, recipient.key, record, "failed" if final else "retry",
                                    f"{type(exc).__name__}: {exc}"[:300])
                    report.failed.append(recipient.key)
                    report.pending = report.pending or not final
                    log.warning("digest of %s for %s not delivered (attempt %d%s): %s", day,
                                recipient.key, record["attempts"],
                                ", giving up" if final else "", exc)
                    continue
                self.log.finish(day, recipient.key, record,
                                "sent" if digest.stories else "empty")
                report.sent.append(recipient.key)
        if report.sent:
            log.info("digest of %s sent to %d recipients", day, len(report.sent))
        return report

