"""Claims on queue entries: one process works on an entry at a time, a killed one's claims expire.

A claim is ``SET <prefix>:<entry> <token> NX PX <ttl>``: the first process to set it owns the entry
until it releases it (only with its own token, checked in Redis) or the TTL runs out.  The queues
(the alert outbox and the delivery queues) keep an entry until its work is done, so an entry whose
claimant died is simply taken again after the TTL; the work itself is idempotent.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import redis

_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class Claims:
    """The claims on the entries of one queue (keys ``<prefix>:<entry>``)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        self._r = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = secrets.token_hex(8)  # this process's (one per Claims object)

    def take(self, entries: Sequence[str]) -> list[str]:
        """The entries this process now holds (those nobody else holds)."""
        if not entries:
            return []
        pipe = self._r.pipeline(transaction=False)
        for entry in entries:
            pipe.set(f"{self.prefix}:{entry}", self.token, nx=True, px=self.ttl_ms)
        return [e for e, ok in zip(entries, pipe.execute(), strict=True) if ok]

    def release(self, entries: Sequence[str]) -> None:
        if not entries:
            return
        pipe = self._r.pipeline(transaction=False)
        for entry in entries:
            pipe.eval(_RELEASE, 1, f"{self.prefix}:{entry}", self.token)
        pipe.execute()
