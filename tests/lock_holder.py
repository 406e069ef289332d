"""Another worker holding a chat's sync lock while live edits and deletions wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ingest.telegram.state import ChannelRegistry
from rag.index import Index


class LockHolder:
    """Another worker syncing ``ref``: it holds the chat's sync lock while live updates retry.

    Once :meth:`spy` replaced ``asyncio.sleep``, each live retry (a sleep of a sixth of the lock's
    expiry) records ``probe()`` — what the index holds then — in ``retries`` and, at the retry
    :meth:`holds` was given, releases the lock (the other worker's sync ends).
    """

    def __init__(self, index: Index, ref: str, probe: Callable[[], Any]) -> None:
        self.lock = ChannelRegistry(index.redis, index.namespace).lock(ref, ttl=30)
        self.retry_delay = index.settings.sync_lock_ttl / 6
        self.probe = probe
        self.retries: list[Any] = []
        self.release_at = 0

    def holds(self, release_at: int = 0) -> None:
        """Take the lock now and release it at retry ``release_at`` (0: hold it through all)."""
        self.retries.clear()
        self.release_at = release_at
        assert self.lock.acquire()

    def spy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_sleep = asyncio.sleep

        async def spy_sleep(delay: float, result: Any = None) -> Any:
            if delay == self.retry_delay:
                self.retries.append(self.probe())
                if len(self.retries) == self.release_at:
                    self.lock.release()
            return await real_sleep(delay, result)

        monkeypatch.setattr(asyncio, "sleep", spy_sleep)
