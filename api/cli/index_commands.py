"""``tgrag ingest``, ``search``, ``similar``, ``stats`` and ``serve``, added to the CLI by
``register(app)`` (``api/cli/__init__.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer

from api.cli.alert_commands import echo_pass
from api.cli.context import (
    command_services,
    data_dir_in_use,
    maintain,
    open_services,
    print_json,
)
from rag.errors import InputError
from rag.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport
    from rag.search import PostHit

MAX_SKIPPED_SHOWN = 10


def register(app: typer.Typer) -> None:
    for command in (ingest, search, similar, stats, optimize, serve):
        app.command()(command)


# -- ingest ---------------------------------------------------------------------------------------


def ingest(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Telegram exports (folders) or JSON/JSONL dumps."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Ingest Telegram exports and dumps; unchanged posts are not embedded again. New posts
    are then checked against your alerts (`tgrag alerts`)."""
    from ingest.readers import read_paths
    from ingest.readers.base import SkippedRecord

    settings: Settings = ctx.obj
    committed: list[IngestReport] = []  # the report as of the last committed batch

    def remember(_done: int, report: IngestReport) -> None:
        committed[:] = [report]

    try:
        # Read everything first: bad paths fail before the data folder is taken, and the progress
        # bar knows its total.
        items = list(read_paths(paths, settings.max_post_chars))
        total = sum(1 for item in items if not isinstance(item, SkippedRecord))
        with open_services(ctx, "ingest") as services:
            if as_json:
                report = services.ingest(items, on_progress=remember)
            else:
                report = _ingest_with_progress(services, items, total, remember)
            if report.new or report.updated:
                maintain(services, quiet=as_json)
            alerts = services.dispatch_alerts()  # what this ingest added, checked against alerts
    except KeyboardInterrupt:
        _print_interrupted(committed[0] if committed else None)
        raise typer.Exit(130) from None
    if as_json:
        print_json({**report.to_dict(), "alerts": alerts.to_dict()})
    else:
        _print_report(report)
        echo_pass(alerts)


def _print_interrupted(report: IngestReport | None) -> None:
    """Ctrl+C: what is safely in the index, and that a rerun picks up from there."""
    resume = "run the same command again to resume (committed posts are not embedded again)"
    if report is None:
        click.echo(f"interrupted before any post was committed; {resume}", err=True)
        return
    noun = "post" if report.posts == 1 else "posts"
    click.echo(f"interrupted: {report.posts} {noun} committed ({report.new} new, "
               f"{report.updated} updated, {report.unchanged} unchanged); {resume}", err=True)


def _ingest_with_progress(services: Any, items: list[Any], total: int,
                          on_progress: Any) -> IngestReport:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None and task.elapsed and task.completed:
                speed = task.completed / task.elapsed
            return Text("… posts/s" if speed is None else f"{speed:.1f} posts/s", style="cyan")

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]ingesting"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("ingest", total=total)

        def advance(done: int, report: IngestReport) -> None:
            progress.update(task, completed=done)
            on_progress(done, report)

        return services.ingest(items, on_progress=advance)  # type: ignore[no-any-return]


def _print_report(report: IngestReport) -> None:
    rate = report.posts / report.seconds if report.seconds else 0.0
    click.echo(
        f"{report.posts} posts in {report.seconds:.1f}s ({rate:.1f} posts/s): "
        f"{report.new} new, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.skipped} skipped"
    )
    shown = report.skipped_records[:MAX_SKIPPED_SHOWN]
    for record in shown:
        click.echo(f"  skipped {record}")
    if len(report.skipped_records) > len(shown):
        click.echo(f"  … and {len(report.skipped_records) - len(shown)} more")


# -- index maintenance ----------------------------------------------------------------------------


def optimize(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Bring the search index up to date: index what uploads and syncs through `tgrag serve`
    added, reclaim deleted points. Run it while the API is stopped (it takes the data folder)."""
    with open_services(ctx, "optimize") as services:
        done = maintain(services, quiet=as_json)
    if as_json:
        print_json(done)
    elif not done["optimized"]:
        click.echo(f"search index already up to date ({done['points']} points)")


# -- search ---------------------------------------------------------------------------------------


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for, in any words."),
    k: int = typer.Option(10, "-k", "--k", help="How many posts to return (1..100)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many hits (the next page)."),
    channel: list[str] = typer.Option(
        [], "--channel", "-c", help="Channel id, username or exact title (repeatable)."
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag, any of (repeatable)."),
    since: str | None = typer.Option(None, help="From this date: YYYY-MM-DD[THH:MM] or unix."),
    until: str | None = typer.Option(None, help="Up to this date (inclusive)."),
    mode: str | None = typer.Option(
        None, help="dense | sparse | hybrid [default: TGRAG_SEARCH_MODE, hybrid]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Search posts; results are posts (not chunks), best first, copies collapsed."""
    from rag.search import parse_filters, validate_offset, validate_query

    mode = mode or ctx.obj.search_mode
    validate_query(query, k, mode)  # fail before loading the model
    validate_offset(offset)
    parse_filters(tag, since, until)  # likewise
    with open_services(ctx, "search") as services:
        filters = services.filters(channel, tag, since, until)
        page = services.search(query, filters, k=k, mode=mode, offset=offset)
    if as_json:
        print_json(page.to_dict())
        return
    _print_hits(page, start=offset + 1)
    if page.next_offset is not None:
        click.secho(f"more: --offset {page.next_offset}", dim=True)


def similar(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="Channel id or username of the post."),
    message_id: int = typer.Argument(..., help="The post's message id in that channel."),
    k: int = typer.Option(10, "-k", "--k", help="How many posts to return (1..100)."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """More like this: the posts nearest to one post (its copies listed apart)."""
    from rag.search import MAX_K

    if not 1 <= k <= MAX_K:  # fail before opening the index
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint="e.g. -k 10")
    with open_services(ctx, "similar") as services:
        found = services.similar(channel, message_id, k=k)
    if as_json:
        print_json(found.to_dict())
        return
    if found.copies:
        click.echo("copies of this post: " + ", ".join(_copy_name(c) for c in found.copies))
        click.echo()
    _print_hits(found.hits)


def _print_hits(hits: list[PostHit], start: int = 1) -> None:
    if not hits:
        click.echo("no results")
        return
    for n, hit in enumerate(hits, start):
        when = hit.date_iso[:16].replace("T", " ")
        title = hit.channel_title or hit.channel or str(hit.channel_id)
        click.echo(f"{n:>2}. " + click.style(f"{hit.score:.3f}", fg="cyan")
                   + "  " + click.style(title, bold=True) + f"  {when} UTC")
        tags = " ".join(f"#{t}" for t in hit.tags)
        click.echo(f"    {hit.link}" + (f"  {tags}" if tags else ""))
        click.echo(f"    {_marked(hit.snippet, hit.highlights)}")
        if hit.copies:
            click.echo("    also in: " + ", ".join(_copy_name(c) for c in hit.copies))
        click.echo()


def _marked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the ``spans`` in bold (plain when output is not a terminal)."""
    out, pos = [], 0
    for start, end in spans:
        out += [text[pos:start], click.style(text[start:end], bold=True)]
        pos = end
    return "".join(out) + text[pos:]


def _copy_name(hit: PostHit) -> str:
    title = hit.channel_title or hit.channel or str(hit.channel_id)
    return f"{title} {hit.date_iso[:10]} {hit.link}"


# -- stats ----------------------------------------------------------------------------------------


def stats(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print stats as JSON."),
) -> None:
    """What is indexed: posts, vectors, model, and per-channel counts and date ranges."""
    with open_services(ctx, "stats") as services:
        data = {**services.stats(all_tenants=True), "data_dir": data_dir_in_use(ctx.obj)}
    if as_json:
        print_json(data)
        return
    click.echo(f"posts: {data['posts']}  points: {data['points']}  "
               f"embedding model: {data['embedding_model']}")
    if data["data_dir"]:
        click.echo(f"data folder: {data['data_dir']}")
    channels = data["channels"]
    if not channels:
        click.echo("no channels yet: run `tgrag ingest PATH`")
        return
    click.echo(f"{'channel_id':>12}  {'posts':>6}  {'first':10}  {'last':10}  channel")
    for c in channels:
        name = c["channel_title"] + (f" (@{c['channel']})" if c["channel"] else "")
        click.echo(f"{c['channel_id']:>12}  {c['posts']:>6}  {_day(c['first_date']):10}  "
                   f"{_day(c['last_date']):10}  {name}")


def _day(ts: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).date().isoformat() if ts is not None else "-"


# -- serve ----------------------------------------------------------------------------------------


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Bind address [default: 127.0.0.1]."),
    port: int | None = typer.Option(None, help="Port [default: 8000]."),
) -> None:
    """Run the HTTP API (this process owns the data folder while it runs)."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from api.security import check_bind, parse_api_keys
    from rag.backend_start import start_backends

    settings: Settings = ctx.obj
    host = host or settings.host
    port = port or settings.port
    parse_api_keys(settings.api_keys)  # an ambiguous key stops here, before the data folder
    check_bind(settings, host)  # no API keys → loopback only
    # Opened here, not in the app's lifespan, so a locked data folder is the usual one-line
    # error; in the order that overlaps the slow parts (docs/benchmarks.md, "tgrag serve"
    # start): the embedded Redis loads its data in its own process from here on, while this one
    # imports LlamaIndex (seconds each at 100k posts) ...
    started = start_backends(settings, "tgrag serve")
    try:
        from api.services import Services
    except BaseException:
        started.abandon()
        raise
    # ... then the engine loads its shard on another thread (native code: it leaves the GIL)
    # while this one imports the app.  A failed open releases what it started and raises here.
    with ThreadPoolExecutor(1, thread_name_prefix="tgrag-open") as pool:
        opening = pool.submit(Services.open, settings, purpose="tgrag serve", started=started)
        try:
            import uvicorn

            from api.app import create_app
        except BaseException:  # e.g. Ctrl+C: close what the open opened (its own error aside)
            with contextlib.suppress(Exception):
                opening.result().close()
            raise
        services = opening.result()
    with command_services(ctx, services):
        if not settings.api_keys:
            click.echo("authentication is off (TGRAG_API_KEYS is empty): serving on loopback only",
                       err=True)
        click.echo(f"serving on http://{host}:{port} (Ctrl+C to stop)", err=True)
        uvicorn.run(
            create_app(settings, services=services, close_services=True), host=host, port=port,
            log_config=None,
            log_level=settings.log_level.lower(), access_log=settings.log_level.upper() == "DEBUG",
        )
