"""Background ingestion of uploaded files (``POST /ingest/export``), with progress in Redis.

A job reads one uploaded file (a Telegram Desktop ``result.json`` or a JSON/JSONL dump) with
:func:`ingest.readers.read_paths`, stamps every post with the uploader's tenant
(:class:`TenantPost`, see ``rag.tenants`` for the id rule) and runs the ordinary
:class:`~ingest.pipeline.PostPipeline`.  Progress (``new``/``updated``/``unchanged``/``skipped``)
is written to Redis after each batch, so ``GET /jobs/{id}`` works from any API process.

Writes are serialized by the caller's ``write_lock``: Qdrant's local client is not safe for
concurrent writers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis

from ingest.documents import Post, PostDocument
from ingest.readers import read_paths
from ingest.readers.base import ReadItem
from rag.errors import NotFoundError, TgragError
from rag.index import Index
from rag.tenants import DEFAULT_TENANT, tenant_doc_id

log = logging.getLogger("tgrag.ingest.jobs")
JOB_TTL = 7 * 24 * 3600
Status = Literal["queued", "running", "done", "failed"]


@dataclass(slots=True)
class TenantPost(Post):
    """A post owned by ``tenant``: its document id and payload carry the tenant.

    The default tenant's posts are plain posts (same id, same hash as a CLI ingest), so
    uploading what the CLI already ingested re-embeds nothing.
    """

    tenant: str = DEFAULT_TENANT

    @property
    def doc_id(self) -> str:
        return tenant_doc_id(self.tenant, self.channel_id, self.message_id)

    def to_document(self) -> PostDocument:
        doc = Post.to_document(self)
        if self.tenant != DEFAULT_TENANT:
            doc.id_ = self.doc_id
            doc.metadata["tenant"] = self.tenant
            # Never embedded nor shown to the LLM: the same text embeds the same for every tenant.
            doc.excluded_embed_metadata_keys.append("tenant")
            doc.excluded_llm_metadata_keys.append("tenant")
        return doc


def stamp_tenant(items: Iterable[ReadItem], tenant: str) -> Iterator[ReadItem]:
    """The items with every post owned by ``tenant`` (skipped records pass through)."""
    for item in items:
        if isinstance(item, Post) and tenant != DEFAULT_TENANT:
            values = {name: getattr(item, name) for name in Post.__dataclass_fields__}
            yield TenantPost(**values, tenant=tenant)
        else:
            yield item


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
    """Job records in Redis (``<namespace>:ingest_jobs:<id>``), each visible to its tenant only."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self._prefix = f"{namespace}:ingest_jobs:"

    def create(self, tenant: str, filename: str) -> IngestJob:
        job = IngestJob(id=uuid.uuid4().hex, tenant=tenant, filename=filename)
        self.save(job)
        return job

    def save(self, job: IngestJob) -> None:
        self._r.set(self._prefix + job.id, json.dumps(asdict(job), ensure_ascii=False),
                    ex=JOB_TTL)

    def get(self, job_id: str, tenant: str) -> IngestJob:
        raw = self._r.get(self._prefix + job_id) if len(job_id) <= 64 else None
        job = IngestJob(**json.loads(raw)) if raw else None
        if job is None or job.tenant != tenant:  # another tenant's job does not exist for you
            raise NotFoundError(f"no ingest job {job_id!r}",
                                hint="use the job_id returned by POST /ingest/export")
        return job

    def run(self, job: IngestJob, path: Path, index: Index, write_lock: threading.Lock) -> None:
        """Ingest ``path`` into ``index`` (a tenant view) as ``job``; never raises."""
        from ingest.llm_tagging import build_tagger
        from ingest.pipeline import PostPipeline

        job.status, job.started = "running", time.time()
        self.save(job)
        try:
            items = list(stamp_tenant(read_paths([path], index.settings.max_post_chars),
                                      job.tenant))
            job.posts_read = sum(1 for item in items if isinstance(item, Post))
            self.save(job)

            def progress(done: int, report: Any) -> None:
                job.new, job.updated = report.new, report.updated
                job.unchanged, job.skipped = report.unchanged, report.skipped
                self.save(job)

            with write_lock:
                pipeline = PostPipeline(index, tagger=build_tagger(index.settings, index.redis))
                report = pipeline.ingest(items, on_progress=progress)
            progress(0, report)
            job.skipped_records = [str(s) for s in report.skipped_records]
            job.status = "done"
        except TgragError as err:
            job.status, job.error = "failed", str(err)
        except Exception as exc:  # a job must end with a status, whatever happened
            log.exception("ingest job failed", extra={"job_id": job.id})
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            self.save(job)
            path.unlink(missing_ok=True)
