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
interleave batch by batch instead of one waiting for the whole other.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import redis

from ingest.documents import Post
from ingest.job_store import JobStore
from ingest.pipeline import PostPipeline
from ingest.readers import read_paths
from ingest.readers.base import ReadItem
from rag.errors import NotFoundError, NothingToRead, TgragError

log = logging.getLogger("tgrag.ingest.jobs")
Status = Literal["queued", "running", "done", "failed"]


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("tenant")
        data["skipped_records"] = data["skipped_records"][:20]
        return data


class IngestJobs:
    """Upload jobs (records in a :class:`JobStore`, kind ``ingest_jobs``), each visible to its
    tenant only; :meth:`run` ingests one through the pipeline the caller's factory makes."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.store: JobStore[IngestJob] = JobStore(client, namespace, "ingest_jobs", IngestJob)

    def create(self, tenant: str, filename: str) -> IngestJob:
        job = IngestJob(id=uuid.uuid4().hex, tenant=tenant, filename=filename)
        self.save(job)
        return job

    def save(self, job: IngestJob) -> None:
        self.store.save(job)

    def get(self, job_id: str, tenant: str) -> IngestJob:
        job = self.store.load(job_id)
        if job is None or job.tenant != tenant:  # another tenant's job does not exist for you
            raise NotFoundError(f"no ingest job {job_id!r}",
                                hint="use the job_id returned by POST /ingest/export")
        return job

    def run(self, job: IngestJob, path: Path, pipeline: PostPipeline) -> None:
        """Ingest ``path`` with ``pipeline`` (over the uploader's tenant view) as ``job``; never
        raises."""
        job.status, job.started = "running", time.time()
        self.save(job)

        def public(text: str) -> str:
            return text.replace(str(path), job.filename)

        settings = pipeline.index.settings
        try:
            items = list(stamp_tenant(
                read_paths([path], settings.max_post_chars,
                           max_unzipped_bytes=int(settings.max_upload_mb * 2**20)),
                job.tenant))
            job.posts_read = sum(1 for item in items if isinstance(item, Post))
            self.save(job)

            def progress(done: int, report: Any) -> None:
                job.new, job.updated = report.new, report.updated
                job.unchanged, job.skipped = report.unchanged, report.skipped
                self.save(job)

            report = pipeline.ingest(items, on_progress=progress)
            progress(0, report)
            job.skipped_records = [public(str(s)) for s in report.skipped_records]
            job.status = "done"
        except NothingToRead as err:
            job.skipped = len(err.problems)
            job.skipped_records = [public(f"{f}: file: {why}") for f, why in err.problems]
            job.status, job.error = "failed", public(str(err))
        except TgragError as err:
            job.status, job.error = "failed", public(str(err))
        except Exception as exc:  # a job must end with a status, whatever happened
            log.exception("ingest job failed", extra={"job_id": job.id})
            job.status, job.error = "failed", public(f"{type(exc).__name__}: {exc}")
        finally:
            job.finished = time.time()
            self.save(job)
            path.unlink(missing_ok=True)
