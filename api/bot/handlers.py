"""The bot's Telegram handlers: an update in, use cases called, a formatted reply out.

Private chats only (in a group every member would read the results).  Every update goes through
the same gate: a stranger gets the one polite refusal (or silence once strangers have had their
share, see :mod:`api.bot.access`), an allowed user over the rate limit is told once to wait, and
everything else runs against that user's tenant (:meth:`BotBackend.for_tenant`).  Use cases are
blocking, so they run in threads; a failure becomes one sentence (:mod:`api.bot.failures`) and
the bot goes on.

* a message: ``/search …`` or plain words → a results page with buttons (``api.bot.callbacks``);
  ``/ask …`` or words ending in "?" → an answer written into one message as it streams;
  ``/digest [3d] [@x] [#t]`` → the period's stories (``/digest off|on``: the daily digest);
  ``/channels``, ``/follow @x``, ``/unfollow @x`` (admins), ``/help``; a forwarded channel post →
  an offer to follow the channel (admins); ``/alert …``, ``/alerts``, ``/unalert ID``: the
  user's alerts, delivered to their chat (``api.bot.notifier``);
* a button: the next/previous page or the posts similar to one, editing the same message; or
  removing one of the user's alerts;
* an inline query (``@bot query`` in any chat): result articles, ``private`` (never cached for
  another user).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from telethon import Button, TelegramClient, errors, events, types

from api.bot.access import AccessList, Grant, RateLimits
from api.bot.alert_messages import alerts_messages, describe_row
from api.bot.backend import BotBackend, TenantBackend
from api.bot.callbacks import (
    FollowAction,
    PageAction,
    SimilarAction,
    UnalertAction,
    follow_data,
    page_data,
    parse_action,
    similar_data,
    unalert_data,
)
from api.bot.failures import failure_text, log_failure
from api.bot.formatting import (
    PageView,
    channels_messages,
    digest_messages,
    final_answer,
    inline_article,
    results_page,
    similar_view,
    streaming_answer,
    title_of,
)
from api.bot.markup import Html
from api.bot.query import BotQuery, is_question, parse_alert, parse_query, split_command
from api.bot.streaming import StreamingMessage
from api.bot.texts import Lang, label, language, posts_count, t
from rag.digest import DURATION
from rag.search import MAX_OFFSET

log = logging.getLogger("tgrag.bot")
PAGE_SIZE = 5
INLINE_RESULTS = 10
BUTTONS_PER_ROW = 3


@dataclass(slots=True)
class Caller:
    """Who sent the update, what they may do and in which language to answer."""

    user_id: int
    grant: Grant
    lang: Lang
    backend: TenantBackend


class BotHandlers:
    def __init__(self, backend: BotBackend, access: AccessList, limits: RateLimits, *,
                 edit_interval: float, bot_username: str = "",
                 on_unauthorized: Callable[[BaseException], None] | None = None) -> None:
        self.backend = backend
        self.access = access
        self.limits = limits
        self.edit_interval = edit_interval
        self.bot_username = bot_username
        self.on_unauthorized = on_unauthorized
        self._asking: set[int] = set()  # users with an answer being written (one each)

    def attach(self, client: TelegramClient) -> None:
        client.add_event_handler(self.on_message,
                                 events.NewMessage(incoming=True, func=_is_private))
        client.add_event_handler(self.on_callback, events.CallbackQuery())
        client.add_event_handler(self.on_inline, events.InlineQuery())

    # -- the gate -------------------------------------------------------------------------------

    def _caller(self, user: Any) -> tuple[Caller | None, Lang]:
        lang = language(getattr(user, "lang_code", None))
        grant = self.access.lookup(user.id, getattr(user, "username", None)) if user else None
        if grant is None:
            return None, lang
        return Caller(user.id, grant, lang, self.backend.for_tenant(grant.tenant)), lang

    def _limited(self, caller: Caller) -> Html | None:
        """The "please wait" text the first time a user runs out of requests, "" after that
        (stay silent), None when the request may go on."""
        bucket = self.limits.allow(caller.user_id)
        if bucket is None:
            return None
        if bucket.warned:
            return Html("")
        bucket.warned = True
        return t(caller.lang, "rate_limited", seconds=bucket.retry_after())

    def _telegram_failed(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, errors.UnauthorizedError) and self.on_unauthorized is not None:
            self.on_unauthorized(exc)
        log.warning("bot %s: Telegram refused: %s", what, exc)

    # -- messages -------------------------------------------------------------------------------

    async def on_message(self, event: events.NewMessage.Event) -> None:
        try:
            sender = await event.get_sender()
            caller, lang = self._caller(sender)
            if caller is None:
                if self.limits.may_refuse():
                    await event.respond(t(lang, "refusal"), parse_mode="html")
                return
            wait = self._limited(caller)
            if wait is not None:
                if wait:
                    await event.respond(wait, parse_mode="html")
                return
            try:
                await self._route(event, caller)
            except errors.RPCError:
                raise
            except Exception as exc:
                log_failure(exc, "message")
                await event.respond(failure_text(exc, caller.lang), parse_mode="html")
        except errors.RPCError as exc:
            self._telegram_failed(exc, "reply")

    async def _route(self, event: Any, caller: Caller) -> None:
        message = event.message
        if message.fwd_from is not None:
            await self._forwarded(event, caller)
            return
        text = message.message or ""
        command, rest = split_command(text)
        # The language the scheduled digest is written in (a write only when it changes).
        self.backend.remember_user(caller.user_id, caller.lang)
        if command in ("start", "help"):
            await self._reply(event, self._help(caller))
        elif command == "search":
            await self._search(event, caller, rest)
        elif command == "ask":
            await self._ask(event, caller, rest)
        elif command == "digest":
            await self._digest(event, caller, rest)
        elif command == "channels":
            await self._channels(event, caller)
        elif command in ("follow", "unfollow"):
            await self._follow_command(event, caller, command, rest)
        elif command == "alert":
            await self._alert(event, caller, rest)
        elif command == "alerts":
            await self._alerts(event, caller)
        elif command == "unalert":
            await self._unalert(event, caller, rest)
        elif command is not None:
            await self._reply(event, t(caller.lang, "unknown_command"))
        elif not text.strip():
            await self._reply(event, t(caller.lang, "empty_query"))
        elif is_question(text):
            await self._ask(event, caller, text)
        else:
            await self._search(event, caller, text)

    async def _reply(self, event: Any, text: Html, buttons: Any = None) -> Any:
        return await event.respond(text, parse_mode="html", link_preview=False, buttons=buttons)

    def _help(self, caller: Caller) -> Html:
        admin = t(caller.lang, "help_admin") if caller.grant.admin else Html("")
        schedule = self.backend.digest_schedule
        daily = t(caller.lang, "help_daily", when=schedule) if schedule else Html("")
        return t(caller.lang, "help", bot=self.bot_username or "bot", admin=admin,
                 user_id=caller.user_id, daily=daily)

    # -- search ---------------------------------------------------------------------------------

    async def _page(self, caller: Caller, shown_query: str, query: BotQuery, source: int,
                    offset: int) -> tuple[Html, Any]:
        page = await asyncio.to_thread(caller.backend.search, query.text, query.filters,
                                       PAGE_SIZE, offset)
        view = results_page(shown_query, page, offset, page.next_offset, caller.lang)
        return view.text, self._results_keyboard(view, caller.lang, source, offset)

    async def _search(self, event: Any, caller: Caller, text: str) -> None:
        query = parse_query(text)
        if not query.text:
            await self._reply(event, t(caller.lang, "empty_query"))
            return
        body, buttons = await self._page(caller, text.strip(), query, event.message.id, 0)
        await self._reply(event, body, buttons)

    def _results_keyboard(self, view: PageView, lang: Lang, source: int,
                          offset: int) -> list[list[Any]] | None:
        similar = [Button.inline(label(lang, "similar_button", n=offset + i),
                                 similar_data(source, offset, h.channel_id, h.message_id))
                   for i, h in enumerate(view.shown, 1)]
        rows = [similar[i:i + BUTTONS_PER_ROW] for i in range(0, len(similar), BUTTONS_PER_ROW)]
        nav = []
        if offset > 0:
            nav.append(Button.inline(label(lang, "prev"),
                                     page_data(source, max(0, offset - PAGE_SIZE))))
        if view.next_offset is not None and view.next_offset <= MAX_OFFSET:
            nav.append(Button.inline(label(lang, "next"), page_data(source, view.next_offset)))
        if nav:
            rows.append(nav)
        return rows or None

    # -- buttons --------------------------------------------------------------------------------

    async def on_callback(self, event: events.CallbackQuery.Event) -> None:
        try:
            sender = await event.get_sender()
            caller, lang = self._caller(sender)
            if caller is None:
                await event.answer(t(lang, "refusal") if self.limits.may_refuse() else None,
                                   alert=True)
                return
            wait = self._limited(caller)
            if wait is not None:
                await event.answer(wait or None)
                return
            action = parse_action(event.data)
            if action is None:
                await event.answer(t(caller.lang, "stale_button"), alert=True)
                return
            try:
                if isinstance(action, FollowAction):
                    await self._follow_button(event, caller, action)
                elif isinstance(action, UnalertAction):
                    await self._unalert_button(event, caller, action)
                else:
                    await self._browse(event, caller, action)
            except errors.RPCError:
                raise
            except Exception as exc:
                log_failure(exc, "button")
                await event.answer(failure_text(exc, caller.lang), alert=True)
        except errors.MessageNotModifiedError:
            with contextlib.suppress(errors.RPCError):
                await event.answer()
        except errors.RPCError as exc:
            self._telegram_failed(exc, "button")

    async def _query_of(self, event: Any, message_id: int) -> str | None:
        """The query the user typed in their message ``message_id`` of this chat (None if that
        message is gone or is not a query)."""
        source = await event.client.get_messages(await event.get_input_chat(), ids=message_id)
        if source is None or source.out or source.fwd_from is not None:
            return None
        command, rest = split_command(source.message or "")
        return (rest or None) if command in (None, "search") else None

    async def _browse(self, event: Any, caller: Caller, action: PageAction | SimilarAction) -> None:
        shown = await self._query_of(event, action.query_message)
        if shown is None:
            await event.answer(t(caller.lang, "source_gone"), alert=True)
            return
        if isinstance(action, PageAction):
            body, buttons = await self._page(caller, shown, parse_query(shown),
                                             action.query_message, action.offset)
        else:
            body, buttons = await self._similar(caller, action)
        await event.answer()
        await event.edit(body, parse_mode="html", link_preview=False, buttons=buttons)

    async def _similar(self, caller: Caller, action: SimilarAction) -> tuple[Html, Any]:
        backend = caller.backend
        post = await asyncio.to_thread(backend.post, action.channel_id, action.message_id)
        found = await asyncio.to_thread(backend.similar, action.channel_id, action.message_id,
                                        PAGE_SIZE)
        body, shown = similar_view(title_of(post), post.date, found.hits, caller.lang)
        lang = caller.lang
        similar = [Button.inline(label(lang, "similar_button", n=i),
                                 similar_data(action.query_message, action.offset,
                                              h.channel_id, h.message_id))
                   for i, h in enumerate(shown, 1)]
        rows = [similar[i:i + BUTTONS_PER_ROW] for i in range(0, len(similar), BUTTONS_PER_ROW)]
        rows.append([Button.inline(label(lang, "back_to_results"),
                                   page_data(action.query_message, action.offset))])
        return body, rows

    # -- ask ------------------------------------------------------------------------------------

    async def _ask(self, event: Any, caller: Caller, text: str) -> None:
        query = parse_query(text)
        if not query.text:
            await self._reply(event, t(caller.lang, "empty_query"))
            return
        if caller.user_id in self._asking:
            await self._reply(event, t(caller.lang, "ask_busy"))
            return
        self._asking.add(caller.user_id)
        try:
            await self._answer(event, caller, query)
        finally:
            self._asking.discard(caller.user_id)

    async def _answer(self, event: Any, caller: Caller, query: BotQuery) -> None:
        lang = caller.lang
        placeholder = await event.reply(t(lang, "thinking"), parse_mode="html")
        peer = await event.get_input_chat()
        message = StreamingMessage(event.client, peer, placeholder.id,
                                   interval=self.edit_interval, shown=t(lang, "thinking"))
        try:
            try:
                answer = await self._stream(caller, query, message)
                parts = final_answer(answer, lang)
            except Exception as exc:
                log_failure(exc, "ask")
                parts = [failure_text(exc, lang)]
            await message.close(parts[0])
            for part in parts[1:]:
                await event.client.send_message(peer, part, parse_mode="html",
                                                link_preview=False)
        finally:
            message.cancel()

    async def _stream(self, caller: Caller, query: BotQuery,
                      message: StreamingMessage) -> dict[str, Any]:
        """Run the blocking QA stream in a thread; show the text as it grows."""
        loop = asyncio.get_running_loop()
        events_queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = False
        done = object()

        def produce() -> None:
            stream: Iterator[Any] = caller.backend.ask_stream(query.text, query.filters)
            try:
                for item in stream:
                    loop.call_soon_threadsafe(events_queue.put_nowait, item)
                    if stop:  # the bot is stopping: close the LLM stream too
                        break
            except BaseException as exc:  # handed to the bot's loop, which reports it
                loop.call_soon_threadsafe(events_queue.put_nowait, exc)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
                loop.call_soon_threadsafe(events_queue.put_nowait, done)

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        text = ""
        answer: dict[str, Any] | None = None
        try:
            while True:
                item = await events_queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                if item.type == "token":
                    text += item.data
                    message.show(streaming_answer(text, caller.lang))
                elif item.type == "done":
                    answer = item.data
        finally:
            stop = True
            await asyncio.shield(worker)
        if answer is None:
            raise RuntimeError("the answer stream ended without its final event")
        return answer

    # -- digest ---------------------------------------------------------------------------------

    async def _digest(self, event: Any, caller: Caller, rest: str) -> None:
        lang = caller.lang
        choice = rest.strip().lower()
        if choice in ("off", "on", "stop", "start"):
            wanted = choice in ("on", "start")
            self.backend.remember_user(caller.user_id, lang, digest=wanted)
            schedule = self.backend.digest_schedule
            if not wanted:
                await self._reply(event, t(lang, "digest_off"))
            else:
                await self._reply(event, t(lang, "digest_on", when=schedule) if schedule
                                  else t(lang, "digest_not_scheduled"))
            return
        query = parse_query(rest)
        if query.text and not DURATION.match(query.text):
            await self._reply(event, t(lang, "digest_usage"))
            return
        if caller.user_id in self._asking:  # one long answer at a time per user
            await self._reply(event, t(lang, "ask_busy"))
            return
        self._asking.add(caller.user_id)
        try:
            progress = await self._reply(event, t(lang, "digest_working"))
            try:
                found = await asyncio.to_thread(caller.backend.digest, query.text or None,
                                                query.filters)
                parts = digest_messages(found, lang)
            except Exception as exc:
                log_failure(exc, "digest")
                parts = [failure_text(exc, lang)]
            peer = await event.get_input_chat()
            await event.client.edit_message(peer, progress.id, parts[0], parse_mode="html",
                                            link_preview=False)
            for part in parts[1:]:
                await event.client.send_message(peer, part, parse_mode="html",
                                                link_preview=False)
        finally:
            self._asking.discard(caller.user_id)

    # -- channels -------------------------------------------------------------------------------

    async def _channels(self, event: Any, caller: Caller) -> None:
        rows = await asyncio.to_thread(caller.backend.channels)
        for part in channels_messages(rows, caller.lang, admin=caller.grant.admin):
            await self._reply(event, part)

    async def _follow_command(self, event: Any, caller: Caller, command: str, rest: str) -> None:
        lang = caller.lang
        if not caller.grant.admin:
            await self._reply(event, t(lang, "admin_only"))
            return
        ref = rest.split()[0] if rest.split() else ""
        if not ref:
            await self._reply(event, t(lang, f"{command}_usage"))
            return
        if command == "unfollow":
            removed = await asyncio.to_thread(caller.backend.unfollow, ref)
            key = "unfollowed" if removed else "not_followed"
            await self._reply(event, t(lang, key, ref=_shown_ref(removed or ref)))
            return
        progress = await self._reply(event, t(lang, "following", ref=_shown_ref(ref)))
        text = await self._follow(caller, ref)
        await event.client.edit_message(await event.get_input_chat(), progress.id, text,
                                        parse_mode="html", link_preview=False)

    async def _follow(self, caller: Caller, ref: str) -> Html:
        lang = caller.lang
        try:
            result = await caller.backend.follow(ref)
        except Exception as exc:
            log_failure(exc, "follow")
            return failure_text(exc, lang)
        shown = _shown_ref(result.ref)
        if result.status == "synced":
            return t(lang, "followed", title=result.title or shown,
                     posts=posts_count(lang, result.posts), new=result.new)
        if result.status == "queued":
            return t(lang, "followed_later", ref=shown)
        if result.status == "busy":
            return t(lang, "follow_busy", ref=shown)
        return t(lang, "follow_failed", ref=shown, error=result.error or "?")

    async def _follow_button(self, event: Any, caller: Caller, action: FollowAction) -> None:
        if not caller.grant.admin:
            await event.answer(t(caller.lang, "admin_only"), alert=True)
            return
        ref = action.ref[1:] if action.ref.startswith("c") and action.ref[1:].isdigit() \
            else action.ref
        await event.answer()
        await event.edit(t(caller.lang, "following", ref=_shown_ref(ref)), parse_mode="html")
        await event.edit(await self._follow(caller, ref), parse_mode="html", link_preview=False)

    async def _forwarded(self, event: Any, caller: Caller) -> None:
        lang = caller.lang
        message = event.message
        peer = message.fwd_from.from_id
        if not isinstance(peer, types.PeerChannel):
            await self._reply(event, t(lang, "forward_unknown"))
            return
        chat = getattr(message.forward, "chat", None) if message.forward else None
        username = getattr(chat, "username", None) or ""
        title = getattr(chat, "title", None) or (f"@{username}" if username else
                                                 str(peer.channel_id))
        known = await asyncio.to_thread(caller.backend.knows_channel, peer.channel_id, username)
        if known:
            await self._reply(event, t(lang, "forward_known", title=title))
        elif not caller.grant.admin:
            await self._reply(event, t(lang, "forward_not_admin", title=title))
        else:
            button = Button.inline(label(lang, "follow_button"),
                                   follow_data(username, peer.channel_id))
            await self._reply(event, t(lang, "forward_offer", title=title), [[button]])

    # -- alerts ---------------------------------------------------------------------------------

    async def _alert(self, event: Any, caller: Caller, rest: str) -> None:
        """``/alert [words:|mention:] query @channel #tag since: until:``: saved for this chat."""
        lang = caller.lang
        rule, query = parse_alert(rest)
        if not query.text and rule != "mention":
            await self._reply(event, t(lang, "alert_usage"))
            return
        row = await asyncio.to_thread(caller.backend.add_alert, rule, query.text, query.filters,
                                      caller.user_id, lang)
        await self._reply(event, t(lang, "alert_saved", id=row.id, what=describe_row(row, lang)))

    async def _alerts(self, event: Any, caller: Caller) -> None:
        rows = await asyncio.to_thread(caller.backend.alerts, caller.user_id)
        for text, shown in alerts_messages(rows, caller.lang):
            await self._reply(event, text, self._unalert_keyboard(shown, rows, caller.lang))

    def _unalert_keyboard(self, shown: list[Any], rows: list[Any],
                          lang: Lang) -> list[list[Any]] | None:
        number = {row.id: n for n, row in enumerate(rows, 1)}
        buttons = [Button.inline(label(lang, "unalert_button", n=number[row.id]),
                                 unalert_data(row.id)) for row in shown]
        rows_of = [buttons[i:i + 5] for i in range(0, len(buttons), 5)]
        return rows_of or None

    async def _unalert(self, event: Any, caller: Caller, rest: str) -> None:
        lang = caller.lang
        alert_id = rest.split()[0].lower() if rest.split() else ""
        if not alert_id:
            await self._reply(event, t(lang, "unalert_usage"))
            return
        row = await asyncio.to_thread(caller.backend.remove_alert, alert_id, caller.user_id)
        if row is None:
            await self._reply(event, t(lang, "alert_gone"))
        else:
            await self._reply(event, t(lang, "alert_removed", id=row.id,
                                       what=describe_row(row, lang)))

    async def _unalert_button(self, event: Any, caller: Caller, action: UnalertAction) -> None:
        """Remove the alert (only the presser's own), then show the list as it is now."""
        lang = caller.lang
        row = await asyncio.to_thread(caller.backend.remove_alert, action.alert_id,
                                      caller.user_id)
        await event.answer(label(lang, "alert_gone_short") if row is None else None)
        rows = await asyncio.to_thread(caller.backend.alerts, caller.user_id)
        text, shown = alerts_messages(rows, lang)[0]
        await event.edit(text, parse_mode="html", link_preview=False,
                         buttons=self._unalert_keyboard(shown, rows, lang))

    # -- inline mode ----------------------------------------------------------------------------

    async def on_inline(self, event: events.InlineQuery.Event) -> None:
        try:
            sender = await event.get_sender()
            caller, lang = self._caller(sender)
            if caller is None:
                await event.answer([], cache_time=0, private=True,
                                   switch_pm=label(lang, "refusal_short"), switch_pm_param="start")
                return
            wait = self._limited(caller)
            if wait is not None:
                await event.answer([], cache_time=0, private=True)
                return
            try:
                results, next_offset = await self._inline_results(event, caller)
            except Exception as exc:
                log_failure(exc, "inline query")
                results, next_offset = [], None
            await event.answer(results, cache_time=0, private=True, next_offset=next_offset)
        except errors.RPCError as exc:
            self._telegram_failed(exc, "inline answer")

    async def _inline_results(self, event: Any, caller: Caller) -> tuple[list[Any], str | None]:
        query = parse_query(event.text or "")
        offset = int(event.offset) if (event.offset or "").isdigit() else 0
        if not query.text or offset > MAX_OFFSET:
            return [], None
        page = await asyncio.to_thread(caller.backend.search, query.text, query.filters,
                                       INLINE_RESULTS, offset)
        results = []
        for hit in page:
            title, description, text = inline_article(hit, caller.lang)
            results.append(event.builder.article(
                title, description, id=hit.id[-64:], text=text, parse_mode="html",
                link_preview=False))
        next_offset = page.next_offset
        return results, str(next_offset) if next_offset is not None else None


def _is_private(event: Any) -> bool:
    return bool(getattr(event, "is_private", False))


def _shown_ref(ref: str) -> str:
    return ref if ref.isdigit() or ref.startswith("@") else f"@{ref}"
