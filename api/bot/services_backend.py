""":class:`~api.bot.backend.BotBackend` over the composition root (:class:`api.services.Services`).

Each method is one use case of ``Services.for_tenant(t)``; the bot adds nothing but the shape
its handlers want (``ChannelRow``, ``FollowResult``).  ``sync`` is the host's channel sync for
``/follow`` (the API's scheduler, the worker's syncer), or None where no Telegram account is
configured (the channel is then registered for the next scheduled sync).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from api.bot.backend import AlertRow, ChannelRow, FollowResult
from api.bot.digests import DigestSubscribers
from api.bot.query import QueryFilters
from rag.digest import Digest
from rag.errors import Forbidden, NotFoundError
from rag.ids import DEFAULT_TENANT
from rag.posts import Post, Similar
from rag.qa import QAEvent
from rag.search import SearchFilters, SearchPage

if TYPE_CHECKING:
    from api.services import Services
    from rag.alerts.model import Alert

# The host's ChannelSync (made on first use), or None: no Telegram account here.
SyncProvider = Callable[[], Awaitable[Any]]


class ServicesBackend:
    def __init__(self, services: Services, *, sync: SyncProvider | None = None) -> None:
        self.services = services
        self.sync = sync
        index = services.index
        self.subscribers = DigestSubscribers(index.redis, index.namespace)

    def for_tenant(self, tenant: str) -> ServicesTenantBackend:
        return ServicesTenantBackend(self, self.services.for_tenant(tenant))

    @property
    def digest_schedule(self) -> str | None:
        return self.services.settings.digest_schedule

    def remember_user(self, user_id: int, lang: str, *, digest: bool | None = None) -> bool:
        return self.subscribers.remember(user_id, lang, digest=digest)


class ServicesTenantBackend:
    def __init__(self, parent: ServicesBackend, services: Services) -> None:
        self.parent = parent
        self.services = services

    @property
    def tenant(self) -> str:
        return self.services.tenant

    def _filters(self, filters: QueryFilters) -> SearchFilters:
        return self.services.filters(filters.channels, filters.tags, filters.since,
                                     filters.until)

    def search(self, query: str, filters: QueryFilters, k: int, offset: int) -> SearchPage:
        return self.services.search(query, self._filters(filters), k=k, offset=offset)

    def post(self, channel_id: int, message_id: int) -> Post:
        return self.services.post(str(channel_id), message_id)

    def similar(self, channel_id: int, message_id: int, k: int) -> Similar:
        return self.services.similar(str(channel_id), message_id, k=k)

    def ask_stream(self, question: str, filters: QueryFilters) -> Iterator[QAEvent]:
        return self.services.stream(question, self._filters(filters))

    def digest(self, since: str | None, filters: QueryFilters) -> Digest:
        chosen = filters.since if filters.since is not None else since
        return self.services.digest(chosen, filters.until, filters.channels, filters.tags)

    def _indexed(self) -> list[dict[str, Any]]:
        return list(self.services.stats()["channels"])  # this tenant's catalog

    def channels(self) -> list[ChannelRow]:
        indexed = {c["channel_id"]: c for c in self._indexed()}
        rows: list[ChannelRow] = []
        if self.tenant == DEFAULT_TENANT:  # sync feeds the default tenant only
            for s in self.services.channels():
                info = indexed.pop(s.channel_id, None) if s.channel_id is not None else None
                rows.append(ChannelRow(
                    ref=s.ref, channel_id=s.channel_id,
                    username=s.channel or ("" if s.ref.isdigit() else s.ref),
                    title=s.channel_title or (info["channel_title"] if info else ""),
                    posts=info["posts"] if info else 0,
                    last_post=info["last_date"] if info else None,
                    followed=True, last_sync=s.last_sync, status=s.status, error=s.last_error))
        for info in indexed.values():
            rows.append(ChannelRow(
                ref=info["channel"] or str(info["channel_id"]), channel_id=info["channel_id"],
                username=info["channel"], title=info["channel_title"], posts=info["posts"],
                last_post=info["last_date"], followed=False))
        return sorted(rows, key=lambda r: (r.title or r.username).lower())

    def knows_channel(self, channel_id: int, username: str) -> bool:
        if any(c["channel_id"] == channel_id for c in self._indexed()):
            return True
        if self.tenant != DEFAULT_TENANT:
            return False
        username = username.lower()
        return any(s.channel_id == channel_id or (username and username in (
            s.ref, s.channel.lower())) for s in self.services.channels())

    def _require_default(self) -> None:
        if self.tenant != DEFAULT_TENANT:
            raise Forbidden("channels are followed for the whole deployment (tenant default)",
                            hint="ask an admin of the default tenant")

    async def follow(self, ref: str) -> FollowResult:
        self._require_default()
        state = self.services.follow(ref)
        provider = self.parent.sync
        syncer = await provider() if provider is not None else None
        if syncer is None:
            return FollowResult(state.ref, state.channel_title, "queued")
        result = await syncer.sync_channel(state.ref)
        fresh = next((s for s in self.services.channels() if s.ref == state.ref), state)
        status = {"ok": "synced", "busy": "busy"}.get(result.status, "failed")
        return FollowResult(fresh.ref, fresh.channel_title, status,  # type: ignore[arg-type]
                            new=result.new, posts=fresh.posts_indexed, error=result.error)

    def unfollow(self, ref: str) -> str | None:
        self._require_default()
        try:
            done = self.services.remove_channel(ref)
        except NotFoundError:
            return None
        return done.removed.ref if done.removed else None

    # -- alerts ---------------------------------------------------------------------------------

    def add_alert(self, rule: str, query: str, filters: QueryFilters, chat_id: int,
                  lang: str) -> AlertRow:
        alert = self.services.add_alert(query, rule=rule, channels=filters.channels,
                                        tags=filters.tags, since=filters.since,
                                        until=filters.until, chat_id=chat_id, lang=lang)
        return self._row(alert)

    def alerts(self, chat_id: int) -> list[AlertRow]:
        return [self._row(a) for a in self.services.alerts() if a.chat_id == chat_id]

    def remove_alert(self, alert_id: str, chat_id: int) -> AlertRow | None:
        try:
            alert = self.services.alert(alert_id)
        except NotFoundError:
            return None
        if alert.chat_id != chat_id:  # another chat's (or the API's) alert: not this user's
            return None
        return self._row(self.services.remove_alert(alert.id))

    def _row(self, alert: Alert) -> AlertRow:
        names = {c["channel_id"]: (f"@{c['channel']}" if c["channel"] else
                                   c["channel_title"] or str(c["channel_id"]))
                 for c in self._indexed()} if alert.filters.channel_ids else {}
        f = alert.filters
        return AlertRow(alert.id, alert.query, alert.rule,
                        tuple(names.get(c, str(c)) for c in f.channel_ids), tuple(f.tags),
                        f.since, f.until)
