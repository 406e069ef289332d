"""Live mode: Telethon update handlers that keep the index following the channels.

* ``NewMessage`` → an incremental sync of that channel (coalesced), so albums, the cursor and the
  lock work exactly as in a scheduled sync;
* ``MessageEdited`` → the post is rebuilt (with its album siblings) and re-ingested; the pipeline's
  hash re-embeds it only if the text changed;
* ``MessageDeleted`` → the posts are removed (in channels the update carries ``channel_id``).

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
from collections.abc import Coroutine
from typing import Any

from telethon import TelegramClient, events, types

from ingest.documents import GROUP
from ingest.telegram.reader import TelegramReader
from ingest.telegram.state import ChannelState
from ingest.telegram.sync import ChannelSync
from rag.ids import normalize_channel_id

log = logging.getLogger("tgrag.live")


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
                if result.status == "busy" and busy_tries < 5:
                    # Another worker is syncing it and may already be past this message: retry
                    # once its run had time to finish rather than drop the message until later.
                    busy_tries += 1
                    await asyncio.sleep(self.sync.settings.sync_lock_ttl / 6)
                    self._again.add(ref)
                if ref not in self._again:
                    return
        finally:
            self._running.discard(ref)

    async def _reindex(self, state: ChannelState, message: types.Message) -> None:
        if message.id > state.last_message_id:  # not read yet: the incremental path handles it
            await self._catch_up(state.ref)
            return
        reader = TelegramReader(self.sync.client)
        channel = await reader.resolve(state.ref)
        post = await reader.fetch_post(channel, message)
        if post is None:  # the caption was removed: nothing left to search
            await self._delete(state, [message.id])
            return
        cutoff = self.sync.cutoff(post.channel_id)
        if cutoff is not None and post.date < cutoff:
            return  # past the channel's retention: an edit does not bring it back
        report = await self.sync.ingest_posts([post])
        self.sync.emit(state.ref, "live", {"edited": post.message_id,
                                           "reindexed": bool(report.new or report.updated)})

    async def _resync(self, state: ChannelState, message_ids: list[int],
                      date: float | None) -> None:
        if min(message_ids) > state.last_message_id:  # not read yet: the catch-up reads it
            await self._catch_up(state.ref)
            return
        result = await self.sync.resync_group(state.ref, message_ids, date)
        if result.status != "ok":
            return
        if date is None:
            self.sync.emit(state.ref, "live", {"deleted": sorted(message_ids)})
        else:
            self.sync.emit(state.ref, "live", {"edited": message_ids[0],
                                               "reindexed": bool(result.new or result.updated)})

    async def _delete(self, state: ChannelState, message_ids: list[int]) -> None:
        assert state.channel_id is not None
        await self.sync.delete_posts(state.channel_id, message_ids)
        self.sync.emit(state.ref, "live", {"deleted": sorted(message_ids)})


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
