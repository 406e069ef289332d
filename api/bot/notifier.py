"""Alert notifications through the bot: the ``bot`` channel's ``rag.alerts.delivery.Notifier``.

An alert saved with ``/alert`` delivers to the chat that saved it (``Alert.chat_id``).  The alert
dispatcher runs on its own thread and calls :meth:`BotNotifier.send` there; the send itself is a
coroutine handed to the bot's event loop (``run_coroutine_threadsafe(...).result(timeout)``),
where the bot's client lives.

* :meth:`available` is true only while this process's bot is logged in, connected and holds the
  one-bot claim (a stand-by process must stay silent), and not inside a flood wait: otherwise the
  dispatcher leaves the bot's queue alone, and nothing counts as a failure, so notifications wait
  for the bot to come back (here or in another process).
* :meth:`send` raises :class:`~rag.errors.DeliveryFailed` for whatever Telegram refuses (the user
  blocked the bot, the chat is unknown, a flood wait, a lost connection): the dispatcher retries
  it with backoff and makes it a dead letter after ``TGRAG_ALERT_MAX_ATTEMPTS``.  A flood wait
  also pauses the notifier for the seconds Telegram asked, so the queue behind it waits instead
  of failing too.

:func:`alert_delivery` is how a host adds it (``running_bot``, the API's ``bot_lifespan``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from telethon import errors

from api.bot.alert_messages import notification_messages
from api.bot.texts import language
from rag.alerts.delivery import Notification
from rag.alerts.model import BOT
from rag.errors import DeliveryFailed

if TYPE_CHECKING:
    from api.bot.runner import BotRunner
    from api.services import Services

log = logging.getLogger("tgrag.bot")
SEND_TIMEOUT = 30.0  # seconds one notification may take on the bot's loop


class BotNotifier:
    """The ``bot`` channel's notifier over one :class:`~api.bot.runner.BotRunner` (see the module
    docstring); made on the runner's event loop."""

    channel = BOT

    def __init__(self, runner: BotRunner, loop: asyncio.AbstractEventLoop,
                 timeout: float = SEND_TIMEOUT) -> None:
        self.runner = runner
        self.loop = loop
        self.timeout = timeout
        self._paused_until = 0.0  # monotonic time a flood wait ends
        self._closed = False

    def available(self) -> bool:
        runner, client = self.runner, self.runner.client
        return (not self._closed and self.loop.is_running() and runner.state == "ok"
                and runner.holds_claim and client is not None and client.is_connected()
                and time.monotonic() >= self._paused_until)

    def send(self, notification: Notification) -> None:
        if notification.alert.chat_id is None:
            raise DeliveryFailed(f"alert {notification.alert.id} has no bot chat")
        if _on_loop(self.loop):  # waiting here would block the very loop that must send
            raise DeliveryFailed("the bot's notifier was called on the bot's own event loop")
        if not self.available():
            raise DeliveryFailed("the bot is not connected")
        try:
            future = asyncio.run_coroutine_threadsafe(self._send(notification), self.loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            raise DeliveryFailed(f"the bot stopped: {exc}") from None
        try:
            future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeliveryFailed(f"Telegram did not answer in {self.timeout:g}s") from None
        except concurrent.futures.CancelledError:  # the loop ended with the send pending
            raise DeliveryFailed("the bot stopped while sending") from None

    async def _send(self, notification: Notification) -> None:
        alert = notification.alert
        client = self.runner.client
        if client is None or not client.is_connected():
            raise DeliveryFailed("the bot is not connected")
        chat = alert.chat_id
        parts = notification_messages(alert.rule, alert.query, notification.hit,
                                      language(alert.lang))
        try:
            peer = await client.get_input_entity(chat)
            for part in parts:
                await client.send_message(peer, part, parse_mode="html", link_preview=False)
        except errors.FloodWaitError as exc:
            self._paused_until = time.monotonic() + exc.seconds
            raise DeliveryFailed(f"Telegram flood wait: {exc.seconds}s before the next "
                                 "message") from None
        except errors.UserIsBlockedError:
            raise DeliveryFailed(f"chat {chat}: the user blocked the bot") from None
        except (errors.PeerIdInvalidError, errors.InputUserDeactivatedError, ValueError):
            raise DeliveryFailed(f"chat {chat} not found (the user deleted the chat or their "
                                 "account)") from None
        except errors.RPCError as exc:
            raise DeliveryFailed(f"Telegram refused the message to chat {chat}: "
                                 f"{type(exc).__name__}: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise DeliveryFailed(f"the bot lost its connection: {exc}") from None
        log.info("alert delivered by the bot",
                 extra={"delivery": notification.id, "chat": chat})

    def close(self) -> None:
        """No more sends (one already on the loop finishes, or fails with the connection)."""
        self._closed = True


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@contextlib.contextmanager
def alert_delivery(services: Services, runner: BotRunner) -> Iterator[BotNotifier]:
    """The bot delivers the ``bot`` channel's alerts of this process while inside (call it on
    the bot's loop); the host's alert dispatcher (``services.start_alerts()``) does the sending."""
    notifier = BotNotifier(runner, asyncio.get_running_loop())
    services.add_notifier(notifier)
    try:
        yield notifier
    finally:
        services.remove_notifier(notifier)
        notifier.close()
