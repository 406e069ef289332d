"""Errors over HTTP, mapped once: every failure becomes ``application/problem+json`` (RFC 9457)
with ``{type, title, status, detail, hint}``.

:class:`~rag.errors.TgragError` s keep their own status, title and hint; request validation is a
422 listing each bad parameter; anything unexpected is a 500 whose detail says nothing about
the internals (the log has the traceback).  A lost Redis connection is a 503 (the embedded
server is restarted on the way).  :func:`problem_body` is the same mapping for a
failure that happens mid-stream (``/ask/stream``'s ``event: error``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import TgragError
from rag.redis_errors import REDIS_DOWN, unavailable

log = logging.getLogger("tgrag.api")
PROBLEM = "application/problem+json"
SCOPE_ERROR = "tgrag.error"  # a TgragError a middleware (api.gate) left for the handlers to render
_HTTP_HINTS = {404: "see /docs for the routes", 405: "see /docs for the routes"}


def error_type(exc: BaseException) -> str:
    """``urn:tgrag:error:<kebab-case class name>``, e.g. ``urn:tgrag:error:input-error``."""
    return "urn:tgrag:error:" + re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()


def problem_body(exc: TgragError) -> dict[str, Any]:
    """The problem+json body of a tgrag error (``param``: the parameter at fault, if known)."""
    body = {"type": error_type(exc), "title": exc.title, "status": exc.http_status,
            "detail": exc.message, "hint": exc.hint}
    if exc.param:
        body["param"] = exc.param
    return body


def problem(status: int, title: str, detail: str, *, type_: str = "about:blank",
            hint: str | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response; ``hint`` (what to do about it) is always present."""
    body = {"type": type_, "title": title, "status": status, "detail": detail, "hint": hint,
            **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


async def _tgrag_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TgragError)
    response = JSONResponse(problem_body(exc), status_code=exc.http_status, media_type=PROBLEM)
    response.headers.update(exc.headers)
    return response


JSON_HINT = 'send a JSON object, e.g. {"q": "ключевая ставка"}, with Content-Type: application/json'


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    broken = next((e for e in raw if e.get("type") == "json_invalid"), None)
    if broken is not None:  # FastAPI says "body.15: JSON decode error"
        at = broken.get("loc", ("body", 0))[-1]
        why = (broken.get("ctx") or {}).get("error", "malformed")
        detail = f"the request body is not valid JSON: {why} at character {at}"
        return problem(422, "Invalid JSON", detail,
                       errors=[{"loc": "body", "msg": detail}], hint=JSON_HINT)
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing" for e in raw):
        return problem(422, "Invalid request", "the request has no JSON body",
                       errors=[{"loc": "body", "msg": "missing"}], hint=JSON_HINT)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": e.get("msg")} for e in raw]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return problem(422, "Invalid request", detail, errors=errors,
                   hint="see /docs for the parameters of this route")


def _loc(loc: tuple[object, ...] | list[object]) -> str:
    """``k`` for a query parameter, ``query`` for a body field: only the leading location
    ("query", "body") is dropped, so a body field may itself be called ``query``."""
    parts = list(loc)
    if parts and parts[0] in ("query", "body"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kept = request.scope.get(SCOPE_ERROR)
    if isinstance(kept, TgragError):
        return await _tgrag_error(request, kept)
    response = problem(exc.status_code, str(exc.detail), str(exc.detail),
                       hint=_HTTP_HINTS.get(exc.status_code))
    response.headers.update(exc.headers or {})
    return response


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis went away mid-request: 503 (not a generic 500), and the embedded server is
    restarted so the next request works (``rag.embedded_redis``)."""
    services = getattr(request.app.state, "services", None)
    if services is not None:
        await run_in_threadpool(services.index.recover_redis)
    return await _tgrag_error(request, unavailable(exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "Internal error", "the server failed; see its log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TgragError, _tgrag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for down in REDIS_DOWN:
        app.add_exception_handler(down, _redis_down)
    app.add_exception_handler(Exception, _unexpected_error)
