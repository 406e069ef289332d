"""``tgrag login``, ``tgrag channels add|remove|list``, ``tgrag sync``, ``tgrag watch`` and
``tgrag worker``, added to the CLI by ``register(app)`` (``api/cli/__init__.py``).

Each command that talks to Telegram runs ONE event loop for its whole life (one top-level
``asyncio.run``); Telethon, the sync and the scheduler all live in it.  Every client comes from
the services' Telegram connector (``ingest.telegram.connector``), which also maps Telegram's
failures to tgrag errors, the same ones the API reports.  ``watch`` and ``worker`` run until
Ctrl-C or SIGTERM (``docker stop``), which cancel them cleanly: sync locks are released, the
client disconnects, cursors stay committed.  ``watch`` and ``worker`` also run the alert
dispatcher in the background; ``sync`` runs one pass of it when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import typer

from api.cli.alert_commands import echo_pass
from api.cli.context import maintain, open_services
from rag.errors import InputError

# Telethon and the connector (~0.5 s to import) are imported by the commands that talk to
# Telegram, not by every `tgrag` start (this module is part of the CLI's import).
if TYPE_CHECKING:
    from telethon import TelegramClient

    from api.services import Services
    from ingest.telegram.sync import SyncResult
    from rag.settings import Settings

channels_app = typer.Typer(help="Channels followed by `tgrag sync`, `watch` and `worker`.",
                           no_args_is_help=True)
LOGIN_ATTEMPTS = 3  # wrong codes or passwords before `tgrag login` gives up


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.add_typer(channels_app, name="channels")
    app.command()(sync)
    app.command()(watch)
    app.command()(worker)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)  # the one loop of this command


def _run_service(coro: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived command until it ends, Ctrl-C or SIGTERM.  Both signals cancel it (so its
    ``finally`` blocks run) and the command exits 0 saying ``stopped``."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # Not on Windows, nor outside the main thread: there, only Ctrl-C stops it cleanly.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await coro
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C / SIGTERM
        click.echo("stopped", err=True)


# -- login ----------------------------------------------------------------------------------------


def login(
    ctx: typer.Context,
    phone: str | None = typer.Option(None, help="Phone number with the country code; asked "
                                                "if not given."),
    save: bool = typer.Option(False, "--save", help="Store the session in the data folder "
                                                    "(telegram.session, mode 600) instead of "
                                                    "printing it."),
) -> None:
    """Log in to Telegram (phone, code, 2FA password) and print the session, or --save it.

    The session is printed on stdout as one `TGRAG_TG_SESSION=...` line (prompts and messages go
    to stderr, so `tgrag login >> .env` works). It gives full access to the account: keep it
    secret. With --save it goes to <data dir>/telegram.session instead, which sync, watch, worker
    and serve use when TGRAG_TG_SESSION is unset.
    """
    from telethon.sessions import StringSession

    from ingest.telegram.connector import TelegramConnector, telegram_errors
    from ingest.telegram.reader import SESSION_FILE, save_session_file

    settings: Settings = ctx.obj
    telegram = TelegramConnector(settings)
    client = telegram.client(for_login=True, receive_updates=False)

    async def main() -> tuple[Any, str]:
        await telegram.connect(client)
        try:
            with telegram_errors():  # a flood wait here: "wait N seconds and try again"
                me = await _sign_in(client, phone)
            return me, str(client.session.save())
        finally:
            await client.disconnect()

    me, session = _run(main())
    name = f"@{me.username}" if getattr(me, "username", None) else \
        (getattr(me, "first_name", None) or str(me.id))
    click.echo(f"Logged in as {name}.", err=True)
    if save:
        path = settings.data_dir / SESSION_FILE
        save_session_file(StringSession(session), path)
        click.echo(f"Session saved to {path} (readable by you only); sync, watch, worker and "
                   "serve use it when TGRAG_TG_SESSION is unset.", err=True)
        if settings.tg_session is not None and settings.tg_session.get_secret_value():
            click.echo("warning: TGRAG_TG_SESSION is set and wins over the saved file; unset it "
                       "(environment or .env) to use the file", err=True)
        return
    click.echo("The line below is a secret: anyone who has it can use your Telegram account. "
               "Put it in .env or a secret store (`tgrag login >> .env`), or use "
               "`tgrag login --save`.", err=True)
    click.echo(f"TGRAG_TG_SESSION={session}")


async def _sign_in(client: TelegramClient, phone: str | None) -> Any:
    """Send the code, then ask for it (and for the 2FA password if the account has one)."""
    from telethon import errors

    number = phone or typer.prompt("Phone number (with the country code, e.g. +79991234567)",
                                   err=True)
    try:
        await client.send_code_request(number)
    except errors.PhoneNumberInvalidError as exc:
        raise InputError(f"{number!r} is not a valid phone number",
                         hint="type it with the country code, e.g. +79991234567") from exc
    except errors.PhoneNumberBannedError as exc:
        raise InputError(f"Telegram has banned the phone number {number}",
                         hint="see https://telegram.org/faq#q-my-phone-number-is-banned") from exc
    click.echo("Telegram sent a login code to your Telegram app (or by SMS).", err=True)
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        code = typer.prompt("Login code", err=True).strip()
        try:
            return await client.sign_in(number, code=code)
        except errors.SessionPasswordNeededError:
            return await _check_password(client)
        except (errors.PhoneCodeInvalidError, errors.PhoneCodeEmptyError):
            if attempt < LOGIN_ATTEMPTS:
                click.echo(f"That code is not right; try again ({LOGIN_ATTEMPTS - attempt} "
                           "left).", err=True)
        except errors.PhoneCodeExpiredError as exc:
            raise InputError("the login code has expired",
                             hint="run `tgrag login` again and type the new code") from exc
        except errors.PhoneNumberUnoccupiedError as exc:
            raise InputError(f"no Telegram account uses the phone number {number}",
                             hint="sign up in a Telegram app first") from exc
    raise InputError(f"the login code was wrong {LOGIN_ATTEMPTS} times",
                     hint="run `tgrag login` again; the code is in the chat with 'Telegram' in "
                          "your Telegram app")


async def _check_password(client: TelegramClient) -> Any:
    from telethon import errors

    click.echo("This account has two-step verification.", err=True)
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        password = typer.prompt("Two-step verification password", hide_input=True, err=True)
        try:
            return await client.sign_in(password=password)
        except errors.PasswordHashInvalidError:
            if attempt < LOGIN_ATTEMPTS:
                click.echo(f"Wrong password; try again ({LOGIN_ATTEMPTS - attempt} left).",
                           err=True)
    raise InputError(f"the two-step verification password was wrong {LOGIN_ATTEMPTS} times",
                     hint="run `tgrag login` again; a forgotten password is reset in a Telegram "
                          "app (Settings → Privacy and Security → Two-Step Verification)")


# -- channels -------------------------------------------------------------------------------------


@channels_app.command("add")
def channels_add(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="@username, t.me link or channel id."),
    group: bool = typer.Option(
        False, "--group",
        help="Opt in to reading a group chat (supergroup or small group, by @username or id): "
             "its members' messages are indexed with their senders. Private chats are never "
             "read.",
    ),
) -> None:
    """Follow channels (resolved at the first sync); --group also group chats."""
    with open_services(ctx, "channels add") as services:
        for ref in refs:
            state = services.follow(ref, group=group)
            click.echo(f"following {state.ref}" + (" (group chat)" if state.group else ""))


@channels_app.command("remove")
def channels_remove(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="@username, id or title."),
    delete_posts: bool = typer.Option(
        False, "--delete-posts",
        help="Also delete the channels' posts from the index (waits for a running sync of them).",
    ),
) -> None:
    """Stop following channels; their posts stay searchable unless --delete-posts."""
    with open_services(ctx, "channels remove") as services:
        for ref in refs:
            done = services.remove_channel(ref, delete_posts=delete_posts)
            if done.deleted_posts is None:
                assert done.removed is not None
                click.echo(f"removed {done.removed.ref} (its posts stay indexed; "
                           "--delete-posts deletes them)")
            elif done.removed is None:
                click.echo(f"{ref} was not followed; deleted its {done.deleted_posts} posts")
            else:
                click.echo(f"removed {done.removed.ref} and deleted its {done.deleted_posts} "
                           "posts")


@channels_app.command("list")
def channels_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the channels as JSON."),
) -> None:
    """Followed channels with their cursor, last sync and status."""
    with open_services(ctx, "channels list") as services:
        states = services.channels()
        policy = services.retention()
    keep = {s.ref: policy.keep_days(s.channel_id) if s.channel_id is not None
            else policy.default_days for s in states}
    if as_json:
        click.echo(json.dumps({"channels": [{**s.to_dict(), "keep_days": keep[s.ref]}
                                            for s in states]}, ensure_ascii=False, indent=2))
        return
    if not states:
        click.echo("no channels followed; add one with `tgrag channels add @name`")
    for s in states:
        when = datetime.fromtimestamp(s.last_sync, UTC).strftime("%Y-%m-%d %H:%M") \
            if s.last_sync else "never"
        kind = "group" if s.group else "channel"
        kept = f"kept {keep[s.ref]:g}d" if keep[s.ref] else "kept forever"
        line = (f"{s.ref:<24} {kind:<7} {s.status:<8} posts {s.posts_indexed:<6} "
                f"last id {s.last_message_id:<8} synced {when}  {kept}")
        click.echo(line + (f"  error: {s.last_error}" if s.last_error else ""))


# -- sync / watch / worker ------------------------------------------------------------------------


def _echo_event(ref: str, event: str, data: dict[str, Any]) -> None:
    if event == "flood_wait":
        click.echo(f"{ref}: Telegram asks to wait {data['seconds']}s; resuming after", err=True)
    elif event == "retry":
        click.echo(f"{ref}: connection problem ({data['error']}); retry {data['attempt']} "
                   f"in {data['delay']:.0f}s", err=True)
    elif event == "failed":
        click.echo(f"{ref}: failed: {data['error']}", err=True)
    elif event == "live":
        _echo_live(ref, data)


def _echo_live(ref: str, data: dict[str, Any]) -> None:
    if "new" in data:
        click.echo(f"{ref}: {data['new']} new, {data['updated']} updated")
    elif "edited" in data:
        click.echo(f"{ref}: post {data['edited']} edited, "
                   + ("re-indexed" if data["reindexed"] else "text unchanged"))
    elif "deleted" in data:
        ids = ", ".join(str(i) for i in data["deleted"])
        click.echo(f"{ref}: post{'s' if len(data['deleted']) > 1 else ''} {ids} deleted")


def _echo_result(r: SyncResult) -> None:
    if r.status == "ok":
        click.echo(f"{r.ref}: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, "
                   f"{r.deleted} deleted, {r.skipped} skipped"
                   + (f", {r.expired} past retention" if r.expired else ""))
    elif r.status == "busy":
        click.echo(f"{r.ref}: skipped, another worker is syncing it")
    elif r.status == "removed":
        click.echo(f"{r.ref}: skipped, no longer followed")


def sync(
    ctx: typer.Context,
    channel: list[str] = typer.Option([], "--channel", "-c",
                                      help="Only these channels (added if new); repeatable."),
    backfill: int | None = typer.Option(None, min=1, help="Also (re)read the last N messages."),
    since: str | None = typer.Option(None, help="Read everything since YYYY-MM-DD[THH:MM]."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Sync followed channels once: new posts, then edits and deletions in the recent window."""
    from rag.search import parse_date

    if backfill and since:
        raise InputError("use either --backfill or --since, not both")
    since_dt = datetime.fromtimestamp(parse_date(since), UTC) if since else None

    async def main(services: Services) -> list[SyncResult]:
        async with services.telegram.session() as client:
            syncer = services.channel_sync(client, listener=None if as_json else _echo_event)
            refs = [services.follow(c).ref for c in channel] or None
            return await syncer.sync_all(refs, backfill=backfill, since=since_dt,
                                         on_result=None if as_json else _echo_result)

    with open_services(ctx, "sync") as services:
        results = _run(main(services))
        if any(r.new or r.updated or r.deleted for r in results):
            maintain(services, quiet=as_json)
        alerts = services.dispatch_alerts()  # what this sync added, checked against alerts
    if not as_json:
        echo_pass(alerts)
    if as_json:
        click.echo(json.dumps({"results": [r.to_dict() for r in results]}, ensure_ascii=False,
                              indent=2))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def watch(ctx: typer.Context) -> None:
    """Follow the channels live: index new posts, re-index edits, drop deleted posts.

    Catches up first (what was posted while nothing watched), then follows Telegram's updates,
    which come only for channels the account has joined (`tgrag worker` syncs the others). Runs
    until Ctrl-C or SIGTERM.
    """
    from ingest.telegram.live import register_live_handlers

    async def main(services: Services) -> None:
        async with services.telegram.session(receive_updates=True) as client:
            syncer = services.channel_sync(client, listener=_echo_event)
            register_live_handlers(client, syncer)
            for result in await syncer.sync_all():
                _echo_result(result)
            click.echo("watching; Ctrl-C to stop", err=True)
            await client.run_until_disconnected()

    with open_services(ctx, "watch") as services:
        services.start_alerts()  # new posts are checked against alerts as they come
        _run_service(main(services))


def worker(
    ctx: typer.Context,
    interval: float | None = typer.Option(None, help="Seconds between runs; default "
                                                     "TGRAG_SYNC_INTERVAL."),
) -> None:
    """Sync all followed channels now and then every interval, until Ctrl-C or SIGTERM; after
    each run, prune the posts past their retention (when TGRAG_RETENTION_DAYS or a channel's
    --keep-days is set).

    Several workers share the channels (each is synced by one worker at a time, under a lock in
    Redis). For a single run, e.g. from cron, use `tgrag sync`.
    """
    from ingest.telegram.scheduler import SyncScheduler

    settings: Settings = ctx.obj
    every = settings.sync_interval if interval is None else interval
    if every <= 0:
        raise InputError("the sync interval is 0",
                         hint="pass --interval or set TGRAG_SYNC_INTERVAL > 0; for a single run "
                              "use `tgrag sync`")

    async def main(services: Services) -> None:
        from api.bot.hosting import fixed_sync, running_bot

        async with services.telegram.session() as client:
            syncer = services.channel_sync(client, listener=_echo_event)

            async def prune_after_sync() -> None:  # retention, when set (ingest/retention.py)
                report = await services.scheduled_prune()
                if report is not None and report.deleted:
                    click.echo(f"pruned {report.deleted} posts past their retention")

            scheduler = SyncScheduler(syncer, interval=every, on_result=_echo_result,
                                      after_run=prune_after_sync)
            click.echo(f"syncing the followed channels every {every:g}s; Ctrl-C to stop",
                       err=True)
            # The bot too, on this loop, when TGRAG_TG_BOT_TOKEN is set.
            async with running_bot(services, sync=fixed_sync(syncer)):
                await scheduler.run_forever()

    with open_services(ctx, "worker") as services:
        services.start_alerts()  # checks synced posts against alerts, delivers webhooks
        _run_service(main(services))
