"""``tgrag alerts add|list|remove|test|matches|failed``, added to the CLI by ``register(app)``
(``api/cli/__init__.py``).

The CLI's alerts are the ``default`` tenant's, like its posts.  Matches are found by the alert
dispatcher after every ingest path: ``tgrag ingest`` and ``sync`` run one pass when they are done
(and say what it found), ``serve``, ``worker`` and ``watch`` run it in the background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import typer

from api.cli.context import open_services, print_json

if TYPE_CHECKING:
    from rag.alerts.dispatcher import PassReport
    from rag.alerts.model import Alert

alerts_app = typer.Typer(help="Saved searches: get the posts indexed from now on that match.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


RULE = typer.Option("semantic", "--rule", "-r",
                    help="semantic (meaning, a cosine threshold) | words (every word and "
                         "\"quoted phrase\", any word form).")
THRESHOLD = typer.Option(None, "--threshold",
                         help="semantic: the cosine a post needs [default: "
                              "TGRAG_ALERT_THRESHOLD].")
CHANNEL = typer.Option([], "--channel", "-c",
                       help="Only posts of this channel: id, username or exact title "
                            "(repeatable).")
TAG = typer.Option([], "--tag", "-t", help="Only posts with this tag, any of (repeatable).")
SINCE = typer.Option(None, help="Only posts dated from: YYYY-MM-DD[THH:MM] or unix.")
UNTIL = typer.Option(None, help="Only posts dated up to (inclusive).")
MODE = typer.Option(None, help="semantic: dense | hybrid (also one of the query's words) "
                               "[default: TGRAG_ALERT_MODE].")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _options(rule: str, threshold: float | None, channel: list[str], tag: list[str],
             since: str | None, until: str | None, mode: str | None) -> dict[str, Any]:
    return {"rule": rule, "threshold": threshold, "channels": channel, "tags": tag,
            "since": since, "until": until, "mode": mode}


@alerts_app.command("add")
def add(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to watch for: a topic (semantic) or words."),
    rule: str = RULE,
    threshold: float | None = THRESHOLD,
    channel: list[str] = CHANNEL,
    tag: list[str] = TAG,
    since: str | None = SINCE,
    until: str | None = UNTIL,
    mode: str | None = MODE,
    webhook: str | None = typer.Option(None, help="Also POST each match to this URL "
                                                  "(signed JSON)."),
    as_json: bool = JSON,
) -> None:
    """Save an alert: posts indexed from now on that match it are kept (`tgrag alerts matches`)
    and sent to its webhook. Try it first with `tgrag alerts test`."""
    with open_services(ctx, "alerts add") as services:
        alert = services.add_alert(query, webhook=webhook,
                                   **_options(rule, threshold, channel, tag, since, until, mode))
    if as_json:
        print_json({**alert.to_dict(), **_secret(alert)})
        return
    click.echo(f"saved alert {alert.id}: {_describe(alert)}")
    if alert.secret:
        click.echo(f"webhook secret (shown once; it signs X-Tgrag-Signature): {alert.secret}")


def _secret(alert: Alert) -> dict[str, str]:
    return {"webhook_secret": alert.secret} if alert.secret else {}


@alerts_app.command("list")
def list_alerts(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Your alerts, with their match and dead-letter counts."""
    with open_services(ctx, "alerts list") as services:
        alerts = services.alerts()
        if as_json:
            print_json({"alerts": [a.to_dict() for a in alerts]})
            return
        if not alerts:
            click.echo("no alerts; save one with `tgrag alerts add QUERY`")
            return
        for alert in alerts:
            status = services.alert_status(alert.id)
            line = f"{alert.id}  {_describe(alert)}  matches {status['matches']}"
            if status["dead_letters"]:
                line += f", {status['dead_letters']} undelivered (tgrag alerts failed {alert.id})"
            click.echo(line)


def _describe(alert: Alert) -> str:
    f = alert.filters
    rule = (f"semantic ≥ {alert.threshold:g} ({f.mode})" if alert.rule == "semantic"
            else "words")
    parts = [f"«{alert.query}»", rule]
    if f.channel_ids:
        parts.append("channels " + ",".join(str(c) for c in f.channel_ids))
    if f.tags:
        parts.append("tags " + ",".join(f.tags))
    d = f.to_dict()
    if d["since"] or d["until"]:
        parts.append(f"dates {(d['since'] or '…')[:10]}..{(d['until'] or '…')[:10]}")
    if alert.webhook:
        parts.append(f"→ {alert.webhook}")
    return "  ".join(parts)


@alerts_app.command("remove")
def remove(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(..., help="Alert ids (from `tgrag alerts list`)."),
) -> None:
    """Delete alerts and their matches."""
    with open_services(ctx, "alerts remove") as services:
        for alert_id in ids:
            alert = services.remove_alert(alert_id)
            click.echo(f"removed alert {alert.id} «{alert.query}»")


@alerts_app.command("test")
def test(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="The query of the alert to try."),
    rule: str = RULE,
    threshold: float | None = THRESHOLD,
    channel: list[str] = CHANNEL,
    tag: list[str] = TAG,
    since: str | None = SINCE,
    until: str | None = UNTIL,
    mode: str | None = MODE,
    days: float = typer.Option(7, help="Look at the posts of the last N days (counted back "
                                       "from the newest indexed post)."),
    k: int = typer.Option(20, "-k", "--k", help="Matches to show (1..100)."),
    as_json: bool = JSON,
) -> None:
    """Which recent posts an alert would have matched, and (semantic) the near misses with their
    scores: tune the rule and the threshold before `tgrag alerts add`. Nothing is saved."""
    with open_services(ctx, "alerts test") as services:
        found = services.test_alert(query, days=days, k=k,
                                    **_options(rule, threshold, channel, tag, since, until, mode))
    if as_json:
        print_json(found.to_dict())
        return
    window = f"since {found.since_iso[:10]}" if found.since else "in the index"
    click.echo(f"{len(found.matches)} of {found.checked} posts {window} would have matched "
               f"{_describe(found.alert)}"
               + (" (more candidates than checked: narrow the filters)" if found.capped else ""))
    for hit in found.matches:
        _echo_hit(hit.to_dict())
    if found.near:
        click.echo(f"near misses (below {found.alert.threshold:g}):")
        for hit in found.near:
            _echo_hit(hit.to_dict())


@alerts_app.command("matches")
def matches(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert's id."),
    k: int = typer.Option(20, "-k", "--k", help="How many (1..100)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many (the next page)."),
    as_json: bool = JSON,
) -> None:
    """The posts an alert was notified of, newest first."""
    with open_services(ctx, "alerts matches") as services:
        page = services.alert_matches(alert_id, k=k, offset=offset)
    if as_json:
        print_json(page)
        return
    if not page["results"]:
        click.echo("no matches yet")
    for hit in page["results"]:
        _echo_hit(hit)
    if page["next_offset"] is not None:
        click.secho(f"more: --offset {page['next_offset']}", dim=True)


@alerts_app.command("failed")
def failed(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert's id."),
    retry: bool = typer.Option(False, "--retry", help="Queue them again (after fixing the "
                                                      "webhook)."),
    as_json: bool = JSON,
) -> None:
    """Notifications that could not be delivered (dead letters), with the last error."""
    with open_services(ctx, "alerts failed") as services:
        dead = services.alert_dead_letters(alert_id)
        queued = services.retry_alert_deliveries(alert_id) if retry else 0
    if as_json:
        print_json({"dead_letters": [d.to_dict() for d in dead], "requeued": queued})
        return
    if not dead:
        click.echo("no undelivered notifications")
    for item in dead:
        click.echo(f"{item.channel}  {item.doc_id}  {item.attempts} attempts, last "
                   f"{(item.to_dict()['failed'] or '')[:16]}: {item.error}")
    if retry and queued:
        click.echo(f"queued {queued} again; `tgrag serve` or `tgrag worker` delivers them")


def _echo_hit(hit: dict[str, Any]) -> None:
    when = (hit.get("date") or "")[:16].replace("T", " ")
    title = hit.get("channel_title") or hit.get("channel") or str(hit.get("channel_id"))
    click.echo("  " + click.style(f"{hit.get('score', 0):.3f}", fg="cyan") + "  "
               + click.style(title, bold=True) + f"  {when} UTC  {hit.get('link', '')}")
    click.echo(f"    {hit.get('snippet', '')}")
    copies = hit.get("copies") or []
    if copies:
        click.echo("    также в: " + ", ".join(
            f"{c.get('channel_title') or c.get('channel')} {c.get('link')}" for c in copies))


def echo_pass(report: PassReport) -> None:
    """One line on stderr about what the alert pass after an ingest or a sync did (nothing when
    it did nothing)."""
    if not (report.matches or report.copies or report.delivered or report.retrying
            or report.dead):
        return
    parts = [f"{report.matches} new matches"]
    if report.copies:
        parts.append(f"{report.copies} copies attached")
    if report.delivered:
        parts.append(f"{report.delivered} delivered")
    if report.retrying:
        parts.append(f"{report.retrying} to retry (tgrag serve or worker retries them)")
    if report.dead:
        parts.append(f"{report.dead} undelivered (tgrag alerts failed ID)")
    click.echo("alerts: " + ", ".join(parts), err=True)
