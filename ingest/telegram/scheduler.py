"""Sync jobs and the periodic scheduler, both plain asyncio tasks on the caller's running loop.

A job is one run over some channels, with progress in Redis (any process can answer
``GET /sync/{id}``).  The scheduler starts a job every ``sync_interval`` seconds; it runs inside
the API's event loop or in ``tgrag worker`` — never in a loop of its own.  After each scheduled
run it awaits ``after_run`` (the composition root passes the retention prune,
``Services.scheduled_prune``), whose failure is logged and never stops the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import redis

from ingest.job_store import JobStore
from ingest.telegram.sync import ChannelSync, SyncResult
from rag.errors import NotFoundError

log = logging.getLogger("tgrag.scheduler")


@dataclass
class SyncJob:
    id: str
    status: str = "queued"  # queued | running | done | failed
    channels_total: int = 0
    channels_done: int = 0
    channels_failed: int = 0
    posts: int = 0  # new + updated posts
    deleted: int = 0
    embedded_nodes: int = 0
    created: int = 0
    started: int | None = None
    finished: int | None = None
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobRegistry:
    """Sync jobs (records in a :class:`JobStore`, kind ``tg:job``)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.store: JobStore[SyncJob] = JobStore(client, namespace, "tg:job", SyncJob)

    def create(self, channels_total: int) -> SyncJob:
        job = SyncJob(id=secrets.token_hex(8), channels_total=channels_total,
                      created=int(time.time()))
        self.save(job)
        return job

    def save(self, job: SyncJob) -> None:
        self.store.save(job)

    def get(self, job_id: str) -> SyncJob:
        job = self.store.load(job_id)
        if job is None:
            raise NotFoundError(f"sync job {job_id!r} does not exist (or expired)")
        return job


class SyncScheduler:
    """Starts sync jobs on demand (``trigger``) and every ``interval`` seconds (``start``);
    ``on_result`` is told each channel's result as the jobs go (``tgrag worker`` prints them)."""

    def __init__(
        self,
        sync: ChannelSync,
        interval: float | None = None,
        on_result: Callable[[SyncResult], None] | None = None,
        after_run: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.sync = sync
        self.on_result = on_result
        self.after_run = after_run
        self.interval = sync.settings.sync_interval if interval is None else interval
        self.jobs = JobRegistry(sync.registry.redis, sync.registry.namespace)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._job_tasks: set[asyncio.Task[Any]] = set()

    def trigger(
        self,
        channels: list[str] | None = None,
        *,
        backfill: int | None = None,
        since: datetime | None = None,
    ) -> SyncJob:
        """Start a job in the background on the running loop; returns it at once (``queued``)."""
        refs = channels if channels is not None else [s.ref for s in self.sync.registry.list()]
        job = self.jobs.create(len(refs))
        task = asyncio.get_running_loop().create_task(
            self.run_job(job, refs, backfill=backfill, since=since)
        )
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)
        return job

    async def run_job(
        self, job: SyncJob, refs: list[str], *, backfill: int | None = None,
        since: datetime | None = None,
    ) -> SyncJob:
        job.status, job.started = "running", int(time.time())
        self.jobs.save(job)

        def progress(result: SyncResult) -> None:
            job.channels_done += 1
            job.channels_failed += result.status == "failed"
            job.posts += result.new + result.updated
            job.deleted += result.deleted
            job.embedded_nodes += result.embedded_nodes
            job.results.append(result.to_dict())
            self.jobs.save(job)
            if self.on_result is not None:
                self.on_result(result)

        try:
            await self.sync.sync_all(refs, backfill=backfill, since=since, on_result=progress)
        except Exception as exc:  # sync_all isolates channels; this is Redis or a bug
            log.exception("sync job %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            job.status = "done"
        job.finished = int(time.time())
        self.jobs.save(job)
        return job

    async def run_once(self) -> SyncJob:
        refs = [s.ref for s in self.sync.registry.list()]
        return await self.run_job(self.jobs.create(len(refs)), refs)

    async def run_forever(self) -> None:
        """A job now, then one every ``interval`` seconds until ``stop()``."""
        while True:
            try:
                await self.run_once()
            except Exception:  # keep the schedule alive (e.g. Redis briefly down)
                log.exception("scheduled sync failed")
            if self.after_run is not None:
                try:
                    await self.after_run()
                except Exception:
                    log.exception("the work after the scheduled sync failed")
            if self.interval <= 0 or self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def start(self) -> asyncio.Task[None]:
        """Run the schedule as a task of the running loop (e.g. from a FastAPI lifespan)."""
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.run_forever())
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_jobs(self) -> None:
        """Wait for the triggered jobs (tests, graceful shutdown)."""
        while self._job_tasks:
            await asyncio.gather(*list(self._job_tasks), return_exceptions=True)
