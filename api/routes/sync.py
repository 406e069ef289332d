"""Followed channels and sync jobs: ``GET|POST|DELETE /channels``, ``POST /sync``,
``GET /sync/{job_id}`` (operator keys only: Telegram sync is deployment-wide).

``POST /sync`` starts a job as a task of the server's own event loop (Telethon, the sync and
FastAPI share it; nothing starts a loop of its own) and answers at once with the job id; job
progress lives in Redis, so ``GET /sync/{id}`` works from any API process.  The Telegram client
is the services' scheduler's, connected on first use; :func:`sync_lifespan` optionally runs the
periodic schedule inside the app and disconnects at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ServicesDep
from api.schemas import COMMON, OneOrMany, Problem, problems
from api.services import Services
from rag.errors import InputError
from rag.search import parse_date

router = APIRouter(tags=["sync"], responses={**COMMON, **problems(400, 403, 404, 503)})


class ChannelAdd(BaseModel):
    channel: str = Field(..., description="@username, t.me link or channel id.")
    group: bool = Field(False, description="Opt in to reading a group chat (supergroup or small "
                        "group): its members' messages are indexed with their senders. Private "
                        "chats are never read.")


class SyncRequest(BaseModel):
    channel: OneOrMany = Field(default_factory=list,
                               description="Channels (a list, or one); empty = all followed.")
    backfill: int | None = Field(None, ge=1, description="Also (re)read the last N messages.")
    since: str | None = Field(None, description="Read everything since YYYY-MM-DD[THH:MM] or unix.")


@router.get("/channels")
def list_channels(services: ServicesDep) -> dict[str, Any]:
    return {"channels": [s.to_dict() for s in services.channels()]}


@router.post("/channels", status_code=201)
def add_channel(body: ChannelAdd, services: ServicesDep) -> dict[str, Any]:
    return services.follow(body.channel, group=body.group).to_dict()


@router.delete("/channels", responses={409: {
    "model": Problem, "content": {"application/problem+json": {}},
    "description": "delete_posts=true: the channel is being synced (try again later)"}})
def remove_channel(
    services: ServicesDep,
    channel: Annotated[str, Query(description="@username, id or title of a followed channel.")],
    delete_posts: Annotated[bool, Query(
        description="Also delete the channel's posts from the index (also for a channel that is "
                    "indexed but not followed).")] = False,
) -> dict[str, Any]:
    """Stop following a channel; its posts stay searchable unless ``delete_posts=true``.

    Answers ``{"removed": <channel or null>, "channel_id", "deleted_posts": <n or null>}``.
    Deleting waits for a running sync of the channel (up to ``TGRAG_SYNC_LOCK_TTL`` seconds, then
    409).
    """
    return services.remove_channel(channel, delete_posts=delete_posts).to_dict()


@router.post("/sync", status_code=202)
async def start_sync(body: SyncRequest, services: ServicesDep) -> dict[str, Any]:
    if body.backfill and body.since:
        raise InputError("use either backfill or since, not both")
    since = datetime.fromtimestamp(parse_date(body.since), UTC) if body.since else None
    refs = [services.follow(c).ref for c in body.channel] or None
    scheduler = await services.scheduler()
    job = scheduler.trigger(refs, backfill=body.backfill, since=since)
    return {"job_id": job.id, "status": job.status, "channels_total": job.channels_total}


@router.get("/sync/{job_id}")
def sync_status(job_id: str, services: ServicesDep) -> dict[str, Any]:
    return services.sync_job(job_id).to_dict()


def telegram_configured(services: Services) -> bool:
    settings = services.settings
    if not (settings.tg_api_id and settings.tg_api_hash):
        return False
    # The reader imports Telethon (~0.5 s): only where an account is configured.
    from ingest.telegram.reader import SESSION_FILE

    return bool(settings.tg_session or (settings.data_dir / SESSION_FILE).exists())


@asynccontextmanager
async def sync_lifespan(services: Services) -> AsyncIterator[None]:
    """Inside the app's lifespan: runs the periodic schedule on the server's loop when
    ``TGRAG_SYNC_INTERVAL`` > 0 and Telegram is configured; stops it and disconnects at the end."""
    if services.settings.sync_interval > 0 and telegram_configured(services):
        (await services.scheduler()).start()
    try:
        yield
    finally:
        await services.stop_scheduler()
