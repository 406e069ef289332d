"""``tgrag bot``: the Telegram bot alone, until Ctrl-C or SIGTERM (``register(app)`` adds it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import typer

from rag.errors import InputError

if TYPE_CHECKING:
    from rag.index import Index


def register(app: typer.Typer) -> None:
    app.command()(bot)


def bot(ctx: typer.Context) -> None:
    """Run the Telegram bot: search, answers and channels from inside Telegram.

    Needs TGRAG_TG_BOT_TOKEN (from @BotFather) and TGRAG_TG_API_ID/TGRAG_TG_API_HASH; answers
    only the users in TGRAG_BOT_USERS and TGRAG_BOT_ADMINS. `tgrag serve` and `tgrag worker` run
    it themselves when the token is set; in embedded mode only the process that owns the data
    folder can run it. Stops cleanly on Ctrl-C or SIGTERM.
    """
    from api.bot.access import AccessList
    from api.bot.hosting import UserAccountSync, bot_enabled, running_bot
    from api.bot.runner import bot_id_of
    from api.cli import open_index
    from api.sync_commands import _run_service

    settings = ctx.obj
    if not bot_enabled(settings):
        raise InputError("TGRAG_TG_BOT_TOKEN is not set",
                         hint="create a bot with @BotFather (/newbot) and set its token")
    # Checked before the data folder is taken (running_bot checks them again).
    if not settings.tg_api_id or not settings.tg_api_hash:
        raise InputError("the bot needs TGRAG_TG_API_ID and TGRAG_TG_API_HASH too",
                         hint="get them at https://my.telegram.org (API development tools)")
    bot_id_of(settings.tg_bot_token.get_secret_value())
    if AccessList.from_settings(settings).empty:
        click.echo("warning: TGRAG_BOT_USERS and TGRAG_BOT_ADMINS are empty: the bot answers "
                   "nobody", err=True)

    def echo(state: str, detail: str) -> None:
        click.echo(f"bot: {state}" + (f": {detail}" if detail else ""), err=True)

    async def main(index: Index) -> None:
        user_sync = UserAccountSync(index)
        try:
            async with running_bot(index, sync=user_sync, on_state=echo) as runner:
                assert runner is not None
                click.echo("bot running; Ctrl-C to stop", err=True)
                await runner.wait()
        finally:
            await user_sync.close()

    with open_index(ctx, "bot") as index:
        _run_service(main(index))
