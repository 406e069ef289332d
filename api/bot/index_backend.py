"""TEMPORARY: :class:`~api.bot.backend.BotBackend` over today's :class:`rag.index.Index`.

The composition root (``api.services.Services``) replaces this module: each method here is one
call of a use case that ``Services.for_tenant(t)`` is to expose (search, post, similar,
ask/stream, channels list/add/remove, sync).  Keep it the only bot module that imports the
core's index-level code, so the swap is one import in :mod:`api.bot.hosting`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from api.bot.backend import ChannelRow, FollowResult
from api.bot.query import QueryFilters
from ingest.telegram.state import ChannelRegistry
from rag.errors import InputError, NotFoundError
from rag.index import Index
from rag.posts import Post, Similar, get_post, similar_posts
from rag.qa import QAEngine, QAEvent
from rag.search import PostSearcher, SearchFilters, SearchPage
from rag.tenants import DEFAULT_TENANT

# The process's channel sync over a connected Telegram account, made on first use; None when no
# account is configured (the channel is then registered for the next scheduled sync).
SyncProvider = Callable[[], Awaitable[Any]]


class IndexBackend:
    def __init__(self, index: Index, *, llm: Any = None,
                 sync: SyncProvider | None = None) -> None:
        self.index = index
        self.llm = llm
        self.sync = sync

    def for_tenant(self, tenant: str) -> IndexTenantBackend:
        return IndexTenantBackend(self, tenant)


class IndexTenantBackend:
    def __init__(self, parent: IndexBackend, tenant: str) -> None:
        self.parent = parent
        self.view = parent.index.for_tenant(tenant)

    @property
    def tenant(self) -> str:
        return self.view.tenant

    def _registry(self) -> ChannelRegistry:
        index = self.parent.index
        return ChannelRegistry(index.redis, index.namespace)

    def _filters(self, filters: QueryFilters) -> SearchFilters:
        return SearchFilters(
            channel_ids=[self.view.catalog.resolve(c) for c in filters.channels],
            tags=list(filters.tags), since=filters.since, until=filters.until,
            tenant=self.view.tenant,
        )

    def search(self, query: str, filters: QueryFilters, k: int, offset: int) -> SearchPage:
        return PostSearcher(self.view).search(query, self._filters(filters), k=k, offset=offset)

    def post(self, channel_id: int, message_id: int) -> Post:
        return get_post(self.view, str(channel_id), message_id)

    def similar(self, channel_id: int, message_id: int, k: int) -> Similar:
        return similar_posts(self.view, str(channel_id), message_id, k=k)

    def ask_stream(self, question: str, filters: QueryFilters) -> Iterator[QAEvent]:
        return QAEngine(self.view, self.parent.llm).stream(question, self._filters(filters))

    def channels(self) -> list[ChannelRow]:
        indexed = {c.channel_id: c for c in self.view.catalog.channels()}
        rows: list[ChannelRow] = []
        if self.tenant == DEFAULT_TENANT:  # sync feeds the default tenant only
            for s in self._registry().list():
                info = indexed.pop(s.channel_id, None) if s.channel_id is not None else None
                rows.append(ChannelRow(
                    ref=s.ref, channel_id=s.channel_id,
                    username=s.channel or ("" if s.ref.isdigit() else s.ref),
                    title=s.channel_title or (info.channel_title if info else ""),
                    posts=info.posts if info else 0, last_post=info.last_date if info else None,
                    followed=True, last_sync=s.last_sync, status=s.status, error=s.last_error))
        for info in indexed.values():
            rows.append(ChannelRow(
                ref=info.channel or str(info.channel_id), channel_id=info.channel_id,
                username=info.channel, title=info.channel_title, posts=info.posts,
                last_post=info.last_date, followed=False))
        return sorted(rows, key=lambda r: (r.title or r.username).lower())

    def knows_channel(self, channel_id: int, username: str) -> bool:
        if any(c.channel_id == channel_id for c in self.view.catalog.channels()):
            return True
        if self.tenant != DEFAULT_TENANT:
            return False
        registry = self._registry()
        return registry.by_channel_id(channel_id) is not None or (
            bool(username) and registry.get(username) is not None)

    def _require_default(self) -> None:
        if self.tenant != DEFAULT_TENANT:
            raise InputError("channels are followed for the whole deployment (tenant default)",
                             hint="ask an admin of the default tenant")

    async def follow(self, ref: str) -> FollowResult:
        self._require_default()
        registry = self._registry()
        state = registry.add(ref)
        provider = self.parent.sync
        syncer = await provider() if provider is not None else None
        if syncer is None:
            return FollowResult(state.ref, state.channel_title, "queued")
        result = await syncer.sync_channel(state.ref)
        fresh = registry.get(state.ref) or state
        status = {"ok": "synced", "busy": "busy"}.get(result.status, "failed")
        return FollowResult(fresh.ref, fresh.channel_title, status,  # type: ignore[arg-type]
                            new=result.new, posts=fresh.posts_indexed, error=result.error)

    def unfollow(self, ref: str) -> str | None:
        self._require_default()
        from ingest.telegram.sync import remove_channel

        try:
            done = remove_channel(self.parent.index, ref)
        except NotFoundError:
            return None
        return done.removed.ref if done.removed else None
