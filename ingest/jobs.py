"""Background ingestion of uploaded files (``POST /ingest/export``), with progress in Redis.

A job reads one uploaded file (a Telegram Desktop ``result.json``, the export folder zipped, or
a JSON/JSONL dump) with :func:`ingest.readers.read_paths` (a zip may unpack to no more than the
upload limit), stamps every post with the uploader's tenant
(``Post.tenant``, see ``rag.ids`` for the id rule) and runs the ordinary
:class:`~ingest.pipeline.PostPipeline`.  Progress (``new``/``updated``/``unchanged``/``skipped``)
is written to Redis after each batch, so ``GET /jobs/{id}`` works from any API process.  A file
of which nothing could be read ends ``failed``.  Messages name the upload by its own file name,
never by the server's temporary path.

The pipeline's batches take the index's write lock themselves, so an upload and a Telegram sync
interleave batch by batch instead of one waiting for the whole other.  Between two batches a job
calls ``between_batches`` (``ingest.upload_queue``: the next tenant's turn, a cancel, a
shutdown); an upload holding more than ``max_posts`` posts fails before anything is written.

Besides the records, :class:`IngestJobs` owns the set of jobs not ended yet (``<ns>:ingest_jobs
_active``, so a restart finds the interrupted ones) and the cancel requests (``<ns>:ingest_jobs
_cancel:<id>``, so a DELETE on any API process reaches the one running the job).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import redis

from ingest.documents import Post
from ingest.job_store import JOB_TTL, JobStore
from ingest.pipeline import PostPipeline
from ingest.readers import read_paths
from ingest.readers.base import ReadItem
from rag.errors import InputError, Interrupted, NotFoundError, NothingToRead, TgragError
from rag.settings import Settings

log = logging.getLogger("tgrag.ingest.jobs")
Status = Literal["queued", "running", "done", "failed", "cancelled"]
ENDED = frozenset({"done", "failed", "cancelled"})


def stamp_tenant(items: Iterable[ReadItem], tenant: str) -> Iterator[ReadItem]:
    """The items with every post owned by ``tenant`` (skipped records pass through)."""
    for item in items:
        yield replace(item, tenant=tenant) if isinstance(item, Post) else item


@dataclass(slots=True)
class IngestJob:
    id: str
    tenant: str
    filename: str
    status: Status = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    posts_read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    skipped_records: list[str] = field(default_factory=list)
    error: str | None = None
    resumed: int = 0  # times a restart took it up again
    cancel_requested: bool = False
    worker: str = ""  # the upload queue (one per API process) that holds it
    path: str = ""  # the uploaded file, until the job ends

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for private in ("tenant", "worker", "path"):
            data.pop(private)
        data["skipped_records"] = data["skipped_records"][:20]
        return data

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class IngestJobs:
    """Upload jobs (records in a :class:`JobStore`, kind ``ingest_jobs``), each visible to its
    tenant only; :meth:`run` ingests one through the pipeline the caller's factory makes."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.store: JobStore[IngestJob] = JobStore(client, namespace, "ingest_jobs", IngestJob)
        self._r = client
        self._active = f"{namespace}:ingest_jobs_active"
        self._cancel = f"{namespace}:ingest_jobs_cancel:"

    def create(self, tenant: str, filename: str, *, path: Path | None = None,
               worker: str = "") -> IngestJob:
        job = IngestJob(id=uuid.uuid4().hex, tenant=tenant, filename=filename,
                        path=str(path or ""), worker=worker)
        self.save(job)
        return job

    def save(self, job: IngestJob) -> None:
        self.store.save(job)
        if job.ended:
            self._r.srem(self._active, job.id)
            self._r.delete(self._cancel + job.id)
        else:
            self._r.sadd(self._active, job.id)

    def active(self) -> list[IngestJob]:
        """Jobs not ended yet, every tenant's (a restart looks for the interrupted ones)."""
        jobs = []
        for raw in self._r.smembers(self._active):
            job = self.store.load(raw.decode() if isinstance(raw, bytes) else str(raw))
            if job is None or job.ended:
                self._r.srem(self._active, raw)
            else:
                jobs.append(job)
        return jobs

    def request_cancel(self, job: IngestJob) -> None:
        self._r.set(self._cancel + job.id, b"1", ex=JOB_TTL)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self._r.exists(self._cancel + job_id))

    def get(self, job_id: str, tenant: str) -> IngestJob:
        job = self.store.load(job_id)
        if job is None or job.tenant != tenant:  # another tenant's job does not exist for you
            raise NotFoundError(f"no ingest job {job_id!r}",
                                hint="use the job_id returned by POST /ingest/export")
        return job

    def run(self, job: IngestJob, path: Path, pipeline: PostPipeline, *,
            between_batches: Callable[[], None] | None = None,
            max_posts: int | None = None) -> None:
        """Ingest ``path`` with ``pipeline`` (over the uploader's tenant view) as ``job``; never
        raises.  ``between_batches`` may raise :class:`~rag.errors.Interrupted`: ``cancelled``
        ends the job (what was committed stays), ``shutdown`` leaves it queued, file kept, for
        the next start to resume."""
        job.status, job.started = "running", time.time()
        self.save(job)

        def public(text: str) -> str:
            return text.replace(str(path), job.filename)

        keep_file = False
        try:
            items = read_capped(path, pipeline.index.settings, job.tenant, max_posts)
            job.posts_read = sum(1 for item in items if isinstance(item, Post))
            self.save(job)

            def progress(done: int, report: Any) -> None:
                job.new, job.updated = report.new, report.updated
                job.unchanged, job.skipped = report.unchanged, report.skipped
                self.save(job)
                if between_batches is not None:
                    between_batches()

            if between_batches is not None:
                between_batches()
            report = pipeline.ingest(items, on_progress=progress)
            job.new, job.updated = report.new, report.updated
            job.unchanged, job.skipped = report.unchanged, report.skipped
            job.skipped_records = [public(str(s)) for s in report.skipped_records]
            job.status = "done"
        except NothingToRead as err:
            job.skipped = len(err.problems)
            job.skipped_records = [public(f"{f}: file: {why}") for f, why in err.problems]
            job.status, job.error = "failed", public(str(err))
        except Interrupted as stop:
            if stop.reason == "shutdown":
                job.status, keep_file = "queued", True
            else:
                job.status = "cancelled"
        except TgragError as err:
            job.status, job.error = "failed", public(str(err))
        except Exception as exc:  # a job must end with a status, whatever happened
            log.exception("ingest job failed", extra={"job_id": job.id})
            job.status, job.error = "failed", public(f"{type(exc).__name__}: {exc}")
        finally:
            if not keep_file:
                job.finished = time.time()
                path.unlink(missing_ok=True)
                job.path = ""
            save_until_saved(self, job)


def read_capped(path: Path, settings: Settings, tenant: str,
                max_posts: int | None) -> list[ReadItem]:
    """The file's items, stamped with the tenant (a zip may unpack to no more than the upload
    limit); more than ``max_posts`` posts is an input error, raised as soon as the count passes
    it (reading stops there: a huge file costs no more memory than the cap allows)."""
    items: list[ReadItem] = []
    posts = 0
    read = read_paths([path], settings.max_post_chars,
                      max_unzipped_bytes=int(settings.max_upload_mb * 2**20))
    for item in stamp_tenant(read, tenant):
        if isinstance(item, Post):
            posts += 1
            if max_posts is not None and posts > max_posts:
                raise InputError(
                    f"the upload has more than {max_posts:,} posts; the limit per upload is "
                    f"{max_posts:,} (TGRAG_MAX_UPLOAD_POSTS)",
                    hint="split the file into several uploads, or raise TGRAG_MAX_UPLOAD_POSTS "
                    "on the server")
        items.append(item)
    return items


def save_until_saved(jobs: IngestJobs, job: IngestJob, tries: int = 20) -> None:
    """Save the job's last state even across a Redis restart (a job left ``running`` by a lost
    write would look alive forever)."""
    for attempt in range(tries):
        try:
            jobs.save(job)
            return
        except redis.ConnectionError:
            if attempt == tries - 1:
                log.error("could not save the end of an ingest job", extra={"job_id": job.id})
                return
            time.sleep(0.5)
