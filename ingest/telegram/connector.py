"""Connecting to Telegram, and what its failures mean to a user — mapped once, here.

Every surface (the CLI's login/sync/watch/worker, the API's sync routes, the bot) gets its clients
from a :class:`TelegramConnector` and sees the same errors: a connection that fails or drops is
:class:`~rag.errors.TelegramUnavailable` (exit 3, HTTP 503), a session that is not or no longer
logged in is :class:`~rag.errors.NotLoggedIn` (exit 2, HTTP 400), a flood wait on a one-shot
request is ``TelegramUnavailable`` saying how long to wait.

:func:`new_client` is the one place a client is made: tests replace it to put a fake MTProto
transport under the real ``TelegramClient``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from telethon import TelegramClient, errors

from ingest.telegram.reader import make_client
from rag.errors import NotLoggedIn, TelegramUnavailable, TgragError
from rag.settings import Settings

LOGIN_HINT = ("run `tgrag login --save`, or set TGRAG_TG_SESSION to the string `tgrag login` "
              "prints")


def new_client(settings: Settings, **options: Any) -> TelegramClient:
    """A client for the settings (``make_client`` options); the seam tests replace."""
    return make_client(settings, **options)


def telegram_error(exc: BaseException, *, connected: bool = True) -> TgragError | None:
    """The tgrag error a Telethon or connection failure means (``connected``: the connection
    was up and dropped, rather than never made); None for anything else."""
    if isinstance(exc, TgragError):
        return exc
    if isinstance(exc, errors.FloodWaitError):
        return TelegramUnavailable(f"Telegram asks to wait {exc.seconds}s before the next request",
                                   hint=f"wait {exc.seconds} seconds and try again")
    if isinstance(exc, errors.UnauthorizedError | errors.AuthKeyError):
        return NotLoggedIn("the Telegram session was logged out (or its key was revoked)",
                           hint=LOGIN_HINT)
    if isinstance(exc, ConnectionError | OSError):  # includes TimeoutError
        if connected:
            return TelegramUnavailable(
                f"lost the connection to Telegram: {exc}",
                hint="check the network and run the command again: it catches up from the "
                     "saved cursors")
        return TelegramUnavailable(f"cannot connect to Telegram: {exc}",
                                   hint="check the network connection and try again")
    return None


@contextlib.contextmanager
def telegram_errors(*, connected: bool = True) -> Iterator[None]:
    """Re-raise Telegram and connection failures as their tgrag errors."""
    try:
        yield
    except Exception as exc:
        mapped = telegram_error(exc, connected=connected)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


class TelegramConnector:
    """Makes and connects Telegram clients for one deployment's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def client(self, **options: Any) -> TelegramClient:
        """A new, unconnected client (``receive_updates``, ``for_login``)."""
        return new_client(self.settings, **options)

    async def connect(self, client: TelegramClient) -> None:
        with telegram_errors(connected=False):
            await client.connect()

    async def connected(self, *, receive_updates: bool = False) -> TelegramClient:
        """A connected client whose session is logged in (:class:`NotLoggedIn` otherwise)."""
        client = self.client(receive_updates=receive_updates)
        await self.connect(client)
        try:
            with telegram_errors():
                authorized = await client.is_user_authorized()
        except BaseException:
            await client.disconnect()
            raise
        if not authorized:
            await client.disconnect()
            raise NotLoggedIn("the Telegram session is not logged in (never, or logged out since)",
                              hint=LOGIN_HINT)
        return client

    @contextlib.asynccontextmanager
    async def session(self, *, receive_updates: bool = False) -> AsyncIterator[TelegramClient]:
        """A connected, logged-in client for the block; disconnected after it.  Telegram
        failures inside the block come out as tgrag errors."""
        client = await self.connected(receive_updates=receive_updates)
        try:
            with telegram_errors():
                yield client
        finally:
            await client.disconnect()
