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
from api.gate import Gate, RouteTable
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
               index: Index | None = None, close_services: bool = False) -> FastAPI:
    """The API app.  Its lifespan builds the services, unless given (``services``, or an opened
    ``index`` to build them over, as tests do); whoever opened them closes them, or the
    lifespan does with ``close_services`` (``tgrag serve``: uvicorn re-raises SIGTERM after
    the shutdown, so nothing after ``uvicorn.run`` would run to stop the embedded Redis).

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
        own = given is None or close_services
        app.state.services = given or Services.open(s, purpose="tgrag serve")
        app.state.services.uploads()  # resumes the uploads a previous run left unfinished
        try:
            # Alerts: a background thread checks what every ingest path commits.
            app.state.services.start_alerts()
            # The sync scheduler and the bot (when TGRAG_TG_BOT_TOKEN is set) run as tasks on
            # this same event loop (no nested asyncio.run).
            async with sync.sync_lifespan(app.state.services), bot_lifespan(app):
                yield
        finally:
            app.state.services.stop_alerts()
            app.state.services.stop_uploads()  # started above, whoever owns the services
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
    routes = RouteTable(app)  # which routes need a key, for the gate
    routes.include(app, ops.public, public=True)
    routes.include(app, search.router, dependencies=auth)
    routes.include(app, posts.router, dependencies=auth)
    routes.include(app, qa.router, dependencies=auth)
    routes.include(app, digest.router, dependencies=auth)
    routes.include(app, ingest.make_router(s), dependencies=auth)
    routes.include(app, alerts.router, dependencies=auth)
    # Telegram sync is deployment-wide: keys of the default tenant only.
    routes.include(app, sync.router, dependencies=[Depends(require_operator)])
    routes.include(app, ops.router, dependencies=auth)
    install_error_handlers(app)

    # Innermost first: the gate (keys, throttles, body limits) before any route reads a body;
    # CORS around it, so refusals carry CORS headers; request ids around everything.
    app.add_middleware(Gate, settings=s, authenticator=authenticator, routes=routes)
    if s.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=s.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContext, metrics=app.state.metrics,  # outermost: ids on all
                       routes=routes)
    return app


app = create_app()
