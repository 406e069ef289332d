"""What every command shares: the settings, the services, JSON output, and the one place errors
become an exit code.

Every command loads the settings (the root callback), opens the services
(``purpose="tgrag <cmd>"``, so a locked data folder names its owner), calls a use case and prints
the result: human text by default, the contract's JSON shapes with ``--json``.  Expected errors
(:class:`TgragError`) become one ``error:`` line plus a ``hint:`` line on stderr and the error's
exit code, in exactly one place (:class:`TgragGroup`), so the console script and ``CliRunner``
behave the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import typer
from typer.core import TyperGroup

from api.logging import configure_logging
from rag.errors import TgragError
from rag.redis_errors import REDIS_DOWN, unavailable
from rag.settings import Settings, load_settings

# api.services (LlamaIndex: seconds) is imported when a command opens the services, so every
# `tgrag` start stays light and `tgrag serve` can start the backends before importing it.
if TYPE_CHECKING:
    from api.services import Services

DATA_DIR_META = "tgrag.data_dir"  # ctx.meta: the data folder of the index a command opened
# Hints for a parameter, in this surface's words (the core's are written for no surface).
CLI_HINTS = {"k": "e.g. -k 10"}


class TgragGroup(TyperGroup):
    """Maps :class:`TgragError` to one line on stderr and its exit code (the only such place)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except REDIS_DOWN as exc:  # Redis went away mid-command: the one error for it
                raise unavailable(exc) from None
        except TgragError as err:
            click.echo(f"error: {err.message}", err=True)
            # An error about what the index holds may come from the wrong folder's index.
            where = ctx.meta.get(DATA_DIR_META)
            hint = " ".join(filter(None, [CLI_HINTS.get(err.param or "", err.hint),
                                          where and f"(data folder: {where})"]))
            if hint:
                click.echo(f"hint: {hint}", err=True)
            raise typer.Exit(err.exit_code) from None


def root(ctx: typer.Context) -> None:
    """The root callback: settings and logging, before any command."""
    settings = load_settings()
    configure_logging(settings.log_level)
    ctx.obj = settings


@contextmanager
def open_services(ctx: typer.Context, command: str, **options: Any) -> Iterator[Services]:
    """The services for one command; ``options`` of :meth:`Services.open`: ``llm`` (one the
    command already built), ``started`` (the backends it started first)."""
    from api.services import Services

    with command_services(ctx, Services.open(ctx.obj, purpose=f"tgrag {command}",
                                             **options)) as services:
        yield services


@contextmanager
def command_services(ctx: typer.Context, services: Services) -> Iterator[Services]:
    """Services the command opened itself (``tgrag serve``), as :func:`open_services` gives
    them: the data folder noted for error hints, closed at the end."""
    ctx.meta[DATA_DIR_META] = data_dir_in_use(ctx.obj)
    try:
        yield services
    finally:
        services.close()


def data_dir_in_use(settings: Settings) -> str | None:
    """The data folder in use (absolute), or None when Qdrant and Redis are both servers."""
    used = settings.embedded_qdrant or settings.embedded_redis
    return str(settings.data_dir) if used else None


def maintain(services: Services, *, quiet: bool = False) -> dict[str, Any]:
    """Bring the search index up to date after a command's writes (returns at once when the
    engine has nothing due; README "Index maintenance")."""
    if not quiet:
        click.echo("updating the search index…", err=True)
    done: dict[str, Any] = services.optimize()
    if not quiet and done["optimized"]:
        click.echo(f"search index updated in {done['seconds']:.1f}s", err=True)
    return done


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))
