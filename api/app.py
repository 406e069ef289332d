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
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import IndexDep, get_index
from api.logging import configure_logging
from api.observability import ApiMetrics, RequestContext, install_log_filter
from api.security import Authenticator, authenticate, require_operator
from rag.errors import TgragError
from rag.index import Index
from rag.settings import Settings

__all__ = ["IndexDep", "app", "create_app", "get_index", "problem"]
log = logging.getLogger("tgrag.api")
PROBLEM = "application/problem+json"


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
    response = problem(exc.http_status, exc.title, exc.message, type_=_error_type(exc),
                       hint=exc.hint)
    response.headers.update(getattr(exc, "headers", None) or {})
    return response


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
    hints = {404: "see /docs for the routes", 405: "see /docs for the routes",
             413: "send a smaller body (uploads: TGRAG_MAX_UPLOAD_MB)"}
    response = problem(exc.status_code, str(exc.detail), str(exc.detail),
                       hint=hints.get(exc.status_code))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "Internal error", "the server failed; see its log")


# -- the app --------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, index: Index | None = None) -> FastAPI:
    """The API app.  Its lifespan opens the index, unless an already opened one is given.

    Reading the settings (and the API keys) happens here; opening backends, in the lifespan.
    """
    s = settings or Settings()
    authenticator = Authenticator(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from api.sync_routes import sync_lifespan

        configure_logging(s.log_level)
        install_log_filter()
        if not authenticator.enabled:
            log.warning("authentication is off: TGRAG_API_KEYS is empty (loopback use only)")
        app.state.write_lock = threading.Lock()
        app.state.ingest_executor = ThreadPoolExecutor(1, thread_name_prefix="tgrag-ingest")
        opened = None
        if index is None:
            opened = Index.open(s, purpose="tgrag serve")
        app.state.index = index or opened
        try:
            # The sync scheduler runs as a task on this same event loop (no nested asyncio.run).
            async with sync_lifespan(app):
                yield
        finally:
            app.state.ingest_executor.shutdown(wait=True)
            if opened is not None:
                opened.close()

    app = FastAPI(
        title="tgrag",
        summary="Search over Telegram channels",
        description="Search, question answering and ingestion over Telegram channel posts. "
        "Every route but `/health` and the web page needs an API key "
        "(`Authorization: Bearer <key>` or `X-API-Key`) when `TGRAG_API_KEYS` is set; "
        "errors are `application/problem+json`. See docs/api.md.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.authenticator = authenticator
    app.state.metrics = ApiMetrics(app)

    # Imported here: these routers import get_index from this module.
    from api.qa_routes import router as qa_router
    from api.routes import ingest, ops, posts, search
    from api.schemas import COMMON, problems
    from api.sync_routes import router as sync_router

    auth = [Depends(authenticate)]
    app.include_router(ops.public)
    app.include_router(search.router, dependencies=auth)
    app.include_router(posts.router, dependencies=auth)
    app.include_router(qa_router, dependencies=auth, tags=["ask"],
                       responses={**COMMON, **problems(400, 502, 503)})
    app.include_router(ingest.make_router(s), dependencies=auth)
    # Telegram sync is deployment-wide: keys of the default tenant only.
    app.include_router(sync_router, dependencies=[Depends(require_operator)], tags=["sync"],
                       responses={**COMMON, **problems(400, 403, 404, 503)})
    app.include_router(ops.router, dependencies=auth)

    app.add_exception_handler(TgragError, _tgrag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

    if s.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=s.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(ingest.UploadLimit, limit=int(s.max_upload_mb * 1024 * 1024))
    app.add_middleware(RequestContext, metrics=app.state.metrics)  # outermost: ids on all
    return app


app = create_app()
