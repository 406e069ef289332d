"""HTTP routes for followed channels and sync jobs: ``GET|POST|DELETE /channels``, ``POST /sync``,
``GET /sync/{job_id}``.

``POST /sync`` starts a job as a task of the server's own event loop (Telethon, the sync and
FastAPI share it; nothing starts a loop of its own) and answers at once with the job id; job
progress lives in Redis, so ``GET /sync/{id}`` works from any API process.  The Telegram client is
connected on first use and kept in ``app.state.tg_sync``; ``sync_lifespan`` optionally runs the
periodic scheduler inside the app and disconnects the client at shutdown.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field

from api.app import get_index
from api.schemas import Problem
from ingest.telegram.scheduler import JobRegistry, SyncScheduler
from ingest.telegram.state import ChannelRegistry
from rag.errors import InputError
from rag.index import Index

router = APIRouter()
IndexDep = Annotated[Index, Depends(get_index)]


class ChannelAdd(BaseModel):
    channel: str = Field(..., description="@username, t.me link or channel id.")


class SyncRequest(BaseModel):
    channel: list[str] = Field(default_factory=list, description="Channels; empty = all followed.")
    backfill: int | None = Field(None, ge=1, description="Also (re)read the last N messages.")
    since: str | None = Field(None, description="Read everything since YYYY-MM-DD[THH:MM] or unix.")


def _registry(index: Index) -> ChannelRegistry:
    return ChannelRegistry(index.redis, index.namespace)


@router.get("/channels")
def list_channels(index: IndexDep) -> dict[str, Any]:
    return {"channels": [s.to_dict() for s in _registry(index).list()]}


@router.post("/channels", status_code=201)
def add_channel(body: ChannelAdd, index: IndexDep) -> dict[str, Any]:
    return _registry(index).add(body.channel).to_dict()


@router.delete("/channels", responses={409: {
    "model": Problem, "content": {"application/problem+json": {}},
    "description": "delete_posts=true: the channel is being synced (try again later)"}})
def remove_channel(
    request: Request,
    index: IndexDep,
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
    from ingest.telegram.sync import remove_channel as remove

    return remove(index, channel, delete_posts=delete_posts,
                  write_lock=getattr(request.app.state, "write_lock", None)).to_dict()


@router.post("/sync", status_code=202)
async def start_sync(body: SyncRequest, request: Request, index: IndexDep) -> dict[str, Any]:
    if body.backfill and body.since:
        raise InputError("use either backfill or since, not both")
    since = None
    if body.since:
        from rag.search import parse_date

        since = datetime.fromtimestamp(parse_date(body.since), UTC)
    registry = _registry(index)
    refs = [registry.add(c).ref for c in body.channel] or None
    scheduler = await get_scheduler(request.app, index)
    job = scheduler.trigger(refs, backfill=body.backfill, since=since)
    return {"job_id": job.id, "status": job.status, "channels_total": job.channels_total}


@router.get("/sync/{job_id}")
def sync_status(job_id: str, index: IndexDep) -> dict[str, Any]:
    return JobRegistry(index.redis, index.namespace).get(job_id).to_dict()


async def get_scheduler(app: FastAPI, index: Index) -> SyncScheduler:
    """The app's scheduler over a connected, authorized client (created on first use)."""
    state = app.state
    if getattr(state, "tg_sync", None) is not None:
        return state.tg_sync
    if getattr(state, "tg_sync_lock", None) is None:
        state.tg_sync_lock = asyncio.Lock()
    async with state.tg_sync_lock:
        if getattr(state, "tg_sync", None) is None:
            state.tg_sync = await connect_scheduler(
                index, write_lock=getattr(state, "write_lock", None))
    return state.tg_sync


async def connect_scheduler(
    index: Index, *, receive_updates: bool = False, write_lock: threading.Lock | None = None
) -> SyncScheduler:
    """A scheduler over a connected, authorized client; ``write_lock`` serializes its index
    writes with the app's other writers (uploads, channel removals)."""
    from ingest.telegram.reader import make_client
    from ingest.telegram.sync import ChannelSync

    client = make_client(index.settings, receive_updates=receive_updates)
    await client.connect()
    if not await client.is_user_authorized():
        await client.disconnect()
        raise InputError("the Telegram session is not logged in (never, or logged out since)",
                         hint="run `tgrag login --save`, or set TGRAG_TG_SESSION to the string "
                              "`tgrag login` prints")
    return SyncScheduler(ChannelSync(index, client, write_lock=write_lock))


@asynccontextmanager
async def sync_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Enter inside the app's lifespan, after ``app.state.index`` is set: runs the periodic
    scheduler on the server's loop when ``TGRAG_SYNC_INTERVAL`` > 0 and Telegram credentials are
    set, and disconnects the client at shutdown."""
    index: Index = app.state.index
    settings = index.settings
    scheduler = None
    if settings.sync_interval > 0 and settings.tg_api_id and settings.tg_api_hash and (
        settings.tg_session or (settings.data_dir / "telegram.session").exists()
    ):
        scheduler = await get_scheduler(app, index)
        scheduler.start()
    try:
        yield
    finally:
        current: SyncScheduler | None = getattr(app.state, "tg_sync", None)
        if current is not None:
            await current.stop()
            await current.wait_jobs()
            disconnected = current.sync.client.disconnect()
            if disconnected is not None:
                await disconnected
            app.state.tg_sync = None
