"""``tgrag digest``, added to the CLI by ``register(app)`` (``api/cli/__init__.py``): the period's
posts as ranked stories, each summed up with citations (``rag.digest``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click
import typer

from api.cli.context import open_services, print_json

if TYPE_CHECKING:
    from rag.digest import Digest, DigestPost, Story

POSTS_SHOWN = 5  # per story in the human output


def register(app: typer.Typer) -> None:
    app.command()(digest)


def digest(
    ctx: typer.Context,
    since: str = typer.Option("1d", help="A duration back from --until (90m, 12h, 1d, 2w) or a "
                                         "date (YYYY-MM-DD[THH:MM], unix)."),
    until: str | None = typer.Option(None, help="Up to this date (inclusive) [default: now]."),
    channel: list[str] = typer.Option(
        [], "--channel", "-c", help="Channel id, username or exact title (repeatable)."
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag, any of (repeatable)."),
    stories: int | None = typer.Option(
        None, "--stories", "-n", help="How many stories (1..100) [default: TGRAG_DIGEST_STORIES]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the digest as JSON."),
) -> None:
    """The period's posts grouped into stories, best first, each summed up in 1-2 sentences
    citing its posts as [n]: by the LLM when TGRAG_LLM is set, else quoted from the posts."""
    from rag.digest import parse_period
    from rag.llm import build_llm
    from rag.search import parse_filters

    parse_period(since, until)  # a bad period fails before the data folder is taken
    parse_filters(tag)
    if stories is not None and not 1 <= stories <= 100:
        from rag.errors import InputError

        raise InputError(f"--stories must be between 1 and 100, got {stories}",
                         hint="e.g. --stories 10")
    llm = build_llm(ctx.obj)  # a credentials problem shows before the index is opened
    with open_services(ctx, "digest", llm=llm) as services:
        found = _build(services, since, until, channel, tag, stories,
                       progress=llm is not None and not as_json)
    if as_json:
        print_json(found.to_dict())
    else:
        _print_digest(found)


def _build(services: Any, since: str, until: str | None, channel: list[str], tag: list[str],
           stories: int | None, *, progress: bool) -> Digest:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    # An LLM takes seconds per story: show the summaries' progress (on a terminal).
    with Progress(TextColumn("[bold]summarising stories"), BarColumn(), MofNCompleteColumn(),
                  console=console, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("digest", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return services.digest(since, until, channel, tag,  # type: ignore[no-any-return]
                               stories=stories, on_story=advance)


def _print_digest(found: Digest) -> None:
    start, end = (_when(found.since), _when(found.until))
    shown = len(found.stories)
    click.echo(click.style(f"Digest {start} – {end} UTC", bold=True)
               + f": {found.posts} posts, {found.stories_total} stories"
               + (f" (top {shown})" if shown < found.stories_total else ""))
    if found.truncated:
        click.secho("  (the period has more posts than TGRAG_DIGEST_MAX_POSTS: only the newest "
                    "were grouped; use a shorter --since)", dim=True)
    if not found.stories:
        click.echo("no posts in this period: try a longer --since or fewer filters")
        return
    for n, story in enumerate(found.stories, 1):
        click.echo()
        _print_story(n, story)
    if found.mode == "extractive":
        click.echo()
        click.secho("(summaries quoted from the posts; set TGRAG_LLM for written ones)", dim=True)


def _print_story(n: int, story: Story) -> None:
    size = f"{story.size} post" + ("" if story.size == 1 else "s")
    channels = f"{story.channels} channel" + ("" if story.channels == 1 else "s")
    click.echo(f"{n:>2}. " + click.style(story.title, bold=True) + click.style(
        f"  · {size}, {channels}", dim=True))
    click.echo(f"    {story.summary}")
    # The posts the summary cites, then the first others, up to POSTS_SHOWN (a story of a busy
    # day can have dozens; --json lists them all).
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", story.summary)}
    shown = sorted(cited | set(range(1, len(story.posts) + 1)[:max(0, POSTS_SHOWN - len(cited))]))
    for k in shown[:max(POSTS_SHOWN, len(cited))]:
        post = story.posts[k - 1]
        click.echo(click.style(f"    [{k}]", fg="cyan") + f" {_name(post)}  {_when(post.date)}  "
                   f"{post.link}")
        if post.copies:
            click.echo("        also in: " + ", ".join(_name(c) for c in post.copies))
    hidden = len(story.posts) - len(shown)
    if hidden > 0:
        click.secho(f"    … {hidden} more (--json lists every post)", dim=True)


def _name(post: DigestPost) -> str:
    return post.channel_title or (f"@{post.channel}" if post.channel else str(post.channel_id))


def _when(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
