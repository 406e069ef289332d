"""Running the bot inside a host: ``tgrag bot`` alone, or ``tgrag serve`` / ``tgrag worker``
on their own event loop when ``TGRAG_TG_BOT_TOKEN`` is set (one loop per process, as the live
sync does).  In embedded mode only the process that owns the data folder can run it.

:func:`running_bot` is the one entry point: a context manager that starts a
:class:`~api.bot.runner.BotRunner` (or does nothing without a token) and stops it on exit.
``sync`` gives the host's channel sync for ``/follow`` (the API's scheduler, the worker's
syncer, or a user-account client ``tgrag bot`` connects on first use).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from api.bot.access import AccessList
from api.bot.index_backend import IndexBackend, SyncProvider
from api.bot.runner import BotRunner, StateListener
from api.bot.status import StatusBoard
from rag.errors import TgragError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from telethon import TelegramClient

    from rag.index import Index
    from rag.settings import Settings

log = logging.getLogger("tgrag.bot")


def new_client(settings: Settings) -> TelegramClient:
    """The bot's client (the one seam tests replace with the fake Telegram's transport)."""
    from api.bot.client import make_bot_client

    return make_bot_client(settings)


def bot_enabled(settings: Settings) -> bool:
    return bool(settings.tg_bot_token and settings.tg_bot_token.get_secret_value())


def build_runner(settings: Settings, index: Index, *, sync: SyncProvider | None = None,
                 llm: Any = None, on_state: StateListener | None = None) -> BotRunner:
    """A runner over ``index``; a missing or malformed setting is an :class:`InputError` now,
    not a bot failing later."""
    from api.bot.runner import bot_id_of
    from rag.errors import InputError
    from rag.llm import build_llm

    assert settings.tg_bot_token is not None
    if not settings.tg_api_id or not settings.tg_api_hash:
        raise InputError("the bot needs TGRAG_TG_API_ID and TGRAG_TG_API_HASH too",
                         hint="get them at https://my.telegram.org (API development tools)")
    bot_id_of(settings.tg_bot_token.get_secret_value())
    access = AccessList.from_settings(settings)
    backend = IndexBackend(index, llm=llm if llm is not None else build_llm(settings), sync=sync)
    return BotRunner(
        settings.tg_bot_token.get_secret_value(), backend, lambda: new_client(settings),
        access=access, rate_limit=settings.bot_rate_limit,
        edit_interval=settings.bot_edit_interval,
        board=StatusBoard(index.redis, index.namespace), on_state=on_state,
    )


@contextlib.asynccontextmanager
async def running_bot(index: Index, *, sync: SyncProvider | None = None,
                      on_state: StateListener | None = None) -> AsyncIterator[BotRunner | None]:
    """The bot running on this loop while inside (nothing without ``TGRAG_TG_BOT_TOKEN``)."""
    if not bot_enabled(index.settings):
        yield None
        return
    runner = build_runner(index.settings, index, sync=sync, on_state=on_state)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def fixed_sync(syncer: Any) -> SyncProvider:
    """A sync provider for a host that already has its channel sync (``tgrag worker``)."""

    async def provide() -> Any:
        return syncer

    return provide


@contextlib.asynccontextmanager
async def bot_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """For the API's lifespan (after ``app.state.index`` is set): ``app.state.bot``."""
    index: Index = app.state.index

    async def api_sync() -> Any:
        from api.sync_routes import get_scheduler

        try:
            return (await get_scheduler(app, index)).sync
        except Exception as exc:  # no account configured, or it cannot connect: sync later
            log.info("no Telegram account for /follow: %s", exc)
            return None

    runner = None
    if bot_enabled(index.settings):
        try:
            runner = build_runner(index.settings, index, sync=api_sync)
        except TgragError as err:  # the API works without its bot; /ready says "not running"
            log.error("the Telegram bot cannot start: %s", err)
    if runner is not None:
        await runner.start()
    app.state.bot = runner
    try:
        yield
    finally:
        app.state.bot = None
        if runner is not None:
            await runner.stop()


class UserAccountSync:
    """``tgrag bot``'s channel sync for ``/follow``: the user account (``tgrag login``)
    connected on first use, if one is configured; None otherwise."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.client: Any = None
        self.syncer: Any = None

    def configured(self) -> bool:
        s = self.index.settings
        return bool(s.tg_api_id and s.tg_api_hash and (
            (s.tg_session and s.tg_session.get_secret_value())
            or (s.data_dir / "telegram.session").exists()))

    async def __call__(self) -> Any:
        if self.syncer is not None or not self.configured():
            return self.syncer
        from api import sync_commands
        from ingest.telegram.sync import ChannelSync

        client = sync_commands.new_client(self.index.settings, receive_updates=False)
        try:
            await client.connect()
            if not await client.is_user_authorized():
                raise ConnectionError("the Telegram session is not logged in")
        except Exception as exc:
            log.warning("cannot connect the Telegram account for /follow: %s", exc)
            with contextlib.suppress(Exception):
                await client.disconnect()
            return None
        self.client, self.syncer = client, ChannelSync(self.index, client)
        return self.syncer

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.disconnect()
            self.client = self.syncer = None
