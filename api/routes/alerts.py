"""Alerts (saved searches): ``GET|POST|DELETE /alerts``, ``POST /alerts/test``,
``GET /alerts/{id}/matches``, ``GET /alerts/{id}/dead-letters`` and
``POST /alerts/{id}/dead-letters/retry``.

Every key may save alerts; an alert belongs to the key's tenant and sees only its posts.  The
server's background dispatcher checks every post an ingest path commits (``rag.alerts``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import ServicesDep
from api.schemas import (
    COMMON,
    AlertCreated,
    AlertIn,
    AlertList,
    AlertRemoved,
    AlertTestIn,
    AlertTestOut,
    DeadLetters,
    Requeued,
    SearchResponse,
    problems,
)
from rag.search import MAX_K, MAX_OFFSET

router = APIRouter(tags=["alerts"], responses={**COMMON, **problems(503)})
AlertId = Annotated[str, Path(description="The alert's id (from GET /alerts).",
                              examples=["3f2b9c0e8d7a"])]


def _options(body: AlertIn) -> dict[str, Any]:
    return {"rule": body.rule, "threshold": body.threshold, "channels": body.channel,
            "tags": body.tag, "since": body.since, "until": body.until, "mode": body.mode}


@router.get("/alerts", response_model=AlertList)
def list_alerts(services: ServicesDep) -> dict[str, Any]:
    """Your tenant's alerts, oldest first."""
    return {"alerts": [a.to_dict() for a in services.alerts()]}


@router.post("/alerts", status_code=201, response_model=AlertCreated,
             responses=problems(400))
def add_alert(body: AlertIn, services: ServicesDep) -> dict[str, Any]:
    """Save an alert: posts indexed from now on that match it are kept (``GET
    /alerts/{id}/matches``) and POSTed to its webhook.  ``webhook_secret`` signs the webhooks
    and is shown only in this response (``null`` without a webhook, or when the deployment signs
    with ``TGRAG_ALERT_WEBHOOK_SECRET``).  Try the rule first with ``POST /alerts/test``."""
    alert = services.add_alert(body.query, webhook=body.webhook, **_options(body))
    return {**alert.to_dict(), "webhook_secret": alert.secret}


@router.delete("/alerts", response_model=AlertRemoved, responses=problems(404))
def remove_alert(
    services: ServicesDep,
    id: Annotated[str, Query(description="The alert's id.")],  # noqa: A002 - the contract's name
) -> dict[str, Any]:
    """Delete an alert with its matches and undelivered notifications."""
    return {"removed": services.remove_alert(id).to_dict()}


@router.post("/alerts/test", response_model=AlertTestOut, responses=problems(400))
def test_alert(body: AlertTestIn, services: ServicesDep) -> dict[str, Any]:
    """What an alert would have matched among the last ``days`` of posts, and (semantic) the
    near misses with their scores: tune a rule before saving it.  Nothing is saved."""
    return services.test_alert(body.query, days=body.days, k=body.k, **_options(body)).to_dict()


@router.get("/alerts/{alert_id}/matches", response_model=SearchResponse,
            responses=problems(400, 404))
def alert_matches(
    alert_id: AlertId,
    services: ServicesDep,
    k: Annotated[int, Query(description=f"Matches to return, 1..{MAX_K}.",
                            json_schema_extra={"minimum": 1, "maximum": MAX_K})] = 20,
    offset: Annotated[int, Query(description=f"Matches to skip, 0..{MAX_OFFSET}: the previous "
                                 "page's next_offset.",
                                 json_schema_extra={"minimum": 0})] = 0,
) -> dict[str, Any]:
    """The posts the alert notified, newest first, as search hits (``copies``: the
    near-duplicates that came with it, "также в")."""
    return services.alert_matches(alert_id, k=k, offset=offset)


@router.get("/alerts/{alert_id}/dead-letters", response_model=DeadLetters,
            responses=problems(404))
def dead_letters(alert_id: AlertId, services: ServicesDep) -> dict[str, Any]:
    """Notifications that failed ``TGRAG_ALERT_MAX_ATTEMPTS`` times, with the last error."""
    return {"dead_letters": [d.to_dict() for d in services.alert_dead_letters(alert_id)]}


@router.post("/alerts/{alert_id}/dead-letters/retry", response_model=Requeued,
             responses=problems(404))
def retry_dead_letters(alert_id: AlertId, services: ServicesDep) -> dict[str, Any]:
    """Queue the dead letters again (after fixing the webhook)."""
    return {"requeued": services.retry_alert_deliveries(alert_id)}
