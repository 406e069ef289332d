"""The bot's life: log in, answer updates, survive network losses and a revoked token.

:class:`BotRunner` has ``start()`` and ``stop()`` for a host's event loop (the API's lifespan,
``tgrag worker``, ``tgrag bot``): ``start`` returns at once and a supervisor task does the rest
on that loop.  It takes the one-bot claim (:mod:`api.bot.status`), connects a fresh client,
logs in with the token (``auth.importBotAuthorization``; the session file keeps the login and
the update state, so a restart neither logs in again nor misses what was sent meanwhile),
attaches the handlers and watches: a heartbeat renews the claim, publishes the state and asks
Telegram for the update state, which fails at once when the token was revoked.  A lost
connection (``offline``) or a refused or revoked token (``unauthorized``) is retried with
exponential backoff; the state is what ``GET /ready`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telethon import TelegramClient, errors, functions, types

from api.bot.access import AccessList, RateLimits
from api.bot.backend import BotBackend
from api.bot.handlers import BotHandlers
from api.bot.status import StatusBoard
from api.bot.texts import menu
from rag.errors import InputError

log = logging.getLogger("tgrag.bot")
AUTH_ERRORS: tuple[type[BaseException], ...] = (
    errors.AccessTokenInvalidError, errors.AccessTokenExpiredError, errors.UnauthorizedError,
)
StateListener = Callable[[str, str], None]  # (state, detail)


def bot_id_of(token: str) -> int:
    """The bot's id, the token's first part (``123456:AA…``)."""
    head, sep, secret = token.strip().partition(":")
    if not (sep and head.isdigit() and secret):
        raise InputError("TGRAG_TG_BOT_TOKEN does not look like a bot token",
                         hint="copy the token @BotFather gave, e.g. 123456789:AAH…")
    return int(head)


class _Unauthorized(Exception):
    """Telegram refused the bot's authorization while it ran (revoked token)."""


class BotRunner:
    def __init__(
        self,
        token: str,
        backend: BotBackend,
        client_factory: Callable[[], TelegramClient],
        *,
        access: AccessList,
        rate_limit: int,
        edit_interval: float,
        board: StatusBoard | None = None,
        backoff: tuple[float, float] = (1.0, 300.0),
        heartbeat: float = 30.0,
        on_state: StateListener | None = None,
    ) -> None:
        self.token = token
        self.bot_id = bot_id_of(token)
        self.backend = backend
        self.client_factory = client_factory
        self.access = access
        self.limits = RateLimits(rate_limit)
        self.edit_interval = edit_interval
        self.board = board
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.on_state = on_state
        self.state, self.detail, self.username = "stopped", "", ""
        self.client: TelegramClient | None = None
        self.handlers: BotHandlers | None = None
        self.attempt_times: list[float] = []  # loop time of each connection attempt
        self._task: asyncio.Task[None] | None = None
        # Work that lives as long as the bot runs (the scheduled digest), started by start().
        self._jobs: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        self._job_tasks: list[asyncio.Task[None]] = []
        self._auth_error: BaseException | None = None
        self._holding = False  # this process has the claim: its state is the bot's state
        # How long the claim and the published state outlive a heartbeat that did not come
        # (three beats, never under 10 s: a busy loop must not hand the bot to a stand-by).
        self._lease = max(3 * heartbeat, 10.0)

    # -- public ---------------------------------------------------------------------------------

    def run_alongside(self, name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``job()`` as a task while the bot runs (from :meth:`start` to :meth:`stop`); it
        checks :attr:`can_send` itself before sending anything."""
        self._jobs[name] = job

    @property
    def can_send(self) -> bool:
        """Whether this process may send messages as the bot now: logged in, connected and
        holding the one-bot claim (a stand-by process must stay silent)."""
        client = self.client
        return (self.state == "ok" and self._holding and client is not None
                and client.is_connected())

    async def start(self) -> None:
        """Start the supervisor on the running loop; returns at once."""
        if self._task is not None:
            return
        if self.access.empty:
            log.warning("TGRAG_BOT_USERS and TGRAG_BOT_ADMINS are empty: the bot answers nobody")
        self._set("starting")
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._supervise(), name="tgrag-bot")
        self._job_tasks = [loop.create_task(self._keep_running(name, job), name=f"tgrag-{name}")
                           for name, job in self._jobs.items()]

    async def _keep_running(self, name: str,
                            job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A job that fails is logged and started again a minute later (the bot goes on)."""
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bot %s failed; restarting it in 60s", name)
                await asyncio.sleep(60)

    async def stop(self) -> None:
        """Disconnect, give the claim up, and say so (``stopped``)."""
        jobs, self._job_tasks = self._job_tasks, []
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.board is not None and self._holding:
            with contextlib.suppress(Exception):
                self.board.clear()
        self._holding = False
        self._set("stopped")

    async def wait(self) -> None:
        """Until stopped (``tgrag bot`` runs this)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    def status(self) -> dict[str, str]:
        return {"state": self.state, "detail": self.detail, "bot": self.username}

    @property
    def holds_claim(self) -> bool:
        """Whether this process holds the one-bot claim (a stand-by process must stay silent)."""
        return self._holding

    # -- supervision ----------------------------------------------------------------------------

    def _set(self, state: str, detail: str = "") -> None:
        changed = (state, detail) != (self.state, self.detail)
        self.state, self.detail = state, detail
        if self.board is not None and self._holding:  # a standby process must not overwrite it
            try:
                self.board.publish(state, detail, bot=self.username,
                                   ttl=self._lease)
            except Exception as exc:  # Redis briefly down: the bot itself can go on
                log.warning("cannot publish the bot state: %s", exc)
        if changed:
            (log.info if state in ("ok", "starting", "connecting", "stopped") else
             log.warning)("bot %s%s", state, f": {detail}" if detail else "")
            if self.on_state is not None:
                self.on_state(state, detail)

    async def _supervise(self) -> None:
        base, ceiling = self.backoff
        delay = base
        claim = self.board.claim(self.bot_id, ttl=self._lease) \
            if self.board is not None else None
        try:
            while True:
                if claim is not None and not (claim.held and claim.renew()) \
                        and not claim.acquire():
                    self._holding = False
                    self._set("standby", "another process runs this bot")
                    await asyncio.sleep(self.heartbeat)
                    continue
                self._holding = True
                try:
                    await self._run_once(claim)
                    delay = base
                except asyncio.CancelledError:
                    raise
                except AUTH_ERRORS + (_Unauthorized,) as exc:
                    self._set("unauthorized", _auth_reason(exc))
                except (ConnectionError, OSError) as exc:
                    self._set("offline", str(exc) or type(exc).__name__)
                except errors.RPCError as exc:
                    self._set("offline", f"Telegram error: {exc}")
                except Exception as exc:  # keep the bot alive whatever broke
                    log.exception("bot crashed; restarting")
                    self._set("offline", f"{type(exc).__name__}: {exc}")
                retry_in = delay
                delay = min(delay * 2, ceiling)
                log.info("bot: retrying in %.1fs", retry_in)
                await self._pause(retry_in, claim)
        finally:
            if claim is not None:
                with contextlib.suppress(Exception):
                    claim.release()

    async def _pause(self, seconds: float, claim: Any) -> None:
        """Wait before the next attempt, keeping the claim and the published state alive."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(left, self.heartbeat))
            if claim is not None and not claim.renew():
                self._holding = False
                return
            self._set(self.state, self.detail)

    async def _run_once(self, claim: Any) -> None:
        """One connection's life: connect, log in, answer until it ends (then raise why)."""
        self.attempt_times.append(asyncio.get_running_loop().time())
        self._auth_error = None
        if self.state not in ("offline", "unauthorized"):  # a retry keeps saying what failed
            self._set("connecting")
        client = self.client_factory()
        self.client = client
        try:
            await client.connect()
            if not await client.is_user_authorized():
                await client.sign_in(bot_token=self.token)
            me = await client.get_me()
            if me is None or not getattr(me, "bot", False) or me.id != self.bot_id:
                raise _Unauthorized("the session is not logged in as this bot")
            self.username = me.username or ""
            self.handlers = BotHandlers(
                self.backend, self.access, self.limits, edit_interval=self.edit_interval,
                bot_username=self.username, on_unauthorized=self._unauthorized)
            self.handlers.attach(client)
            await self._set_commands(client)
            self._set("ok")
            await self._watch(client, claim)
        finally:
            self.client = None
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def _watch(self, client: TelegramClient, claim: Any) -> None:
        connection = asyncio.ensure_future(client.run_until_disconnected())
        beat = asyncio.ensure_future(self._beat(client, claim))
        try:
            done, _ = await asyncio.wait({connection, beat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (connection, beat):
                task.cancel()
            await asyncio.gather(connection, beat, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self._auth_error is not None:
            raise _Unauthorized(str(self._auth_error))
        raise ConnectionError("disconnected from Telegram")

    async def _beat(self, client: TelegramClient, claim: Any) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if claim is not None and not claim.renew():
                raise ConnectionError("lost the bot claim to another process")
            # Cheap, and refused at once with AUTH_KEY_UNREGISTERED once the token is revoked.
            await client(functions.updates.GetStateRequest())
            self._set("ok")

    def _unauthorized(self, exc: BaseException) -> None:
        """A handler's request was refused as unauthorized: reconnect (and log in again)."""
        self._auth_error = exc
        client = self.client
        if client is not None:
            asyncio.get_running_loop().create_task(client.disconnect())

    async def _set_commands(self, client: TelegramClient) -> None:
        """The command menu in Telegram apps, per language (best effort)."""
        for lang_code, lang in (("", "ru"), ("en", "en")):
            commands = [types.BotCommand(c, d) for c, d in menu(lang)]  # type: ignore[arg-type]
            try:
                await client(functions.bots.SetBotCommandsRequest(
                    scope=types.BotCommandScopeDefault(), lang_code=lang_code, commands=commands))
            except errors.RPCError as exc:
                log.info("cannot set the bot's commands: %s", exc)


def _auth_reason(exc: BaseException) -> str:
    if isinstance(exc, errors.AccessTokenExpiredError):
        return "the bot token was revoked (@BotFather /revoke); set the new TGRAG_TG_BOT_TOKEN"
    if isinstance(exc, errors.AccessTokenInvalidError):
        return "Telegram refused the bot token; check TGRAG_TG_BOT_TOKEN"
    return f"Telegram refused the bot's authorization ({exc}); check TGRAG_TG_BOT_TOKEN"
