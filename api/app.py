"""The HTTP API: a thin FastAPI surface over ``rag``.

One :class:`~rag.index.Index` per process, opened by the lifespan (embedded mode: this process
owns the data folder while it runs) and handed to the routes with ``Depends(get_index)``.  Routes
only translate HTTP to core calls and back; errors raised by the core are mapped once, to
``application/problem+json`` (RFC 9457) with the error's ``hint`` as an extension member.

``uvicorn api.app:app`` works too: importing this module opens nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.logging import configure_logging
from rag.errors import TgragError
from rag.index import Index
from rag.search import MAX_K, PostSearcher, SearchFilters, parse_date
from rag.settings import Settings

log = logging.getLogger("tgrag.api")
PROBLEM = "application/problem+json"


# -- dependencies ---------------------------------------------------------------------------------


def get_index(request: Request) -> Index:
    """The process's opened index (set by the lifespan)."""
    return request.app.state.index


IndexDep = Annotated[Index, Depends(get_index)]


# -- routes ---------------------------------------------------------------------------------------

router = APIRouter()


@router.get("/search")
def search(
    index: IndexDep,
    q: Annotated[str, Query(description="What to look for.")] = "",
    k: Annotated[int, Query(description=f"Posts to return, 1..{MAX_K}.")] = 10,
    channel: Annotated[list[str], Query(description="Channel id, username or title.")] = [],  # noqa: B006
    tag: Annotated[list[str], Query(description="Tags, any of.")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="YYYY-MM-DD[THH:MM] or unix.")] = None,
    until: Annotated[str | None, Query(description="Inclusive end date.")] = None,
    mode: Annotated[str, Query(description="dense | sparse | hybrid.")] = "dense",
) -> dict[str, Any]:
    filters = SearchFilters(
        channel_ids=[index.catalog.resolve(c) for c in channel],
        tags=list(tag),
        since=parse_date(since) if since else None,
        until=parse_date(until, end_of_day=True) if until else None,
    )
    hits = PostSearcher(index).search(q, filters, k=k, mode=mode)
    return {"results": [h.to_dict() for h in hits]}


@router.get("/stats")
def stats(index: IndexDep) -> dict[str, Any]:
    return index.stats()


@router.get("/health")
def health(index: IndexDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        index.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means "not healthy"; say which
        checks["redis"] = f"error: {exc}"
    try:
        index.qdrant.get_collection(index.store.collection_name)
        checks["qdrant"] = "ok"
    except Exception as exc:
        checks["qdrant"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks},
                        status_code=200 if ok else 503)


# -- errors ---------------------------------------------------------------------------------------


def problem(status: int, title: str, detail: str, *, type_: str = "about:blank",
            hint: str | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response; ``hint`` (what to do about it) is always present."""
    body = {"type": type_, "title": title, "status": status, "detail": detail, "hint": hint,
            **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _error_type(exc: Exception) -> str:
    return "urn:tgrag:error:" + re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()


async def _tgrag_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TgragError)
    return problem(exc.http_status, exc.title, exc.message, type_=_error_type(exc), hint=exc.hint)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in e.get("loc", ()) if p != "query"), "msg": e.get("msg")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return problem(422, "Invalid request", detail, errors=errors,
                   hint="see /docs for the parameters of this route")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    hint = "see /docs for the routes" if exc.status_code in (404, 405) else None
    return problem(exc.status_code, str(exc.detail), str(exc.detail), hint=hint)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "Internal error", "the server failed; see its log")


# -- the app --------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, index: Index | None = None) -> FastAPI:
    """The API app.  Its lifespan opens the index, unless an already opened one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from api.sync_routes import sync_lifespan

        s = settings or Settings()
        configure_logging(s.log_level)
        if index is not None:  # owned by the caller (`tgrag serve`)
            app.state.index = index
            # The sync scheduler runs as a task on this same event loop (no nested asyncio.run).
            async with sync_lifespan(app):
                yield
            return
        opened = Index.open(s, purpose="tgrag serve")
        app.state.index = opened
        try:
            async with sync_lifespan(app):
                yield
        finally:
            opened.close()

    app = FastAPI(
        title="tgrag",
        summary="Search over Telegram channels",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(router)
    # Imported here: these routers import get_index from this module.
    from api.qa_routes import router as qa_router
    from api.sync_routes import router as sync_router

    app.include_router(qa_router)
    app.include_router(sync_router)
    app.add_exception_handler(TgragError, _tgrag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


app = create_app()
