"""Running the bot inside a host: ``tgrag bot`` alone, or ``tgrag serve`` / ``tgrag worker``
on their own event loop when ``TGRAG_TG_BOT_TOKEN`` is set (one loop per process, as the live
sync does).  In embedded mode only the process that owns the data folder can run it.

:func:`running_bot` is the one entry point: a context manager that starts a
:class:`~api.bot.runner.BotRunner` over the process's :class:`~api.services.Services` (or does
nothing without a token) and stops it on exit; with ``TGRAG_DIGEST_SCHEDULE`` the bot also sends
the daily digest, and so do the ``TGRAG_DIGEST_WEBHOOKS`` (:func:`add_digest_delivery`; a host
without the bot runs :func:`webhook_digests`).  ``sync`` gives the host's channel sync for
``/follow``: the worker's syncer (:func:`fixed_sync`), or the services' scheduler where a
Telegram account is configured (:func:`account_sync`, the API and ``tgrag bot``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from rag.errors import InputError, TgragError

# The bot's own modules import Telethon (~0.5 s at start): imported where a bot is built, so a
# host without TGRAG_TG_BOT_TOKEN (most `tgrag serve`s) never loads them.
if TYPE_CHECKING:
    from fastapi import FastAPI
    from telethon import TelegramClient

    from api.bot.access import AccessList
    from api.bot.runner import BotRunner, StateListener
    from api.bot.services_backend import SyncProvider
    from api.services import Services
    from rag.settings import Settings

log = logging.getLogger("tgrag.bot")


def new_client(settings: Settings) -> TelegramClient:
    """The bot's client (the one seam tests replace with the fake Telegram's transport)."""
    from api.bot.client import make_bot_client

    return make_bot_client(settings)


def bot_enabled(settings: Settings) -> bool:
    return bool(settings.tg_bot_token and settings.tg_bot_token.get_secret_value())


def check_settings(settings: Settings) -> AccessList:
    """The bot's settings, checked (:class:`InputError` now, not a bot failing later)."""
    from api.bot.access import AccessList
    from api.bot.runner import bot_id_of

    if not bot_enabled(settings):
        raise InputError("TGRAG_TG_BOT_TOKEN is not set",
                         hint="create a bot with @BotFather (/newbot) and set its token")
    if not settings.tg_api_id or not settings.tg_api_hash:
        raise InputError("the bot needs TGRAG_TG_API_ID and TGRAG_TG_API_HASH too",
                         hint="get them at https://my.telegram.org (API development tools)")
    assert settings.tg_bot_token is not None
    bot_id_of(settings.tg_bot_token.get_secret_value())
    return AccessList.from_settings(settings)


def build_runner(services: Services, *, sync: SyncProvider | None = None,
                 on_state: StateListener | None = None) -> BotRunner:
    from api.bot.runner import BotRunner
    from api.bot.services_backend import ServicesBackend
    from api.bot.status import StatusBoard

    settings = services.settings
    access = check_settings(settings)
    assert settings.tg_bot_token is not None
    index = services.index
    backend = ServicesBackend(services, sync=sync)
    runner = BotRunner(
        settings.tg_bot_token.get_secret_value(), backend,
        lambda: new_client(settings), access=access, rate_limit=settings.bot_rate_limit,
        edit_interval=settings.bot_edit_interval,
        board=StatusBoard(index.redis, index.namespace), on_state=on_state,
    )
    add_digest_delivery(runner, services)
    return runner


def digest_sinks(services: Services, runner: BotRunner | None) -> list[Any]:
    """Where this process sends the scheduled digest: the bot's users (when it runs the bot)
    and the ``TGRAG_DIGEST_WEBHOOKS``."""
    sinks: list[Any] = []
    if runner is not None:
        from api.bot.digests import BotDigestSink

        sinks.append(BotDigestSink(runner, runner.backend.subscribers))  # type: ignore[attr-defined]
    if services.settings.digest_webhooks:
        from rag.digest_webhooks import WebhookDigestSink

        sinks.append(WebhookDigestSink(services.settings))
    return sinks


def add_digest_delivery(runner: BotRunner, services: Services) -> None:
    """With ``TGRAG_DIGEST_SCHEDULE`` set, the bot sends the daily digest while it runs (and the
    webhooks theirs: one scheduler, one record of what was sent)."""
    scheduler = services.digest_scheduler(digest_sinks(services, runner))
    if scheduler is not None:
        runner.run_alongside("digest", scheduler.run)


@contextlib.asynccontextmanager
async def webhook_digests(services: Services) -> AsyncIterator[None]:
    """A process without the bot still sends the digest webhooks (the record of what was sent
    keeps several such processes from sending one twice)."""
    scheduler = services.digest_scheduler(digest_sinks(services, None)) \
        if services.settings.digest_webhooks else None
    task = asyncio.get_running_loop().create_task(scheduler.run(), name="tgrag-digest") \
        if scheduler is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running_bot(services: Services, *, sync: SyncProvider | None = None,
                      on_state: StateListener | None = None) -> AsyncIterator[BotRunner | None]:
    """The bot running on this loop while inside (nothing without ``TGRAG_TG_BOT_TOKEN``), and
    delivering the alerts saved with ``/alert`` (``services.add_notifier``; the host runs the
    alert dispatcher: ``services.start_alerts()``)."""
    if not bot_enabled(services.settings):
        async with webhook_digests(services):
            yield None
        return
    runner = build_runner(services, sync=sync, on_state=on_state)
    await runner.start()
    try:
        with _alert_delivery(services, runner):
            yield runner
    finally:
        await runner.stop()


def fixed_sync(syncer: Any) -> SyncProvider:
    """A sync provider for a host that already has its channel sync (``tgrag worker``)."""

    async def provide() -> Any:
        return syncer

    return provide


def account_sync(services: Services) -> SyncProvider:
    """The services' scheduler's sync (connected on first use) if a Telegram account is
    configured; None otherwise, or when it cannot connect (then the next sync reads it)."""
    from api.routes.sync import telegram_configured

    async def provide() -> Any:
        if not telegram_configured(services):
            return None
        try:
            return (await services.scheduler()).sync
        except TgragError as exc:
            log.warning("no Telegram account for /follow: %s", exc)
            return None

    return provide


@contextlib.asynccontextmanager
async def bot_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """For the API's lifespan (after ``app.state.services`` is set): the bot while the app
    runs, as ``app.state.bot``.  A bot that cannot start is logged, and the API serves on
    (``/ready`` says ``not running``)."""
    services: Services = app.state.services
    runner = None
    if bot_enabled(services.settings):
        try:
            runner = build_runner(services, sync=account_sync(services))
        except TgragError as err:
            log.error("the Telegram bot cannot start: %s", err)
    if runner is not None:
        await runner.start()
    app.state.bot = runner
    try:
        if runner is None:
            async with webhook_digests(services):
                yield
        else:
            # Alerts saved with /alert, sent by the dispatcher the lifespan started.
            with _alert_delivery(services, runner):
                yield
    finally:
        app.state.bot = None
        if runner is not None:
            await runner.stop()


def _alert_delivery(services: Services, runner: BotRunner | None) -> Any:
    """The bot's alert notifier added to the services while inside (nothing without a bot)."""
    from api.bot.notifier import alert_delivery

    return alert_delivery(services, runner) if runner is not None else contextlib.nullcontext()
