"""Channel sync: incremental reads from a saved cursor, a re-scan window for edits and deletions.

``ChannelSync.sync_channel`` for one channel, under a per-channel Redis lock so that several
workers never sync the same channel at once:

1. read new messages after the cursor (``iter_messages(min_id=cursor, reverse=True)``), or the last
   N posts (``backfill``) or everything since a date (``since``), and ingest them in batches; the
   cursor is saved only after a batch is committed, so a restart re-reads at most one batch and the
   pipeline's hashes make that re-read free (nothing is embedded twice);
2. re-scan the recent window of what earlier runs indexed (the last ``sync_rescan_posts`` posts
   and all posts of the last ``sync_rescan_days``, up to the cursor the run began at): edited posts
   are re-ingested (re-embedded only if their text changed) and window posts Telegram no longer
   returns are deleted from Qdrant, the docstore and the catalog.

:func:`remove_channel` stops following a channel and, if asked, deletes its posts, under the same
lock, so a sync of that channel is never running (and re-adding posts) while they are deleted.
Live edits and deletions of channel posts (``ChannelSync.apply_edit`` / ``apply_deletion``, called
by ``ingest.telegram.live``) and of group chats' messages (``resync_group``) also work under that
lock and re-read the registry under it: they never interleave with a sync's writes, and an edit
never brings back a post of a channel removed meanwhile.

The ingestion pipeline is synchronous (embedding is CPU work), so it runs in a thread via
``asyncio.to_thread``; Telethon, this code, the scheduler and FastAPI share one event loop and
nothing here calls ``asyncio.run``.

Group chats (followed with ``--group``) are read as windows of messages by
``ingest.telegram.group_sync`` under the same lock, cursor and listener; a private chat is never
read.  Posts older than the channel's retention (``ingest.retention``) are not indexed
(``expired``), and a channel's first sync starts at its retention's cutoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from telethon import TelegramClient, errors

from ingest.deletion import delete_channel, delete_posts
from ingest.documents import Post
from ingest.pipeline import IngestReport, PostPipeline
from ingest.retention import RetentionOverrides, RetentionPolicy
from ingest.telegram.group_sync import GroupSync
from ingest.telegram.reader import ChannelRef, TelegramReader
from ingest.telegram.state import ChannelRegistry, ChannelState
from rag.errors import Busy, InputError, NotFoundError, TgragError
from rag.index import Index

log = logging.getLogger("tgrag.sync")

# (channel ref, event, details): "flood_wait", "retry", "batch", "deleted", "failed", "done",
# and "live" from the live handlers ({"new", "updated"} | {"edited", "reindexed"} | {"deleted"})
SyncListener = Callable[[str, str, dict[str, Any]], None]

# Errors that are about the channel, not the connection: mark it failed and go on with the others.
CHANNEL_ERRORS: tuple[type[BaseException], ...] = (
    errors.ChannelPrivateError, errors.UsernameInvalidError, errors.UsernameNotOccupiedError,
    errors.ChannelInvalidError, errors.ChannelPublicGroupNaError,
)
MAX_FLOOD_WAITS = 10  # per channel and run; Telegram keeps asking to wait → give up, retry next run


@dataclass
class SyncResult:
    ref: str
    channel_id: int | None = None
    channel: str = ""
    # ok | failed | busy (another worker holds the channel's lock) | removed (unfollowed meanwhile)
    # | unread (a live edit of a message past the cursor: an incremental sync reads it)
    status: str = "ok"
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # service messages and media-only posts
    expired: int = 0  # posts older than the channel's retention: not indexed
    deleted: int = 0
    embedded_nodes: int = 0
    flood_waits: list[int] = field(default_factory=list)
    retries: int = 0
    error: str | None = None

    def add(self, report: IngestReport) -> None:
        self.new += report.new
        self.updated += report.updated
        self.unchanged += report.unchanged
        self.skipped += report.skipped
        self.embedded_nodes += report.embedded_nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EditResult(SyncResult):
    """What :meth:`ChannelSync.apply_edit` did; ``post_id`` is the edited post's id (an album's
    first message), once it was fetched."""

    post_id: int | None = None


R = TypeVar("R", bound=SyncResult)


class ChannelFailed(Exception):
    """This channel cannot be synced now (private, unknown, gave up); the reason is user-facing."""


class ChannelSync:
    """Syncs registered channels into an opened :class:`Index` through a connected client.

    ``pipeline`` is the process's one pipeline (``api.services.Services.pipeline``), so synced
    posts are tagged exactly like uploaded or CLI-ingested ones.  Its batches and the deletions
    take the index's write lock themselves, in the worker thread they run in.
    """

    def __init__(
        self,
        index: Index,
        client: TelegramClient,
        *,
        pipeline: PostPipeline,
        registry: ChannelRegistry | None = None,
        listener: SyncListener | None = None,
    ) -> None:
        self.index = index
        self.client = client
        self.settings = index.settings
        self.pipeline = pipeline
        self.registry = registry or ChannelRegistry(index.redis, index.namespace)
        self.listener = listener
        self.retention = RetentionOverrides(index.redis, index.namespace)
        self.groups = GroupSync(self)
        # Flood waits must reach us (to be reported and resumed from the cursor), not be slept
        # through silently inside Telethon.
        client.flood_sleep_threshold = 0

    # -- public ---------------------------------------------------------------------------------

    async def sync_all(
        self,
        refs: Iterable[str] | None = None,
        *,
        backfill: int | None = None,
        since: datetime | None = None,
        on_result: Callable[[SyncResult], None] | None = None,
    ) -> list[SyncResult]:
        """Sync the given (or all registered) channels one after another; failures are isolated.

        Sequential on purpose: one account's requests share one flood budget; sync scales out by
        running more workers, which split the channels through the per-channel locks.
        """
        targets = list(refs) if refs is not None else [s.ref for s in self.registry.list()]
        results = []
        for ref in targets:
            # Callers register the channels they name; one removed since then stays removed.
            result = await self.sync_channel(ref, backfill=backfill, since=since, register=False)
            results.append(result)
            if on_result:
                on_result(result)
        return results

    async def sync_channel(
        self,
        ref: str | int,
        backfill: int | None = None,
        since: datetime | None = None,
        *,
        rescan: bool = True,
        register: bool = True,
    ) -> SyncResult:
        """Sync one channel (registering it if needed and ``register``; else a channel that is not
        followed gives status ``removed``). Never raises for channel-level errors."""
        state = self.registry.get(ref)
        if state is None:
            if not register:
                return SyncResult(ref=str(ref), status="removed")
            state = self.registry.add(ref)
        result = SyncResult(ref=state.ref, channel_id=state.channel_id, channel=state.channel)
        async with self._locked(state.ref) as held:
            if not held:
                result.status = "busy"
                return result
            fresh = self.registry.get(state.ref)  # fresh cursor, read under the lock
            if fresh is None:  # removed (maybe with its posts) while we waited
                result.status = "removed"
                return result
            state = fresh
            state.status = "syncing"
            self._save(state)
            try:
                await self._with_retries(state, result, backfill, since, rescan)
            except asyncio.CancelledError:
                state.status = "pending"  # cursor is already safe; next run resumes from it
                self._save(state)
                raise
            except (ChannelFailed, TgragError, ValueError, *CHANNEL_ERRORS) as exc:
                self._fail(state, result, _reason(exc))
            except Exception as exc:  # isolate the channel: the others must go on
                log.exception("sync of %s failed", state.ref)
                self._fail(state, result, f"{type(exc).__name__}: {exc}")
            else:
                state.status = "ok"
                state.last_error = None
                state.last_sync = int(time.time())
                if state.channel_id is not None:
                    state.posts_indexed = self._indexed_count(state.channel_id)
                self._save(state)
                self.emit(state.ref, "done", result.to_dict())
        result.channel_id, result.channel = state.channel_id, state.channel
        return result

    async def resync_group(self, ref: str, message_ids: Sequence[int],
                           date: float | None = None) -> SyncResult:
        """Rebuild a followed group chat's windows around edited or deleted messages (live
        updates), under the chat's lock.  Status ``busy`` if a sync holds the lock (nothing
        done: the caller retries, as the next sync's re-scan covers recent windows only) or
        ``removed`` as for :meth:`apply_edit`."""
        async with self._locked_state(ref, SyncResult) as (result, fresh):
            if fresh is None:
                return result
            try:
                chat = await TelegramReader(self.client).resolve(fresh.ref,
                                                                 allow_group=fresh.group)
                if chat.is_group:
                    await self.groups.resync(fresh, result, chat, min(message_ids),
                                             max(message_ids), date)
            except (TgragError, ValueError, *CHANNEL_ERRORS) as exc:
                result.status, result.error = "failed", _reason(exc)
        return result

    async def apply_edit(self, ref: str, message: Any) -> EditResult:
        """Re-ingest a channel post edited live (``message``: the edited Telethon message; an
        album's siblings are fetched) under the channel's lock; the pipeline's hash re-embeds it
        only if its text changed.

        Status ``busy`` if a sync holds the lock (nothing done: the caller retries), ``removed``
        if the channel is no longer followed (so an edit never re-adds a post of a channel
        removed with its posts), ``unread`` if the message is past the cursor (an incremental
        sync reads it).  A post whose caption was removed is deleted (``deleted``); one past the
        channel's retention is not indexed (``expired``).
        """
        async with self._locked_state(ref, EditResult) as (result, fresh):
            if fresh is None:
                return result
            if message.id > fresh.last_message_id:
                result.status = "unread"
                return result
            try:
                reader = TelegramReader(self.client)
                channel = await reader.resolve(fresh.ref)
                post = await reader.fetch_post(channel, message)
            except (TgragError, ValueError, *CHANNEL_ERRORS) as exc:
                result.status, result.error = "failed", _reason(exc)
                return result
            if post is None:  # the caption was removed: nothing left to search
                result.deleted = await self.delete_posts(channel.channel_id, [message.id])
                return result
            result.post_id = post.message_id
            posts = self.unexpired(result, [post])  # an edit does not bring back an expired one
            if posts:
                result.add(await self.ingest_posts(posts))
        return result

    async def apply_deletion(self, ref: str, message_ids: Sequence[int]) -> SyncResult:
        """Delete channel posts deleted live, under the channel's lock (so a running sync that
        read them before the deletion cannot re-add them afterwards).  Status ``busy`` (nothing
        done: the caller retries) or ``removed`` as for :meth:`apply_edit`."""
        async with self._locked_state(ref, SyncResult) as (result, fresh):
            if fresh is None:
                return result
            if fresh.channel_id is not None:  # None: never synced, so nothing of it is indexed
                result.deleted = await self.delete_posts(fresh.channel_id, message_ids)
        return result

    async def ingest_posts(self, posts: Sequence[Post]) -> IngestReport:
        """Run the (blocking) pipeline in a worker thread."""
        return await asyncio.to_thread(self.pipeline.ingest, list(posts))

    async def delete_posts(self, channel_id: int, message_ids: Sequence[int]) -> int:
        """Remove posts from the store, the docstore and the catalog (idempotent)."""
        ids = sorted(set(message_ids))
        if not ids:
            return 0
        await asyncio.to_thread(delete_posts, self.index, channel_id, ids)
        return len(ids)

    # -- one channel ----------------------------------------------------------------------------

    async def _with_retries(
        self, state: ChannelState, result: SyncResult, backfill: int | None,
        since: datetime | None, rescan: bool,
    ) -> None:
        floods = 0
        while True:
            try:
                await self._sync_once(state, result, backfill, since, rescan)
                return
            except errors.FloodWaitError as exc:
                floods += 1
                if floods > MAX_FLOOD_WAITS:
                    raise ChannelFailed(f"Telegram keeps asking to wait ({exc.seconds}s)") from exc
                result.flood_waits.append(exc.seconds)
                self.emit(state.ref, "flood_wait", {"seconds": exc.seconds})
                log.warning("flood wait: sleeping %ss before resuming %s", exc.seconds, state.ref)
                await asyncio.sleep(exc.seconds)
            except (ConnectionError, OSError) as exc:  # includes TimeoutError
                result.retries += 1
                if result.retries > self.settings.sync_retries:
                    raise ChannelFailed(f"connection failed {result.retries} times: {exc}") from exc
                delay = min(60.0, 2.0 ** (result.retries - 1))
                self.emit(state.ref, "retry", {"attempt": result.retries, "delay": delay,
                                                "error": str(exc)})
                await asyncio.sleep(delay)
                if not self.client.is_connected():
                    with contextlib.suppress(ConnectionError, OSError):
                        await self.client.connect()

    async def _sync_once(
        self, state: ChannelState, result: SyncResult, backfill: int | None,
        since: datetime | None, rescan: bool,
    ) -> None:
        reader = TelegramReader(self.client)
        channel = await reader.resolve(state.ref, allow_group=state.group)
        state.channel_id, state.channel = channel.channel_id, channel.username
        state.channel_title, state.chat_type = channel.title, channel.chat_type
        self._save(state)
        if channel.is_group:
            await self.groups.run(state, result, channel, backfill=backfill, since=since,
                                   rescan=rescan)
            return
        # The re-scan looks at what earlier runs indexed: this run's posts were just read.
        indexed_before = state.last_message_id
        cutoff = self.cutoff(channel.channel_id)
        if since is None and not backfill and state.last_message_id == 0 and cutoff:
            since = datetime.fromtimestamp(cutoff, UTC)  # a first sync reads what is kept only
        if backfill:
            # Newest first is the only way to ask for "the last N"; ingest them oldest first.
            posts = [p async for p in reader.iter_posts(channel, limit=backfill, reverse=False)]
            posts.reverse()
            await self._ingest_batches(state, result, posts)
            result.skipped += reader.stats.service + reader.stats.empty
            self._advance(state, reader.stats.max_seen)
        else:
            stream = reader.iter_posts(
                channel, min_id=0 if since else state.last_message_id, offset_date=since,
                reverse=True,
            )
            await self._stream(state, result, reader, stream)
        if rescan:
            await self._rescan(state, result, channel, indexed_before)

    async def _stream(
        self, state: ChannelState, result: SyncResult, reader: TelegramReader,
        stream: AsyncIterator[Post],
    ) -> None:
        batch: list[Post] = []
        async for post in stream:
            batch.append(post)
            if len(batch) >= self.pipeline.batch_size:
                upto = reader.stats.consumed_upto  # read before the generator moves on
                await self._commit(result, batch)
                self._advance(state, upto)
                batch = []
        await self._commit(result, batch)
        result.skipped += reader.stats.service + reader.stats.empty
        self._advance(state, reader.stats.consumed_upto)

    async def _ingest_batches(
        self, state: ChannelState, result: SyncResult, posts: Sequence[Post]
    ) -> None:
        size = self.pipeline.batch_size
        for start in range(0, len(posts), size):
            await self._commit(result, posts[start:start + size])

    async def _commit(self, result: SyncResult, posts: Sequence[Post]) -> None:
        posts = self.unexpired(result, posts)
        if not posts:
            return
        report = await self.ingest_posts(posts)
        result.add(report)
        self.emit(result.ref, "batch", {"posts": len(posts), "new": report.new,
                                         "updated": report.updated})

    async def _rescan(self, state: ChannelState, result: SyncResult, channel: ChannelRef,
                      upto: int) -> None:
        """Re-read the recent window of posts indexed up to message ``upto`` (the cursor when the
        run began): ingest edits (hash decides), delete what is gone."""
        window = [i for i in self._window_ids(channel.channel_id) if i <= upto]
        if not window:
            return
        reader = TelegramReader(self.client)
        # The window's lowest id is a post's first message (the catalog holds post ids), so
        # starting there never cuts an album.
        posts = [
            p async for p in reader.iter_posts(
                channel, min_id=min(window) - 1, max_id=upto + 1, reverse=True
            )
        ]
        await self._ingest_batches(state, result, posts)
        seen = {p.message_id for p in posts}
        gone = [i for i in window if i not in seen]
        if gone:
            result.deleted += await self.delete_posts(channel.channel_id, gone)
            self.emit(state.ref, "deleted", {"message_ids": gone})

    # -- helpers --------------------------------------------------------------------------------

    def cutoff(self, channel_id: int) -> float | None:
        """Posts of the channel dated before this are past its retention (None: kept forever)."""
        days = self.retention.get(channel_id)
        policy = RetentionPolicy(self.settings.retention_days,
                                 {} if days is None else {channel_id: days})
        return policy.cutoff(channel_id)

    def unexpired(self, result: SyncResult, posts: Sequence[Post]) -> list[Post]:
        """``posts`` without those past their channel's retention (counted in ``expired``)."""
        cutoffs = {cid: self.cutoff(cid) for cid in {p.channel_id for p in posts}}
        kept = [p for p in posts if (c := cutoffs[p.channel_id]) is None or p.date >= c]
        result.expired += len(posts) - len(kept)
        return kept

    def _window_ids(self, channel_id: int) -> list[int]:
        days = self.settings.sync_rescan_days
        return self.index.catalog.recent_post_ids(
            channel_id, self.settings.sync_rescan_posts,
            time.time() - days * 86400 if days else None,
        )

    def _indexed_count(self, channel_id: int) -> int:
        return self.index.catalog.post_count(channel_id)

    def _advance(self, state: ChannelState, upto: int) -> None:
        if upto > state.last_message_id:
            state.last_message_id = upto
            self._save(state)

    def _save(self, state: ChannelState) -> None:
        # A channel removed while it was syncing stays removed.
        if self.registry.get(state.ref) is not None:
            self.registry.save(state)

    def _fail(self, state: ChannelState, result: SyncResult, reason: str) -> None:
        state.status = "failed"
        state.last_error = reason
        self._save(state)
        result.status, result.error = "failed", reason
        log.warning("channel %s failed: %s", state.ref, reason)
        self.emit(state.ref, "failed", {"error": reason})

    def emit(self, ref: str, event: str, data: dict[str, Any]) -> None:
        """Tell the listener (progress output) about an event; its errors never break a sync."""
        if self.listener is not None:
            try:
                self.listener(ref, event, data)
            except Exception:  # a broken progress callback must not break the sync
                log.exception("sync listener failed")

    @contextlib.asynccontextmanager
    async def _locked_state(
        self, ref: str, result_type: type[R]
    ) -> AsyncIterator[tuple[R, ChannelState | None]]:
        """Hold the channel's lock and yield a new result and the channel's state re-read under
        the lock, or None (the result's status says why: ``busy``, the lock is held elsewhere;
        ``removed``, no longer followed)."""
        state = self.registry.get(ref)
        if state is None:
            yield result_type(ref=str(ref), status="removed"), None
            return
        result = result_type(ref=state.ref, channel_id=state.channel_id, channel=state.channel)
        async with self._locked(state.ref) as held:
            fresh = self.registry.get(state.ref) if held else None
            if fresh is None:
                result.status = "removed" if held else "busy"
            yield result, fresh

    @contextlib.asynccontextmanager
    async def _locked(self, ref: str) -> AsyncIterator[bool]:
        """Hold ``<ns>:tg:lock:<ref>`` while syncing, renewed every third of its expiry."""
        ttl = self.settings.sync_lock_ttl
        lock = self.registry.lock(ref, ttl)
        if not lock.acquire():
            yield False
            return
        stop = asyncio.Event()

        async def renew() -> None:
            while True:
                # wait_for on an event, not asyncio.sleep: stops at once when the sync ends.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), ttl / 3)
                if stop.is_set():
                    return
                if not lock.renew():
                    log.warning("lost the sync lock of %s", ref)
                    return

        task = asyncio.create_task(renew())
        try:
            yield True
        finally:
            stop.set()
            await task
            lock.release()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, errors.ChannelPrivateError):
        return "channel is private or you were banned from it (ChannelPrivateError)"
    if isinstance(exc, errors.UsernameInvalidError | errors.UsernameNotOccupiedError):
        return f"unknown or invalid username ({type(exc).__name__})"
    if isinstance(exc, ValueError):  # telethon's get_entity: "No user has "x" as username"
        return f"cannot resolve channel: {exc}"
    return str(exc)


@dataclass
class ChannelRemoval:
    """What :func:`remove_channel` did."""

    removed: ChannelState | None  # the registry entry dropped; None: the channel was not followed
    channel_id: int | None = None
    deleted_posts: int | None = None  # None: posts kept

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed.to_dict() if self.removed else None,
                "channel_id": self.channel_id, "deleted_posts": self.deleted_posts}


def remove_channel(
    index: Index,
    ref: str,
    *,
    delete_posts: bool = False,
    wait: float | None = None,
    registry: ChannelRegistry | None = None,
) -> ChannelRemoval:
    """Stop following a channel; with ``delete_posts`` also delete its posts from the index.

    Deleting takes the channel's sync lock first (waiting up to ``wait`` seconds, default
    ``TGRAG_SYNC_LOCK_TTL``, for a running sync; then :class:`Busy`), so no sync re-adds posts
    meanwhile, then unfollows, then deletes (``ingest.deletion``: store, docstore, catalog).  A
    channel that is indexed but not followed (an export, or a removal interrupted after the
    unfollow) can be given too: its posts are deleted.  Blocking: call it from a thread in async
    code.
    """
    registry = registry or ChannelRegistry(index.redis, index.namespace)
    if not delete_posts:
        state = registry.remove(ref)
        return ChannelRemoval(removed=state, channel_id=state.channel_id)
    state = registry.get(ref)
    channel_id = state.channel_id if state is not None else None
    if channel_id is None:
        channel_id = _indexed_channel(index, (state.channel or state.ref) if state else ref)
    if state is None and channel_id is None:
        raise NotFoundError(f"channel {ref!r} is neither followed nor indexed",
                            hint="`tgrag channels list` shows the followed channels, "
                                 "`tgrag stats` the indexed ones")
    lock = None
    if state is not None:
        ttl = index.settings.sync_lock_ttl
        lock = registry.lock(state.ref, ttl)
        if not lock.wait(ttl if wait is None else wait):
            raise Busy(f"channel {state.ref} is being synced right now",
                       hint="try again when that sync ends (the lock of a worker that died "
                            "expires within TGRAG_SYNC_LOCK_TTL seconds)")
    try:
        if state is not None:
            registry.remove(state.ref)
        deleted = 0
        if channel_id is not None:
            deleted = delete_channel(index, channel_id)
        log.info("channel %s removed, %d posts deleted", ref, deleted)
        return ChannelRemoval(removed=state, channel_id=channel_id, deleted_posts=deleted)
    finally:
        if lock is not None:
            lock.release()


def _indexed_channel(index: Index, ref: str) -> int | None:
    """The id of an indexed channel named by id, username or exact title; None if not indexed."""
    try:
        channel_id = index.catalog.resolve(ref)
    except InputError:
        return None
    known = {c.channel_id for c in index.catalog.channels()}
    return channel_id if channel_id in known else None
