"""``tgrag ask`` and ``tgrag tags``, added to the CLI by ``register(app)``
(``api/cli/__init__.py``).

``ask`` streams the answer to the terminal as it is written, then lists the sources; with
``--json`` it prints the contract's ask JSON once the answer is complete.
"""

from __future__ import annotations

from typing import Any

import click
import typer


def register(app: typer.Typer) -> None:
    app.command()(ask)
    app.command()(tags)


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question, in any words."),
    k: int | None = typer.Option(None, "-k", "--k", help="Posts to use as sources (1..20)."),
    channel: list[str] = typer.Option(
        [], "--channel", "-c", help="Channel id, username or exact title (repeatable)."
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag, any of (repeatable)."),
    since: str | None = typer.Option(None, help="From this date: YYYY-MM-DD[THH:MM] or unix."),
    until: str | None = typer.Option(None, help="Up to this date (inclusive)."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Answer a question from the indexed posts, citing them as [1], [2] …"""
    from api.cli.context import open_services, print_json
    from rag.llm import build_llm
    from rag.search import parse_filters, validate_query

    validate_query(question, k or 1, "dense")  # fail before loading the model
    parse_filters(tag, since, until)  # likewise
    llm = build_llm(ctx.obj)  # a credentials problem shows before the index is opened
    with open_services(ctx, "ask", llm=llm) as services:
        filters = services.filters(channel, tag, since, until)
        if as_json:
            print_json(services.ask(question, filters, k=k).to_dict())
            return
        for event in services.stream(question, filters, k=k):
            if event.type == "token":
                click.echo(event.data, nl=False)
            elif event.type == "sources":
                click.echo("\n")
                _print_sources(event.data)
            elif event.type == "done" and event.data["mode"] != "generative":
                click.secho(f"({_MODE_NOTE[event.data['mode']]})", dim=True)


_MODE_NOTE = {
    "extractive": "extractive answer: sentences quoted from the posts; set TGRAG_LLM for a "
                  "written one",
    "not_found": "nothing relevant found; try other words or fewer filters",
}


def _print_sources(sources: list[dict[str, Any]]) -> None:
    for s in sources:
        click.echo(click.style(f"[{s['n']}]", fg="cyan") + f" {s['channel']}  "
                   f"{s['date'][:10]}  {s['link']}  " + click.style(f"{s['score']:.3f}", dim=True))


def tags(
    ctx: typer.Context,
    channel: list[str] = typer.Option(
        [], "--channel", "-c", help="Channel id, username or exact title (repeatable)."
    ),
    since: str | None = typer.Option(None, help="From this date: YYYY-MM-DD[THH:MM] or unix."),
    until: str | None = typer.Option(None, help="Up to this date (inclusive)."),
    limit: int = typer.Option(30, "--limit", "-n", help="How many tags to show."),
    as_json: bool = typer.Option(False, "--json", help="Print tags as JSON."),
) -> None:
    """The most frequent tags, with the number of posts carrying each."""
    from api.cli.context import open_services, print_json
    from rag.search import parse_filters

    parse_filters((), since, until)  # bad dates fail before the data folder is taken
    with open_services(ctx, "tags") as services:
        data = services.tags(services.filters(channel, (), since, until), limit=limit)
    if as_json:
        print_json(data)
        return
    if not data["tags"]:
        click.echo("no tags yet: run `tgrag ingest PATH`")
        return
    click.echo(f"{data['posts']} posts")
    for row in data["tags"]:
        click.echo(f"{row['posts']:>7}  #{row['tag']}")
