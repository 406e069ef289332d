"""``tgrag bot``: the Telegram bot alone, until Ctrl-C or SIGTERM (``register(app)`` adds it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import typer

if TYPE_CHECKING:
    from api.services import Services


def register(app: typer.Typer) -> None:
    app.command()(bot)


def bot(ctx: typer.Context) -> None:
    """Run the Telegram bot: search, answers and channels from inside Telegram.

    Needs TGRAG_TG_BOT_TOKEN (from @BotFather) and TGRAG_TG_API_ID/TGRAG_TG_API_HASH; answers
    only the users in TGRAG_BOT_USERS and TGRAG_BOT_ADMINS. `tgrag serve` and `tgrag worker` run
    it themselves when the token is set; in embedded mode only the process that owns the data
    folder can run it. It also checks new posts against alerts and delivers them (to the chats of
    /alert, and webhooks). Stops cleanly on Ctrl-C or SIGTERM.
    """
    from api.bot.hosting import account_sync, check_settings, running_bot
    from api.cli.context import open_services
    from api.cli.sync_commands import _run_service

    if check_settings(ctx.obj).empty:  # before the data folder is taken
        click.echo("warning: TGRAG_BOT_USERS and TGRAG_BOT_ADMINS are empty: the bot answers "
                   "nobody", err=True)

    def echo(state: str, detail: str) -> None:
        click.echo(f"bot: {state}" + (f": {detail}" if detail else ""), err=True)

    async def main(services: Services) -> None:
        try:
            async with running_bot(services, sync=account_sync(services),
                                   on_state=echo) as runner:
                assert runner is not None
                click.echo("bot running; Ctrl-C to stop", err=True)
                await runner.wait()
        finally:
            await services.stop_scheduler()  # the account /follow may have connected

    with open_services(ctx, "bot") as services:
        # What /follow syncs here (the embedded data folder is this process's) is checked
        # against alerts, and the queued bot notifications are sent, by this process.
        services.start_alerts()
        _run_service(main(services))
