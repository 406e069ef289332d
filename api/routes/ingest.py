"""``POST /ingest/export`` (upload a Telegram export or a JSON/JSONL dump), ``GET /jobs/{id}`` and
``DELETE /jobs/{id}`` (cancel).

The upload is streamed to a file in the data folder's ``uploads`` (never held in memory; kept
until its job ends, so a restart can resume it), refused with ``413`` past
``TGRAG_MAX_UPLOAD_MB`` (the gate, ``api.gate``, checks the key and stops reading the body at
that size before this route runs), and
ingested by a background job on the services' single upload thread
(:meth:`api.services.Services.submit_upload`).  The posts belong to the uploader's tenant.
"""

from __future__ import annotations

import shutil
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Response, UploadFile

from api.deps import ServicesDep
from api.gate import UPLOAD_PATH
from api.schemas import COMMON, JobAccepted, JobOut, problems
from ingest.readers.dump import JSONL_SUFFIXES
from rag.errors import InputError, UploadTooLarge
from rag.settings import Settings


def make_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["ingest"], responses=COMMON)
    limit = int(settings.max_upload_mb * 1024 * 1024)

    @router.post(UPLOAD_PATH, status_code=202, response_model=JobAccepted,
                 responses=problems(400, 413))
    def ingest_export(
        services: ServicesDep,
        file: Annotated[UploadFile, File(description="A Telegram Desktop export's result.json, "
                                         "the export folder zipped, or a JSON array / JSONL "
                                         "dump of posts.")],
    ) -> dict[str, Any]:
        """Upload posts; they are ingested in the background (poll ``status_url``)."""
        name = FilePath(file.filename or "upload.json").name
        suffix = FilePath(name).suffix.lower()
        if suffix not in {".json", ".zip", *JSONL_SUFFIXES}:
            suffix = ".json"  # the content decides the format; the suffix only flags JSONL
        path = services.upload_file(suffix)
        try:
            with path.open("wb") as out:
                shutil.copyfileobj(file.file, out, 1024 * 1024)
                size = out.tell()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if size == 0:
            path.unlink(missing_ok=True)
            raise InputError("the uploaded file is empty",
                             hint="upload result.json or a JSON/JSONL dump of posts")
        if size > limit:  # the body limit leaves room for multipart framing
            path.unlink(missing_ok=True)
            raise UploadTooLarge(size, limit)
        job, accepted = services.submit_upload(path, name)
        return {"job_id": job.id, "status": accepted["status"], "status_url": f"/jobs/{job.id}",
                "bytes": size}

    @router.get("/jobs/{job_id}", response_model=JobOut, responses=problems(404))
    def job_status(job_id: Annotated[str, Path(description="From POST /ingest/export.",
                                               max_length=64)],
                   services: ServicesDep) -> dict[str, Any]:
        """Status and progress (new/updated/unchanged/skipped) of an ingest job."""
        return services.upload_job(job_id).to_dict()

    @router.delete("/jobs/{job_id}", response_model=JobOut, responses={
        **problems(404), 202: {"model": JobOut, "description": "Running: it stops after its "
                               "current batch (cancel_requested is true)"}})
    def cancel_job(job_id: Annotated[str, Path(description="From POST /ingest/export.",
                                               max_length=64)],
                   services: ServicesDep, response: Response) -> dict[str, Any]:
        """Cancel an ingest job: a queued one ends ``cancelled`` at once (200), a running one
        after its current batch (202; posts committed so far stay).  An ended job is left as
        it is (200)."""
        job = services.cancel_upload(job_id)
        if job.cancel_requested and not job.ended:
            response.status_code = 202
        return job.to_dict()

    return router
