"""The use cases the bot needs, as a narrow interface: the bot calls these, never the store.

:class:`BotBackend` gives a tenant's view (:class:`TenantBackend`); every call through it sees
only that tenant's posts, exactly as an API key of the tenant does.
:mod:`api.bot.services_backend` implements it over the composition root
(:class:`api.services.Services`); the handlers see only this interface, so they can be tested
and changed apart from it.  Calls are blocking (the bot runs them in a thread) except
:meth:`TenantBackend.follow`, which syncs over Telegram on the bot's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from api.bot.query import QueryFilters
from rag.digest import Digest
from rag.posts import Post, Similar
from rag.qa import QAEvent
from rag.search import SearchPage


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """One channel of a tenant's search: indexed posts, and the sync state if it is followed."""

    ref: str  # how to name it to unfollow: the registry key, else the username or id
    channel_id: int | None
    username: str
    title: str
    posts: int
    last_post: int | None  # unix seconds of its newest indexed post
    followed: bool  # synced from Telegram (tenant default only)
    last_sync: int | None = None
    status: str | None = None  # pending | syncing | ok | failed
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FollowResult:
    ref: str
    title: str
    # synced: read now; queued: registered, the next scheduled sync reads it;
    # busy: another worker is syncing it; failed: Telegram refused (private, unknown, …)
    status: Literal["synced", "queued", "busy", "failed"]
    new: int = 0
    posts: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One of a user's alerts as the bot shows it (channels by name)."""

    id: str
    query: str
    rule: str  # semantic | words | mention
    channels: tuple[str, ...] = ()  # @username, else the title or the id
    tags: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None


class TenantBackend(Protocol):
    """One tenant's use cases."""

    @property
    def tenant(self) -> str: ...

    def search(self, query: str, filters: QueryFilters, k: int, offset: int) -> SearchPage:
        """Posts for a query (copies collapsed), ``offset`` .. ``offset + k``."""
        ...

    def post(self, channel_id: int, message_id: int) -> Post:
        """One post of the tenant (``NotFoundError`` if it has none by these ids)."""
        ...

    def similar(self, channel_id: int, message_id: int, k: int) -> Similar:
        """"More like this" for one of the tenant's posts."""
        ...

    def ask_stream(self, question: str, filters: QueryFilters) -> Iterator[QAEvent]:
        """``rag.qa.QAEngine.stream``: tokens, then the sources, then ``done`` (ask JSON)."""
        ...

    def digest(self, since: str | None, filters: QueryFilters) -> Digest:
        """The tenant's digest of the period (``since``: a duration such as ``1d`` or a date;
        ``filters.since`` wins when given), ``Services.digest``."""
        ...

    def channels(self) -> list[ChannelRow]:
        """The tenant's channels: followed ones (default tenant) and indexed ones."""
        ...

    def knows_channel(self, channel_id: int, username: str) -> bool:
        """Whether the channel is already followed or indexed for this tenant."""
        ...

    def add_alert(self, rule: str, query: str, filters: QueryFilters, chat_id: int,
                  lang: str) -> AlertRow:
        """Save an alert of the tenant delivering to the bot chat ``chat_id``
        (``Services.add_alert``; ``InputError`` when it is not a valid alert)."""
        ...

    def alerts(self, chat_id: int) -> list[AlertRow]:
        """The tenant's alerts that deliver to ``chat_id``, oldest first."""
        ...

    def remove_alert(self, alert_id: str, chat_id: int) -> AlertRow | None:
        """Remove the tenant's alert if it delivers to ``chat_id``; None if there is none."""
        ...

    async def follow(self, ref: str) -> FollowResult:
        """Follow a channel and sync it now if a Telegram account is connected (the CLI's
        ``channels add`` + ``sync``); tenant default only."""
        ...

    def unfollow(self, ref: str) -> str | None:
        """Stop following (posts stay, as ``channels remove``); the ref removed, None if the
        channel was not followed."""
        ...


class BotBackend(Protocol):
    def for_tenant(self, tenant: str) -> TenantBackend: ...

    @property
    def digest_schedule(self) -> str | None:
        """``TGRAG_DIGEST_SCHEDULE`` as shown to users (``09:00 Europe/Moscow``), None if unset."""
        ...

    def remember_user(self, user_id: int, lang: str, *, digest: bool | None = None) -> bool:
        """Keep the user's language (for the scheduled digest) and, given, whether they want
        it; returns whether they want it."""
        ...
