"""The HTTP API: a thin FastAPI surface over the services (``api.services``).

One :class:`~api.services.Services` per process, built by the lifespan (embedded mode: this
process owns the data folder while it runs) and handed to the routes through ``api.deps``.
Routes only translate HTTP to use cases and back; errors raised by the core are mapped once
(``api.errors``) to ``application/problem+json``.

``uvicorn api.app:app`` works too: importing this module opens nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.bot.hosting import bot_lifespan
from api.errors import install_error_handlers
from api.logging import configure_logging
from api.observability import ApiMetrics, RequestContext, install_log_filter
from api.routes import alerts, digest, ingest, ops, posts, qa, search, sync
from api.security import Authenticator, authenticate, require_operator
from api.services import Services
from rag.index import Index
from rag.settings import Settings, load_settings

__all__ = ["app", "create_app"]
log = logging.getLogger("tgrag.api")


def create_app(settings: Settings | None = None, *, services: Services | None = None,
               index: Index | None = None) -> FastAPI:
    """The API app.  Its lifespan builds the services, unless given (``services``, or an opened
    ``index`` to build them over, as tests do); whoever opened them closes them.

    Reading the settings (and the API keys) happens here; opening backends, in the lifespan.
    """
    s = settings or load_settings()
    authenticator = Authenticator(s)
    given = services or (Services(index) if index is not None else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(s.log_level)
        install_log_filter()
        if not authenticator.enabled:
            log.warning("authentication is off: TGRAG_API_KEYS is empty (loopback use only)")
        own = given is None
        app.state.services = given or Services.open(s, purpose="tgrag serve")
        try:
            # Alerts: a background thread checks what every ingest path commits.
            app.state.services.start_alerts()
            # The sync scheduler and the bot (when TGRAG_TG_BOT_TOKEN is set) run as tasks on
            # this same event loop (no nested asyncio.run).
            async with sync.sync_lifespan(app.state.services), bot_lifespan(app):
                yield
        finally:
            app.state.services.stop_alerts()
            if own:
                app.state.services.close()
            del app.state.services

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

    auth = [Depends(authenticate)]
    app.include_router(ops.public)
    app.include_router(search.router, dependencies=auth)
    app.include_router(posts.router, dependencies=auth)
    app.include_router(qa.router, dependencies=auth)
    app.include_router(digest.router, dependencies=auth)
    app.include_router(ingest.make_router(s), dependencies=auth)
    app.include_router(alerts.router, dependencies=auth)
    # Telegram sync is deployment-wide: keys of the default tenant only.
    app.include_router(sync.router, dependencies=[Depends(require_operator)])
    app.include_router(ops.router, dependencies=auth)
    install_error_handlers(app)

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
