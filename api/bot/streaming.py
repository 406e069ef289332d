"""One bot message edited while an answer is being written.

Telegram lets a bot edit a message about once a second per chat; faster edits get
``FLOOD_WAIT_X``.  So edits are throttled to one per ``interval`` and coalesced (the newest text
wins, intermediate ones are skipped), a flood wait pushes the next edit back by the seconds
Telegram asked for, and :meth:`StreamingMessage.close` makes the final edit once allowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from telethon import errors

from api.bot.markup import Html

log = logging.getLogger("tgrag.bot")
MAX_FLOOD_WAITS = 5  # for one message; then the final edit fails and the handler says so


class StreamingMessage:
    def __init__(self, client: Any, peer: Any, message_id: int, *, interval: float,
                 shown: Html | None = None) -> None:
        self.client = client
        self.peer = peer
        self.message_id = message_id
        self.interval = interval
        self.flood_waits: list[int] = []  # the waits Telegram asked for, in order
        self.edits = 0
        self._shown = shown
        self._wanted: Html | None = shown
        self._buttons: Any = None
        self._final = False
        # The message was just sent: that counts against the limit too.  (An answer that comes
        # whole, extractive or "nothing found", is then shown by one edit, not two.)
        self._not_before = time.monotonic() + interval  # the next edit, not before
        self._dirty = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def show(self, text: Html) -> None:
        """Show ``text`` as soon as the edit limit allows (never waits)."""
        self._wanted = text
        self._dirty.set()

    async def close(self, text: Html, buttons: Any = None) -> None:
        """The final text (and buttons): waits until it is shown; raises if it cannot be."""
        self._wanted, self._buttons, self._final = text, buttons, True
        self._dirty.set()
        await self._task

    def cancel(self) -> None:
        self._task.cancel()

    async def _pump(self) -> None:
        while True:
            await self._dirty.wait()
            delay = self._not_before - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty.clear()
            text, final = self._wanted, self._final
            if text is not None and (text != self._shown or (final and self._buttons)):
                try:
                    await self.client.edit_message(
                        self.peer, self.message_id, text, parse_mode="html",
                        link_preview=False, buttons=self._buttons if final else None)
                    self.edits += 1
                except errors.FloodWaitError as exc:
                    if len(self.flood_waits) >= MAX_FLOOD_WAITS:
                        raise
                    self.flood_waits.append(exc.seconds)
                    log.info("flood wait on an answer edit: %ss", exc.seconds)
                    self._not_before = time.monotonic() + exc.seconds
                    self._dirty.set()
                    continue
                except errors.MessageNotModifiedError:
                    pass  # the same text twice (e.g. an unchanged cursor): nothing to show
                self._shown = text
                self._not_before = time.monotonic() + self.interval
            if final and not self._dirty.is_set():
                return
