"""Background job records in Redis, for every kind of job (uploads, Telegram syncs).

A record is one JSON value under ``<namespace>:<kind>:<id>``, rewritten after every step of the
job, so any API process can answer "how far is it?".  Records expire ``JOB_TTL`` after their last
write: a finished job stays visible for a week.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, is_dataclass
from typing import Any, Generic, Protocol, TypeVar

import redis

JOB_TTL = 7 * 24 * 3600
MAX_JOB_ID = 64  # longer ids are never ours: not even looked up


class JobRecord(Protocol):
    id: str


J = TypeVar("J", bound=JobRecord)


class JobStore(Generic[J]):
    """Job records of one ``kind`` (a dataclass ``record``), e.g. ``ingest_jobs`` or ``tg:job``."""

    def __init__(self, client: redis.Redis, namespace: str, kind: str, record: type[J]) -> None:
        if not is_dataclass(record):
            raise TypeError("job records are dataclasses")
        self._r = client
        self._prefix = f"{namespace}:{kind}:"
        self._record = record
        self._fields = {f.name for f in fields(record)}

    def save(self, job: J) -> None:
        data: dict[str, Any] = asdict(job)  # type: ignore[call-overload]
        self._r.set(self._prefix + job.id, json.dumps(data, ensure_ascii=False), ex=JOB_TTL)

    def load(self, job_id: str) -> J | None:
        """The job, or None when there is no such job (or it expired)."""
        raw = self._r.get(self._prefix + job_id) if len(job_id) <= MAX_JOB_ID else None
        if raw is None:
            return None
        data = json.loads(raw)
        # Fields a newer version added are ignored, so an old process can still read the record.
        return self._record(**{k: v for k, v in data.items() if k in self._fields})
