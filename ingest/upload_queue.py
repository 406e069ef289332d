"""The upload queue of one API process: fair between tenants, cancellable, and resumed after a
restart.

* **Fair.**  Each tenant's uploads run in order, one at a time; up to :data:`MAX_ACTIVE` tenants'
  jobs are admitted at once (round robin over the tenants waiting) and they take turns batch by
  batch (:class:`Turns`: one batch runs at a time, then the next job's).  A 10⁶-post upload no
  longer keeps another tenant's 2-post upload ``queued`` for hours: it waits one batch.
* **Cancellable.**  :meth:`UploadQueue.cancel`: a queued job ends ``cancelled`` at once, a running
  one after its current batch (what was committed stays, like a crash would leave it); the
  request is a Redis flag, so it reaches the job whichever API process runs it.
* **Resumed.**  Uploaded files live in ``data_dir/uploads`` until their job ends, and each job
  names the queue holding it; a queue proves it is alive with a heartbeat key.  At start (and
  every :data:`RECOVER_EVERY` seconds) a queue takes up the jobs whose queue is gone: a job with
  its file is queued again (``resumed`` + 1; posts committed before count as unchanged), one
  without is ``failed`` with a reason.  At shutdown running jobs stop after their batch and
  stay queued for the next start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ingest.jobs import IngestJob, IngestJobs, save_until_saved
from ingest.pipeline import PostPipeline
from rag.errors import Interrupted

log = logging.getLogger("tgrag.ingest.uploads")
MAX_ACTIVE = 4  # tenants' jobs admitted at once (each holds its parsed file in memory)
HEARTBEAT_TTL = 30
HEARTBEAT_EVERY = 10
RECOVER_EVERY = 60
ORPHAN_AGE = 3600  # an upload file no job names, older than this, is a crash's leftover
STOP_WAIT = 120.0


class UploadWorkers:
    """Heartbeats of the upload queues (key ``<ns>:upload_worker:<id>``, expiring): a job
    whose queue has none was interrupted."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self._prefix = f"{namespace}:upload_worker:"

    def beat(self, worker: str) -> None:
        self._r.set(self._prefix + worker, b"1", ex=HEARTBEAT_TTL)

    def alive(self, worker: str) -> bool:
        return bool(worker) and bool(self._r.exists(self._prefix + worker))

    def gone(self, worker: str) -> None:
        self._r.delete(self._prefix + worker)


class Turns:
    """One job's batch at a time, in the order they asked: a job takes a turn, runs a batch,
    and passes (to the back of the line)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._line: deque[str] = deque()
        self._holder: str | None = None

    def take(self, who: str) -> None:
        with self._cond:
            self._line.append(who)
            while self._holder is not None or self._line[0] != who:
                self._cond.wait()
            self._line.popleft()
            self._holder = who

    def release(self, who: str) -> None:
        with self._cond:
            if self._holder == who:
                self._holder = None
            elif who in self._line:
                self._line.remove(who)
            self._cond.notify_all()

    def pass_turn(self, who: str) -> None:
        self.release(who)
        self.take(who)


@dataclass
class _Entry:
    job: IngestJob
    path: Path
    pipeline: Callable[[], PostPipeline]


class UploadQueue:
    """See the module docstring.  ``pipeline_for(tenant)`` makes THE pipeline for a tenant."""

    def __init__(self, jobs: IngestJobs, workers: UploadWorkers, upload_dir: Path,
                 pipeline_for: Callable[[str], PostPipeline], *, max_posts: int) -> None:
        self.jobs = jobs
        self.workers = workers
        self.upload_dir = upload_dir
        self.pipeline_for = pipeline_for
        self.max_posts = max_posts
        self.id = uuid.uuid4().hex
        self.turns = Turns()
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[_Entry]] = {}
        self._order: deque[str] = deque()  # tenants with waiting jobs, round robin
        self._running: dict[str, tuple[str, threading.Thread]] = {}  # tenant → (job id, thread)
        self._stopping = threading.Event()
        self._beater: threading.Thread | None = None

    # -- submitting -------------------------------------------------------------------------

    def new_file(self, suffix: str) -> Path:
        """A fresh path for an upload in the upload folder (created, empty, private)."""
        self.upload_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.upload_dir / f"tgrag-upload-{uuid.uuid4().hex}{suffix}"
        path.touch(mode=0o600)
        return path

    def submit(self, tenant: str, filename: str, path: Path) -> tuple[IngestJob, dict[str, Any]]:
        """Queue ``path``; the job, and its state as accepted (taken before a thread may start
        changing the same object)."""
        self.workers.beat(self.id)
        job = self.jobs.create(tenant, filename, path=path, worker=self.id)
        accepted = job.to_dict()
        self._enqueue(_Entry(job, path, lambda: self.pipeline_for(tenant)))
        return job, accepted

    def _enqueue(self, entry: _Entry) -> None:
        with self._lock:
            tenant = entry.job.tenant
            self._waiting.setdefault(tenant, deque()).append(entry)
            if tenant not in self._order:
                self._order.append(tenant)
        self._admit()

    def _admit(self) -> None:
        """Start the next waiting job of each tenant in turn, while there is room."""
        with self._lock:
            if self._stopping.is_set():
                return
            for _ in range(len(self._order)):
                if len(self._running) >= MAX_ACTIVE:
                    return
                tenant = self._order[0]
                self._order.rotate(-1)
                if tenant in self._running:
                    continue
                entry = self._waiting[tenant].popleft()
                if not self._waiting[tenant]:
                    del self._waiting[tenant]
                    self._order.remove(tenant)
                thread = threading.Thread(target=self._run, args=(entry,), daemon=True,
                                          name=f"tgrag-upload-{entry.job.id[:8]}")
                self._running[tenant] = (entry.job.id, thread)
                thread.start()

    def _run(self, entry: _Entry) -> None:
        job = entry.job
        try:
            self.turns.take(job.id)
            try:
                if self.jobs.cancel_requested(job.id):
                    job.status, job.finished = "cancelled", time.time()
                    entry.path.unlink(missing_ok=True)
                    job.path = ""
                    save_until_saved(self.jobs, job)
                    return

                def check() -> None:
                    if self.jobs.cancel_requested(job.id):
                        raise Interrupted("cancelled")
                    if self._stopping.is_set():
                        raise Interrupted("shutdown")

                def between_batches() -> None:
                    check()
                    self.turns.pass_turn(job.id)
                    check()  # things may have changed while the others had their turns

                self.jobs.run(job, entry.path, entry.pipeline(), between_batches=between_batches,
                              max_posts=self.max_posts)
            finally:
                self.turns.release(job.id)
        except Exception:  # never lose the queue's thread bookkeeping over one job
            log.exception("upload job crashed", extra={"job_id": job.id})
        finally:
            with self._lock:
                self._running.pop(job.tenant, None)
            self._admit()

    # -- cancelling -------------------------------------------------------------------------

    def cancel(self, job: IngestJob) -> IngestJob:
        """Cancel ``job`` (already checked to be the caller's): a job waiting here ends now;
        a running one (here or in another process) at its next batch."""
        if job.ended:
            return job
        with self._lock:
            waiting = self._waiting.get(job.tenant, deque())
            entry = next((e for e in waiting if e.job.id == job.id), None)
            if entry is not None:
                waiting.remove(entry)
                if not waiting:
                    self._waiting.pop(job.tenant, None)
                    with contextlib.suppress(ValueError):
                        self._order.remove(job.tenant)
        if entry is not None:
            entry.path.unlink(missing_ok=True)
            job.status, job.finished, job.path = "cancelled", time.time(), ""
            self.jobs.save(job)
            return job
        self.jobs.request_cancel(job)
        job.cancel_requested = True
        return job

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Heartbeat, and take up the jobs of queues that are gone (ours of a previous run)."""
        self.workers.beat(self.id)
        self.recover()
        self._beater = threading.Thread(target=self._beat, daemon=True,
                                        name="tgrag-upload-heartbeat")
        self._beater.start()

    def _beat(self) -> None:
        last_recover = time.monotonic()
        while not self._stopping.wait(HEARTBEAT_EVERY):
            try:
                self.workers.beat(self.id)
                if time.monotonic() - last_recover > RECOVER_EVERY:
                    last_recover = time.monotonic()
                    self.recover()
            except redis.RedisError as exc:  # Redis restarting: beat again next time
                log.warning("upload heartbeat failed", extra={"error": str(exc)})

    def recover(self) -> None:
        """Requeue (or fail) the jobs whose queue is gone; remove leftover upload files."""
        named: set[str] = set()
        for job in self.jobs.active():
            if job.path:
                named.add(job.path)
            if job.worker == self.id or self.workers.alive(job.worker):
                continue
            path = Path(job.path) if job.path else None
            if path is not None and path.is_file():
                log.warning("resuming an interrupted upload job", extra={"job_id": job.id})
                job.status, job.worker, job.resumed = "queued", self.id, job.resumed + 1
                job.started = job.finished = None
                job.new = job.updated = job.unchanged = job.skipped = 0
                self.jobs.save(job)
                self._enqueue(_Entry(job, path, lambda t=job.tenant: self.pipeline_for(t)))
            else:
                job.status, job.finished = "failed", time.time()
                job.error = ("interrupted by a server restart, and its uploaded file is gone; "
                             "upload it again (posts committed before count as unchanged)")
                self.jobs.save(job)
        if self.upload_dir.is_dir():
            for leftover in self.upload_dir.iterdir():
                with contextlib.suppress(OSError):
                    if (str(leftover) not in named
                            and time.time() - leftover.stat().st_mtime > ORPHAN_AGE):
                        leftover.unlink()

    def close(self) -> None:
        """Stop: running jobs end their batch and stay queued (resumed at the next start)."""
        self._stopping.set()
        with self._lock:
            threads = [t for _, t in self._running.values()]
        deadline = time.monotonic() + STOP_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(redis.RedisError):
            self.workers.gone(self.id)  # the next start need not wait for the key to expire
