"""``tgrag prune`` and ``tgrag channels set C --keep-days N``, added to the CLI by
``register(app)`` (``api/cli/__init__.py``); the logic is ``ingest.retention``'s, behind the
services' retention use cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import typer

from api.cli.context import open_services, print_json
from api.cli.sync_commands import channels_app
from rag.errors import InputError

if TYPE_CHECKING:
    from ingest.retention import ChannelPrune, PruneReport


def register(app: typer.Typer) -> None:
    app.command()(prune)
    channels_app.command("set")(channels_set)


def _keep_days(text: str) -> float | None:
    from ingest.retention import check_days

    value = text.strip().lower()
    if value in ("default", "inherit"):
        return None
    try:
        days = float(value)
    except ValueError:
        raise InputError(f"--keep-days takes a number of days or `default`, got {text!r}",
                         hint="e.g. --keep-days 30; 0 keeps the channel forever; default = "
                              "TGRAG_RETENTION_DAYS") from None
    return check_days(days, "--keep-days")


def channels_set(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="@username, id or title of an indexed or followed "
                                        "channel."),
    keep_days: str = typer.Option(
        ..., "--keep-days",
        help="Keep this channel's posts N days (0 = forever); `default` = TGRAG_RETENTION_DAYS.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set how long one channel's posts are kept (`tgrag prune` and the worker delete older)."""
    days = _keep_days(keep_days)
    with open_services(ctx, "channels set") as services:
        done = services.set_keep_days(ref, days)
    if as_json:
        print_json(done)
        return
    kept = f"{done['keep_days']:g} days" if done["keep_days"] else "forever"
    source = " (TGRAG_RETENTION_DAYS)" if days is None else ""
    click.echo(f"{done['channel']}: posts kept {kept}{source}")


def prune(
    ctx: typer.Context,
    older_than: float | None = typer.Option(
        None, "--older-than", help="Delete posts older than N days in every channel, "
                                   "whatever its retention (default: each channel's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Delete posts past their retention: counts per channel first, then the deletion.

    Each channel's posts older than TGRAG_RETENTION_DAYS (or its `channels set --keep-days`)
    are deleted from the vector store, the docstore and the catalog, in that order, waiting for
    a running sync of the channel. Interrupted, it finishes the job when run again.
    """
    from ingest.retention import PruneReport

    with open_services(ctx, "prune") as services:
        plans = services.prune_plan(older_than)
        if not as_json:
            _print_plan(plans, older_than)
        if dry_run or not any(p.expired for p in plans):
            report = PruneReport(plans, dry_run=dry_run)
        else:
            report = _prune_with_progress(services, plans, quiet=as_json)
    if as_json:
        print_json(report.to_dict())
        return
    if dry_run:
        click.echo(f"dry run: {report.expired} posts would be deleted")
        return
    click.echo(f"deleted {report.deleted} posts in {report.seconds:.1f}s")
    for plan in report.channels:
        if plan.status == "busy":
            click.echo(f"  {_name(plan)}: skipped, a sync holds it; run `tgrag prune` again "
                       "later", err=True)


def _name(plan: ChannelPrune) -> str:
    name = f"@{plan.channel}" if plan.channel else (plan.channel_title or str(plan.channel_id))
    return name if plan.tenant == "default" else f"{plan.tenant}/{name}"


def _print_plan(plans: list[ChannelPrune], older_than: float | None) -> None:
    if not plans:
        click.echo("nothing to prune: no retention is set (TGRAG_RETENTION_DAYS, `tgrag "
                   "channels set C --keep-days N`, or --older-than N)")
        return
    for plan in plans:
        cutoff = datetime.fromtimestamp(plan.cutoff, UTC).strftime("%Y-%m-%d %H:%M")
        why = "--older-than" if older_than is not None else "kept"
        click.echo(f"{_name(plan):<28} {why} {plan.keep_days:g}d (before {cutoff}): "
                   f"{len(plan.expired)} of {plan.posts} posts")


def _prune_with_progress(services: Any, plans: list[ChannelPrune], *,
                         quiet: bool) -> PruneReport:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    total = sum(len(p.expired) for p in plans)
    with Progress(TextColumn("[bold]pruning"), BarColumn(), MofNCompleteColumn(),
                  console=console, disable=quiet or not console.is_terminal) as progress:
        task = progress.add_task("prune", total=total)
        return services.prune(  # type: ignore[no-any-return]
            plans, on_batch=lambda _plan, n: progress.advance(task, n))
