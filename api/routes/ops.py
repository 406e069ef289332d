"""Operations: ``GET /health`` (liveness, public), ``GET /ready`` (Redis and Qdrant reachable),
``GET /metrics`` (Prometheus text; operator keys), and the web page at ``/`` (public HTML; the
page itself asks for a key when auth is on)."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import OperatorDep, ServicesDep
from api.schemas import COMMON, Health, Ready, problems

log = logging.getLogger("tgrag.api")
WEB_PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"

public = APIRouter(tags=["ops"])
router = APIRouter(tags=["ops"], responses=COMMON)


@public.get("/health", response_model=Health)
def health() -> dict[str, Any]:
    """Liveness: the process answers.  Checks no backend (that is ``/ready``)."""
    return {"status": "ok"}


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()
                    + "'" for b in blocks)


@functools.cache
def page_headers() -> dict[str, str]:
    """The page's security headers.  Its script and style are inline, so the policy allows
    exactly those (by hash, computed from the file as served) and nothing else: no other
    script, no framing (clickjacking), requests only to this server."""
    html = WEB_PAGE.read_text(encoding="utf-8")
    csp = "; ".join([
        "default-src 'none'", f"script-src {_hashes(html, 'script')}",
        f"style-src {_hashes(html, 'style')}", "connect-src 'self'", "img-src 'self' data:",
        "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"])
    return {"Content-Security-Policy": csp, "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


@public.get("/", include_in_schema=False)
def web_page() -> FileResponse:
    return FileResponse(WEB_PAGE, media_type="text/html; charset=utf-8",
                        headers=page_headers())


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: Redis and the vector store answer (503 and which one failed, otherwise).  With
    a Telegram bot configured or running, ``bot`` says how it is (``ok (@name)``, ``offline: …``,
    ``unauthorized: …``, ``not running``); a bot problem does not make the API unready."""
    checks: dict[str, str] = {}
    # Which backend failed, not how: the exception names sockets, paths and addresses, which
    # are the operator's business (they are in the log), not every tenant's.
    try:
        services.index.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means "not ready"; say which
        log.warning("readiness: Redis failed", extra={"error": str(exc)})
        checks["redis"] = "error: unreachable"
        services.index.recover_redis()
    try:
        services.index.store.check()
        checks["qdrant"] = "ok"
    except Exception as exc:
        log.warning("readiness: the vector store failed", extra={"error": str(exc)})
        checks["qdrant"] = "error: unreachable"
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", **checks}
    if checks["redis"] == "ok":  # the bot's state, wherever it runs (reported, not required)
        from api.bot.status import StatusBoard, ready_report

        index = services.index
        bot = ready_report(StatusBoard(index.redis, index.namespace),
                           bool(services.settings.tg_bot_token))
        if bot is not None:
            body["bot"] = bot
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", responses={
    **problems(403),
    200: {"content": {CONTENT_TYPE_LATEST: {"example": "tgrag_index_posts 12.0\n"}},
          "description": "Prometheus text exposition"}})
def metrics(request: Request, operator: OperatorDep) -> Response:
    """Request counts and latencies by route and status, index size, ingest and LLM counters."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
