"""``tgrag login``, ``tgrag channels add|remove|list``, ``tgrag sync``, ``tgrag watch`` and
``tgrag worker``, added to the CLI by ``register(app)`` in ``api/cli.py``.

Each command that talks to Telegram runs ONE event loop for its whole life (one top-level
``asyncio.run`` in :func:`_run`); Telethon, the sync and the scheduler all live in it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import typer

from rag.errors import InputError

if TYPE_CHECKING:
    from ingest.telegram.sync import SyncResult
    from rag.index import Index

channels_app = typer.Typer(help="Channels followed by `tgrag sync`, `watch` and `worker`.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.add_typer(channels_app, name="channels")
    app.command()(sync)
    app.command()(watch)
    app.command()(worker)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)  # the one loop of this command


def _registry(index: Index) -> Any:
    from ingest.telegram.state import ChannelRegistry

    return ChannelRegistry(index.redis, index.namespace)


# -- login ----------------------------------------------------------------------------------------


def login(ctx: typer.Context) -> None:
    """Log in to Telegram (phone, code, 2FA password) and print the session string."""
    from ingest.telegram.reader import make_client

    client = make_client(ctx.obj, for_login=True)

    async def main() -> str:
        await client.start(
            phone=lambda: typer.prompt("Phone number (international format)"),
            code_callback=lambda: typer.prompt("Login code sent by Telegram"),
            password=lambda: typer.prompt("Two-step verification password", hide_input=True),
        )
        me = await client.get_me()
        session = client.session.save()
        await client.disconnect()
        click.echo(f"Logged in as {getattr(me, 'username', None) or getattr(me, 'id', '?')}.",
                   err=True)
        return str(session)

    session = _run(main())
    click.echo("Keep this secret; put it in .env or the environment:", err=True)
    click.echo(f"TGRAG_TG_SESSION={session}")


# -- channels -------------------------------------------------------------------------------------


@channels_app.command("add")
def channels_add(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="@username, t.me link or channel id."),
) -> None:
    """Follow channels (resolved at the first sync)."""
    from api.cli import open_index

    with open_index(ctx, "channels add") as index:
        for ref in refs:
            state = _registry(index).add(ref)
            click.echo(f"following {state.ref}")


@channels_app.command("remove")
def channels_remove(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="@username, id or title."),
) -> None:
    """Stop following channels (their posts stay indexed)."""
    from api.cli import open_index

    with open_index(ctx, "channels remove") as index:
        for ref in refs:
            state = _registry(index).remove(ref)
            click.echo(f"removed {state.ref}")


@channels_app.command("list")
def channels_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the channels as JSON."),
) -> None:
    """Followed channels with their cursor, last sync and status."""
    from api.cli import open_index

    with open_index(ctx, "channels list") as index:
        states = _registry(index).list()
    if as_json:
        click.echo(json.dumps({"channels": [s.to_dict() for s in states]}, ensure_ascii=False,
                              indent=2))
        return
    if not states:
        click.echo("no channels followed; add one with `tgrag channels add @name`")
    for s in states:
        when = datetime.fromtimestamp(s.last_sync, UTC).strftime("%Y-%m-%d %H:%M") \
            if s.last_sync else "never"
        line = (f"{s.ref:<24} {s.status:<8} posts {s.posts_indexed:<6} "
                f"last id {s.last_message_id:<8} synced {when}")
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


def _echo_result(r: SyncResult) -> None:
    if r.status == "ok":
        click.echo(f"{r.ref}: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, "
                   f"{r.deleted} deleted, {r.skipped} skipped")
    elif r.status == "busy":
        click.echo(f"{r.ref}: skipped, another worker is syncing it")


async def _connected(index: Index, *, receive_updates: bool) -> Any:
    from ingest.telegram.reader import make_client

    client = make_client(index.settings, receive_updates=receive_updates)
    await client.connect()
    if not await client.is_user_authorized():
        await client.disconnect()
        raise InputError("the Telegram session is not logged in",
                         hint="run `tgrag login` and set TGRAG_TG_SESSION")
    return client


def sync(
    ctx: typer.Context,
    channel: list[str] = typer.Option([], "--channel", "-c",
                                      help="Only these channels (added if new); repeatable."),
    backfill: int | None = typer.Option(None, min=1, help="Also (re)read the last N messages."),
    since: str | None = typer.Option(None, help="Read everything since YYYY-MM-DD[THH:MM]."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Sync followed channels: new posts, then edits and deletions in the recent window."""
    from api.cli import open_index
    from ingest.telegram.sync import ChannelSync
    from rag.search import parse_date

    if backfill and since:
        raise InputError("use either --backfill or --since, not both")
    since_dt = datetime.fromtimestamp(parse_date(since), UTC) if since else None

    async def main(index: Index) -> list[SyncResult]:
        client = await _connected(index, receive_updates=False)
        try:
            syncer = ChannelSync(index, client, listener=None if as_json else _echo_event)
            refs = [_registry(index).add(c).ref for c in channel] or None
            return await syncer.sync_all(refs, backfill=backfill, since=since_dt,
                                         on_result=None if as_json else _echo_result)
        finally:
            await client.disconnect()

    with open_index(ctx, "sync") as index:
        results = _run(main(index))
    if as_json:
        click.echo(json.dumps({"results": [r.to_dict() for r in results]}, ensure_ascii=False,
                              indent=2))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def watch(ctx: typer.Context) -> None:
    """Follow the channels live: index new posts, re-index edits, drop deleted posts."""
    from api.cli import open_index
    from ingest.telegram.live import register_live_handlers
    from ingest.telegram.sync import ChannelSync

    async def main(index: Index) -> None:
        client = await _connected(index, receive_updates=True)
        try:
            syncer = ChannelSync(index, client, listener=_echo_event)
            register_live_handlers(client, syncer)
            # Catch up on what was posted while nobody was watching, then follow updates.
            for result in await syncer.sync_all():
                _echo_result(result)
            click.echo("watching; Ctrl-C to stop", err=True)
            await client.run_until_disconnected()
        finally:
            await client.disconnect()

    with open_index(ctx, "watch") as index:
        _run(main(index))


def worker(
    ctx: typer.Context,
    interval: float | None = typer.Option(None, help="Seconds between runs; default "
                                                     "TGRAG_SYNC_INTERVAL."),
) -> None:
    """Sync all followed channels now and then every interval (several workers share them)."""
    from api.cli import open_index
    from ingest.telegram.scheduler import SyncScheduler
    from ingest.telegram.sync import ChannelSync

    async def main(index: Index) -> None:
        client = await _connected(index, receive_updates=False)
        try:
            syncer = ChannelSync(index, client, listener=_echo_event)
            scheduler = SyncScheduler(syncer, interval=interval)
            if scheduler.interval <= 0:
                raise InputError("the sync interval is 0", hint="pass --interval or set "
                                 "TGRAG_SYNC_INTERVAL > 0")
            await scheduler.run_forever()
        finally:
            await client.disconnect()

    with open_index(ctx, "worker") as index:
        _run(main(index))
