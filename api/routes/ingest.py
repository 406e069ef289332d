"""``POST /ingest/export`` (upload a Telegram export or a JSON/JSONL dump) and ``GET /jobs/{id}``.

The upload is streamed to a temporary file (never held in memory), refused with ``413`` past
``TGRAG_MAX_UPLOAD_MB`` (the route's body limit stops reading at that size), and ingested by a
background job on the app's single ingest thread, so ingest writes never run concurrently
(Qdrant's local client is not safe for concurrent writers).  The posts belong to the uploader's
tenant.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Request, UploadFile

from api.deps import IndexDep
from api.schemas import COMMON, JobAccepted, JobOut, problems
from ingest.jobs import IngestJobs
from ingest.readers.dump import JSONL_SUFFIXES
from rag.errors import InputError
from rag.index import Index
from rag.settings import Settings

MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file


def _jobs(index: Index) -> IngestJobs:
    return IngestJobs(index.redis, index.namespace)


def make_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["ingest"], responses=COMMON)
    limit = int(settings.max_upload_mb * 1024 * 1024)

    @router.post("/ingest/export", status_code=202, response_model=JobAccepted,
                 responses=problems(400, 413), max_body_size=limit + MULTIPART_SLACK)
    def ingest_export(
        request: Request,
        index: IndexDep,
        file: Annotated[UploadFile, File(description="A Telegram Desktop export's result.json, "
                                         "or a JSON array / JSONL dump of posts.")],
    ) -> dict[str, Any]:
        """Upload posts; they are ingested in the background (poll ``status_url``)."""
        name = FilePath(file.filename or "upload.json").name
        suffix = FilePath(name).suffix.lower()
        if suffix not in {".json", *JSONL_SUFFIXES}:
            suffix = ".json"  # the content decides the format; the suffix only flags JSONL
        with tempfile.NamedTemporaryFile("wb", suffix=suffix, prefix="tgrag-upload-",
                                         delete=False) as out:
            shutil.copyfileobj(file.file, out, 1024 * 1024)
            size = out.tell()
        path = FilePath(out.name)
        if size == 0:
            path.unlink(missing_ok=True)
            raise InputError("the uploaded file is empty",
                             hint="upload result.json or a JSON/JSONL dump of posts")
        if size > limit:  # the body limit leaves room for multipart framing
            path.unlink(missing_ok=True)
            raise UploadTooLarge(size, limit)
        jobs = _jobs(index)
        job = jobs.create(index.tenant, name)
        state = request.app.state
        state.ingest_executor.submit(jobs.run, job, path, index, state.write_lock)
        return {"job_id": job.id, "status": job.status, "status_url": f"/jobs/{job.id}",
                "bytes": size}

    @router.get("/jobs/{job_id}", response_model=JobOut, responses=problems(404))
    def job_status(job_id: Annotated[str, Path(description="From POST /ingest/export.",
                                               max_length=64)],
                   index: IndexDep) -> dict[str, Any]:
        """Status and progress (new/updated/unchanged/skipped) of an ingest job."""
        return _jobs(index).get(job_id, index.tenant).to_dict()

    return router


class UploadTooLarge(InputError):
    http_status = 413
    title = "Upload too large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the upload is {size} bytes; the limit is {limit} bytes",
                         hint="split the export or raise TGRAG_MAX_UPLOAD_MB")
