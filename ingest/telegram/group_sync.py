"""Syncing a group chat: its messages as windows (``ingest.chat_windows``), re-read from a window
boundary so that new, edited and deleted messages all land in the right window.

A window's id is its first message's (``rag.ids.window_doc_id``) and the catalog lists the
windows, so every window id in the catalog is a boundary of the chat's partition: re-reading
from one rebuilds the same windows after it.  Each read therefore

1. starts at an *anchor*, the catalog's window at or before the first message to (re)read:
   the newest window for new messages (it may still grow), the oldest of the re-scan window
   (``TGRAG_SYNC_RESCAN_POSTS`` / ``_DAYS``) on a scheduled sync, the window before ``--since``
   or before the oldest of the ``--backfill`` messages, the window of an edited or deleted
   message (live updates);
2. builds the windows of what it reads and ingests them in batches (the pipeline's hash leaves
   unchanged windows alone; the cursor advances after each committed batch, as for channels);
3. deletes the windows of the catalog in the range read that it did not produce: a window whose
   first message was deleted (its messages come back in the window of the next one), or one
   whose boundaries moved.

A live edit or deletion re-reads only until the windows meet the old partition again: once a
window starts at a catalog boundary after the changed messages, everything from there on is
unchanged.  Everything runs under the chat's sync lock (held by ``ChannelSync``); the account's
id and username are recorded on the first group sync of a connection (the mention rule's
"own username", ``ingest.telegram.state.AccountIdentity``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ingest.chat_windows import ChatMessage, WindowBuilder, WindowRule, window_post
from ingest.documents import Post
from ingest.telegram.group_reader import GroupReader
from ingest.telegram.reader import ChannelRef
from ingest.telegram.state import Account, AccountIdentity, ChannelState

if TYPE_CHECKING:
    from ingest.telegram.sync import ChannelSync, SyncResult


class GroupSync:
    """The group-chat half of :class:`~ingest.telegram.sync.ChannelSync` (which holds the lock,
    the state, the pipeline and the listener)."""

    def __init__(self, sync: ChannelSync) -> None:
        self.sync = sync
        self._account_recorded = False

    @property
    def rule(self) -> WindowRule:
        return WindowRule.from_settings(self.sync.settings)

    async def run(self, state: ChannelState, result: SyncResult, chat: ChannelRef, *,
                   backfill: int | None, since: datetime | None, rescan: bool) -> None:
        """One sync of the chat: new messages, and with ``rescan`` the recent window again."""
        await self.record_account()
        catalog = self.sync.index.catalog
        cid = chat.channel_id
        reader = GroupReader(self.sync.client)
        anchor: int | None = None
        min_id, offset_date = state.last_message_id, None
        if since is not None:
            anchor = self._anchor(cid, since.timestamp())
            min_id, offset_date = 0, since
        elif backfill:
            newest = await reader.newest(chat, backfill)
            if newest:
                oldest = newest[-1]
                anchor = self._anchor(cid, oldest.date.timestamp(), oldest.id)
                min_id = (anchor or oldest.id) - 1
        else:
            candidates = catalog.recent_post_ids(cid, 1, None)
            if rescan:
                candidates += self.sync._window_ids(cid)
            anchor = min(candidates) if candidates else None
            cutoff = self.sync.cutoff(cid)
            if anchor is None and state.last_message_id == 0 and cutoff:
                min_id, offset_date = 0, datetime.fromtimestamp(cutoff, UTC)
        if anchor is not None:
            min_id, offset_date = anchor - 1, None
        await self._read(state, result, chat, reader, min_id, offset_date, anchor)

    async def resync(self, state: ChannelState, result: SyncResult, chat: ChannelRef,
                     first: int, last: int, date: float | None = None) -> None:
        """Rebuild the windows around the changed messages ``first``..``last`` (edited, or
        deleted: then ``date`` is unknown and the previous message's is used)."""
        cid = chat.channel_id
        if date is None:
            before = [m async for m in self.sync.client.iter_messages(
                chat.entity, offset_id=first, limit=1)]
            date = before[0].date.timestamp() if before else None
        anchor = self._anchor(cid, date, first) if date is not None else None
        min_id = (anchor if anchor is not None else first) - 1
        reader = GroupReader(self.sync.client)
        await self._read(state, result, chat, reader, min_id, None, anchor, upto=last)

    async def record_account(self) -> None:
        """Remember who the account is (once per connection)."""
        if self._account_recorded:
            return
        me = await self.sync.client.get_me()
        if me is not None:
            index = self.sync.index
            AccountIdentity(index.redis, index.namespace).save(
                Account(user_id=me.id, username=getattr(me, "username", None) or ""))
            self._account_recorded = True

    # -- one read -------------------------------------------------------------------------------

    def _anchor(self, chat_id: int, date: float, upto_id: int | None = None) -> int | None:
        """The newest indexed window dated at or before ``date`` (and starting at or before
        message ``upto_id``): a boundary to re-read from."""
        ids = self.sync.index.catalog.ids_dated_upto(chat_id, date)
        ids = [i for i in ids if upto_id is None or i <= upto_id]
        return max(ids) if ids else None

    def _known(self, chat_id: int, min_id: int, anchor: int | None) -> set[int]:
        """The indexed windows a read from ``min_id`` covers (to find those it no longer makes)."""
        catalog = self.sync.index.catalog
        if anchor is not None:
            date = catalog.post_date(chat_id, anchor)
            ids = catalog.recent_post_ids(chat_id, 0, date) if date is not None else []
        else:
            ids = catalog.post_ids(chat_id)
        return {i for i in ids if i > min_id}

    async def _read(self, state: ChannelState, result: SyncResult, chat: ChannelRef,
                    reader: GroupReader, min_id: int, offset_date: datetime | None,
                    anchor: int | None, *, upto: int | None = None) -> None:
        sync = self.sync
        cid = chat.channel_id
        known = self._known(cid, min_id, anchor)
        builder = WindowBuilder(self.rule)
        produced: set[int] = set()
        batch: list[Post] = []
        stop: int | None = None  # resync: where the windows meet the old partition again

        async def add(window: list[ChatMessage]) -> None:
            nonlocal batch
            produced.add(window[0].message_id)
            batch.append(window_post(cid, chat.username, chat.title, window,
                                     sync.index.tenant))
            if len(batch) >= sync.pipeline.batch_size:
                await sync._commit(result, batch)
                sync._advance(state, window[-1].message_id)
                batch = []

        stream = reader.iter_messages(chat, min_id=min_id, offset_date=offset_date)
        async with _closing(stream):
            async for message in stream:
                closed = builder.push(message)
                if closed is None:
                    continue
                if upto is not None and message.message_id > upto \
                        and message.message_id in known:
                    stop = message.message_id  # this window and all after it are unchanged
                    builder = WindowBuilder(self.rule)
                    await add(closed)
                    break
                await add(closed)
        last = builder.flush()
        if last:
            await add(last)
        await sync._commit(result, batch)
        result.skipped += reader.stats.service + reader.stats.empty
        if stop is None:
            sync._advance(state, reader.stats.max_seen)
        gone = sorted(i for i in known if i not in produced and (stop is None or i < stop))
        if gone:
            result.deleted += await sync.delete_posts(cid, gone)
            sync.emit(state.ref, "deleted", {"message_ids": gone})


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[ChatMessage]) -> AsyncIterator[None]:
    """Close the message stream when a read stops early (Telethon's iterator holds a request)."""
    try:
        yield
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
