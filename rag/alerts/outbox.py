"""The alert outbox: the posts an ingest commits, recorded with the commit, checked afterwards.

The pipeline records ``(doc id, hash)`` of every post of a batch inside the batch's write lock,
*before* the docstore commit (``ingest.pipeline.PostPipeline``'s ``on_commit`` hook, wired by the
composition root), so a kill -9 anywhere after the commit leaves the entry for the next dispatcher
to take.  An entry is ready once the docstore holds that hash for that post:

* hash committed → check the post against its tenant's alerts, then drop the entry;
* not (yet) committed → leave it: the batch may still be committing (a few milliseconds), or it
  died before the commit, and then its re-run records the same entry again (``ZADD NX``: the same
  member).  An entry still not committed ``COMMIT_GRACE`` seconds after it was last recorded
  belongs to a batch that died or to an edit already superseded (whose own entry is checked), and
  is dropped.

Only posts of tenants that have alerts are recorded, so a deployment without alerts writes
nothing.  Keys (``<ns>`` = the collection's namespace): ``<ns>:alerts:outbox`` (a sorted set of
``<hash>|<doc id>`` by when it is due), ``<ns>:alerts:outbox:seen`` (last recorded, per entry)
and the claims ``<ns>:alerts:outbox:claim:<entry>`` (``rag.alerts.claims``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis

from rag.alerts.claims import Claims
from rag.ids import tenant_of_doc_id

COMMIT_GRACE = 120.0  # seconds; record → commit takes milliseconds (after the embedding)
RECHECK = 1.0  # seconds before an entry not committed yet is looked at again


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    doc_id: str
    hash: str
    recorded: float

    @property
    def member(self) -> str:
        return f"{self.hash}|{self.doc_id}"

    @property
    def tenant(self) -> str:
        return tenant_of_doc_id(self.doc_id)

    @classmethod
    def parse(cls, member: str, recorded: float) -> OutboxEntry:
        digest, _, doc_id = member.partition("|")
        return cls(doc_id, digest, recorded)


class Outbox:
    """The outbox keys' owner (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str, claim_ttl: float = 60.0) -> None:
        self._r = client
        self.key = f"{namespace}:alerts:outbox"
        self.seen_key = f"{self.key}:seen"
        self.claims = Claims(client, f"{self.key}:claim", claim_ttl)

    def record(self, posts: Iterable[tuple[str, str]]) -> int:
        """Add ``(doc id, hash)`` entries (an entry already there stays one); returns how many."""
        members = [f"{digest}|{doc_id}" for doc_id, digest in posts]
        if not members:
            return 0
        now = time.time()
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(self.key, dict.fromkeys(members, now))
        # The grace counts from the latest recording: a re-run after a crash must not find its
        # entry already expired while its commit is a few milliseconds away.
        pipe.hset(self.seen_key, mapping=dict.fromkeys(members, now))
        pipe.execute()
        return len(members)

    def take(self, limit: int = 64) -> list[OutboxEntry]:
        """Due entries this process now holds a claim on, oldest first."""
        due = [_text(m) for m in self._r.zrangebyscore(self.key, "-inf", time.time(),
                                                        start=0, num=limit)]
        mine = self.claims.take(due)
        if not mine:
            return []
        seen = self._r.hmget(self.seen_key, mine)
        return [OutboxEntry.parse(m, float(s) if s is not None else time.time())
                for m, s in zip(mine, seen, strict=True)]

    def done(self, entries: Sequence[OutboxEntry]) -> None:
        """Drop handled entries (and release their claims)."""
        if not entries:
            return
        members = [e.member for e in entries]
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(self.key, *members)
        pipe.hdel(self.seen_key, *members)
        pipe.execute()
        self.claims.release(members)

    def later(self, entries: Sequence[OutboxEntry], delay: float = RECHECK) -> None:
        """Look at these again in ``delay`` seconds (not committed yet)."""
        if not entries:
            return
        members = [e.member for e in entries]
        self._r.zadd(self.key, dict.fromkeys(members, time.time() + delay), xx=True)
        self.claims.release(members)

    def size(self) -> int:
        return int(self._r.zcard(self.key))


class OutboxRecorder:
    """The pipeline's commit hook: records the posts of tenants that have alerts, then calls
    ``wake`` (an in-process dispatcher looks at once instead of at its next poll)."""

    def __init__(self, outbox: Outbox, has_alerts: Callable[[str], bool],
                 wake: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.has_alerts = has_alerts
        self.wake = wake

    def __call__(self, posts: Sequence[tuple[str, str]]) -> None:
        wanted: dict[str, bool] = {}
        for doc_id, _ in posts:
            tenant = tenant_of_doc_id(doc_id)
            if tenant not in wanted:
                wanted[tenant] = self.has_alerts(tenant)
        if self.outbox.record((d, h) for d, h in posts if wanted[tenant_of_doc_id(d)]) and \
                self.wake is not None:
            self.wake()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
