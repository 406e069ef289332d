"""Live mode: Telethon update handlers that keep the index following the channels.

* ``NewMessage`` → an incremental sync of that channel (coalesced), so albums, the cursor and the
  lock work exactly as in a scheduled sync;
* ``MessageEdited`` → the post is rebuilt (with its album siblings) and re-ingested; the pipeline's
  hash re-embeds it only if the text changed;
* ``MessageDeleted`` → the posts are removed (in channels the update carries ``channel_id``).

Edits and deletions run under the channel's sync lock too (``ChannelSync.apply_edit`` /
``apply_deletion``; ``resync_group`` for a group chat), so they never interleave with a sync's
writes, and a channel unfollowed meanwhile (maybe with its posts deleted) is left alone.  While
another worker holds the lock the update is retried (every sixth of ``TGRAG_SYNC_LOCK_TTL``, five
times) rather than dropped: the next sync's re-scan covers recent posts (or windows) only.

Group chats followed with ``--group`` get the same updates: a new message extends or starts a
window (the incremental sync re-reads from the newest window), an edit or a deletion in a
supergroup rebuilds the windows around it (``ChannelSync.resync_group``).  A small group's
deletions come without the chat's id, so the next scheduled sync's re-scan finds them.  Private
chats are never looked at: the handlers' filter lets through channels and groups only.

Handlers return quickly and do the work in tasks: Telethon awaits handlers in its update loop.
What they changed is reported to the sync's listener as ``"live"`` events (``tgrag watch`` prints
them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telethon import TelegramClient, events, types

from ingest.documents import GROUP
from ingest.telegram.state import ChannelState
from ingest.telegram.sync import ChannelSync, SyncResult
from rag.ids import normalize_channel_id

log = logging.getLogger("tgrag.live")

BUSY_RETRIES = 5  # tries again, a sixth of the lock's expiry apart, while a sync holds the lock


class LiveSync:
    def __init__(self, sync: ChannelSync) -> None:
        self.sync = sync
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()

    def _registered(self, chat_id: int | None) -> ChannelState | None:
        if chat_id is None:
            return None
        return self.sync.registry.by_channel_id(normalize_channel_id(chat_id))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live handler failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until the work started by the handlers so far is done (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def on_new_message(self, event: events.NewMessage.Event) -> None:
        state = self._registered(event.chat_id)
        if state is not None:
            self._spawn(self._catch_up(state.ref))

    async def on_edited(self, event: events.MessageEdited.Event) -> None:
        state = self._registered(event.chat_id)
        if state is None:
            return
        if state.chat_type == GROUP:
            message = event.message
            self._spawn(self._resync(state, [message.id], message.date.timestamp()))
        else:
            self._spawn(self._reindex(state, event.message))

    async def on_deleted(self, event: events.MessageDeleted.Event) -> None:
        update = event.original_update
        channel_id = getattr(update, "channel_id", None)
        state = self._registered(channel_id)
        if state is None or state.channel_id is None:
            return
        if state.chat_type == GROUP:
            self._spawn(self._resync(state, list(event.deleted_ids), None))
        else:
            self._spawn(self._delete(state, list(event.deleted_ids)))

    async def _catch_up(self, ref: str) -> None:
        # An album arrives as several NewMessage events: one incremental sync reads them all, and a
        # message arriving while it runs triggers exactly one more run.
        if ref in self._running:
            self._again.add(ref)
            return
        self._running.add(ref)
        try:
            busy_tries = 0
            while True:
                self._again.discard(ref)
                # register=False: a channel unfollowed since the update stays unfollowed.
                result = await self.sync.sync_channel(ref, rescan=False, register=False)
                if result.status == "ok" and (result.new or result.updated):
                    self.sync.emit(ref, "live", {"new": result.new, "updated": result.updated})
                if result.status == "busy" and busy_tries < BUSY_RETRIES:
                    # Another worker is syncing it and may already be past this message: retry
                    # once its run had time to finish rather than drop the message until later.
                    busy_tries += 1
                    await asyncio.sleep(self.sync.settings.sync_lock_ttl / 6)
                    self._again.add(ref)
                if ref not in self._again:
                    return
        finally:
            self._running.discard(ref)

    async def _when_free(self, attempt: Callable[[], Awaitable[SyncResult]]) -> SyncResult:
        """Run ``attempt`` again while it finds the channel's lock held by another worker: its
        run may well end soon, and an edit of an older post is outside its re-scan window."""
        for tries in range(BUSY_RETRIES + 1):
            result = await attempt()
            if result.status != "busy" or tries == BUSY_RETRIES:
                break
            await asyncio.sleep(self.sync.settings.sync_lock_ttl / 6)
        return result

    async def _reindex(self, state: ChannelState, message: types.Message) -> None:
        result = await self._when_free(lambda: self.sync.apply_edit(state.ref, message))
        if result.status == "unread":  # not read yet: the incremental path handles it
            await self._catch_up(state.ref)
        elif result.status == "ok" and result.deleted:  # the caption was removed
            self.sync.emit(state.ref, "live", {"deleted": [message.id]})
        elif result.status == "ok" and not result.expired:
            self.sync.emit(state.ref, "live", {"edited": result.post_id,
                                               "reindexed": bool(result.new or result.updated)})
        else:
            _not_applied("edit", state.ref, message.id, result)

    async def _resync(self, state: ChannelState, message_ids: list[int],
                      date: float | None) -> None:
        if min(message_ids) > state.last_message_id:  # not read yet: the catch-up reads it
            await self._catch_up(state.ref)
            return
        result = await self._when_free(
            lambda: self.sync.resync_group(state.ref, message_ids, date))
        if result.status == "ok" and date is None:
            self.sync.emit(state.ref, "live", {"deleted": sorted(message_ids)})
        elif result.status == "ok":
            self.sync.emit(state.ref, "live", {"edited": message_ids[0],
                                               "reindexed": bool(result.new or result.updated)})
        elif date is None:
            _not_applied("deletion", state.ref, sorted(message_ids), result)
        else:
            _not_applied("edit", state.ref, message_ids[0], result)

    async def _delete(self, state: ChannelState, message_ids: list[int]) -> None:
        result = await self._when_free(lambda: self.sync.apply_deletion(state.ref, message_ids))
        if result.status == "ok":
            self.sync.emit(state.ref, "live", {"deleted": sorted(message_ids)})
        else:
            _not_applied("deletion", state.ref, sorted(message_ids), result)


def _not_applied(change: str, ref: str, which: object, result: SyncResult) -> None:
    """Warn of a live change given up: the lock stayed busy, or the chat failed (a channel
    unfollowed meanwhile, ``removed``, is no loss)."""
    if result.status in ("busy", "failed"):
        log.warning("live %s of %s/%s not applied (%s): the next sync's re-scan may catch it",
                    change, ref, which, result.error or result.status)


def register_live_handlers(client: TelegramClient, sync: ChannelSync) -> LiveSync:
    """Attach the handlers to ``client`` (which must receive updates) and return them."""
    live = LiveSync(sync)
    client.add_event_handler(live.on_new_message, events.NewMessage(func=_is_followable))
    client.add_event_handler(live.on_edited, events.MessageEdited(func=_is_followable))
    client.add_event_handler(live.on_deleted, events.MessageDeleted())
    return live


def _is_followable(event: Any) -> bool:
    """A channel or a group chat (supergroups are channels to Telegram); never a private chat."""
    if getattr(event, "is_private", False):
        return False
    return bool(getattr(event, "is_channel", False) or getattr(event, "is_group", False))
