"""The ``tgrag`` command line: a thin surface over the services (``api.services``).

The commands live in modules of one area each (``index_commands``, ``qa_commands``,
``digest_commands``, ``sync_commands``, ``retention_commands``, ``alert_commands``,
``eval_commands``, and ``api.bot.command`` for ``tgrag bot``), all on ``api.cli.context`` for the
settings, the services, JSON output and error mapping; this module only assembles them.
"""

from __future__ import annotations

import typer

from api.bot import command as bot_command
from api.cli import (
    alert_commands,
    digest_commands,
    eval_commands,
    index_commands,
    qa_commands,
    retention_commands,
    sync_commands,
)
from api.cli.context import TgragGroup, root

app = typer.Typer(
    cls=TgragGroup,
    name="tgrag",
    help="Search Telegram channels: ingest exports, search posts, serve the HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)
app.callback()(root)
for _module in (index_commands, qa_commands, digest_commands, sync_commands, retention_commands,
                alert_commands, eval_commands, bot_command):
    _module.register(app)


def main() -> None:
    """Console-script entry point (``tgrag = "api.cli:main"``)."""
    app(prog_name="tgrag")


__all__ = ["TgragGroup", "app", "main"]
