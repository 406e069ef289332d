"""The gate: pure ASGI middleware every HTTP request passes before a route reads its body.

FastAPI reads (and, for uploads, spools to a temporary file) a request's whole body before it
runs the route's dependencies, so a key checked in a dependency is checked too late: an
anonymous 47 MB upload or 200 MB of JSON would cost disk and memory before its 401.  The gate
decides from the request line and headers alone, in this order:

1. no API keys configured: only loopback clients are served (403 otherwise), whichever server
   runs the app (``uvicorn api.app:app --host 0.0.0.0`` included);
2. routes that need a key (all but the public ones, see :class:`RouteTable`; unmatched paths too):
   a client address past ``TGRAG_AUTH_FAILURE_LIMIT`` wrong keys is refused (429), then the key
   is checked (401) and its rate limit applied (429) — :class:`~api.security.Authenticator`;
3. the body is limited: ``TGRAG_MAX_UPLOAD_MB`` for the upload route, ``TGRAG_MAX_JSON_KB`` for
   every other one.  A larger ``Content-Length`` is refused (413) unread; a body that grows past
   the limit while streaming stops with the same 413.

Refusals are problem+json like every other error (``api.errors``); the principal found is left
in the request state for the routes' ``authenticate`` dependency.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM, SCOPE_ERROR, problem_body
from api.security import Authenticator, is_loopback
from rag.errors import BodyTooLarge, Forbidden, TgragError, UploadTooLarge
from rag.settings import Settings

MULTIPART_SLACK = 64 * 1024  # headers and boundaries around an uploaded file
UPLOAD_PATH = "/ingest/export"


class RouteTable:
    """The app's routes, flat, each known as public or keyed.

    FastAPI keeps an included router as one wrapper entry of the app's routes, so the table is
    told what was included how (:meth:`include`).  Public: the routers included with
    ``public=True`` (``/health``, the page) and the routes on the app itself (FastAPI's docs
    pages, mounts).  Everything else, unmatched paths included, needs a key: probing paths is
    no way around it.  Lists are read at each lookup, so routes added later count.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app_routes = app.router.routes
        self._public: list[APIRouter] = []
        self._keyed: list[APIRouter] = []

    def include(self, app: FastAPI, router: APIRouter, *, public: bool = False,
                dependencies: Sequence[Any] = ()) -> None:
        app.include_router(router, dependencies=list(dependencies))
        (self._public if public else self._keyed).append(router)

    def candidates(self) -> Iterator[tuple[BaseRoute, bool]]:
        """``(route, needs_key)`` for every route, in the order the router tries them."""
        for route in self._app_routes:
            if isinstance(route, Route | Mount):  # the app's own (included routers are not)
                yield route, False
        for routers, keyed in ((self._public, False), (self._keyed, True)):
            for router in routers:
                for route in router.routes:
                    yield route, keyed

    def match(self, scope: Scope) -> tuple[BaseRoute | None, bool]:
        """The route a request reaches (a path match with another method counts: 405) and
        whether it needs a key."""
        partial: tuple[BaseRoute, bool] | None = None
        for route, keyed in self.candidates():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route, keyed
            if match is Match.PARTIAL and partial is None:
                partial = (route, keyed)
        return partial or (None, True)


class Gate:
    """The gate (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, authenticator: Authenticator,
                 routes: RouteTable) -> None:
        self.app = app
        self.auth = authenticator
        self.routes = routes
        self.upload_limit = int(settings.max_upload_mb * 2**20)
        self.json_limit = settings.max_json_kb * 1024
        self.json_limit_text = f"{settings.max_json_kb} KB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        headers = Headers(scope=scope)
        try:
            if not self.auth.enabled:
                if not is_loopback(host):
                    raise Forbidden(
                        "this server has no API keys, so it answers only clients on its own "
                        "machine (loopback)",
                        hint="set TGRAG_API_KEYS on the server to serve other machines, or "
                        "connect from the server itself")
            elif self.routes.match(scope)[1]:
                scope.setdefault("state", {})["principal"] = self.auth.check(headers, host)
            limit, error = self._limit(scope, headers)
        except TgragError as err:
            await refuse(err, scope, receive, send)
            return
        if error is not None:
            await refuse(error, scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                # Raised inside the route's body parsing: FastAPI re-raises HTTPExceptions
                # only, and api.errors renders the error kept in the scope.
                scope[SCOPE_ERROR] = self._too_large(scope, seen)
                raise HTTPException(413)
            return message

        await self.app(scope, limited, send)

    def _limit(self, scope: Scope, headers: Headers) -> tuple[int, TgragError | None]:
        """The body limit of this request, and the error when its Content-Length is over it."""
        upload = scope["path"] == UPLOAD_PATH
        limit = self.upload_limit + MULTIPART_SLACK if upload else self.json_limit
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return limit, self._too_large(scope, int(length))
        return limit, None

    def _too_large(self, scope: Scope, size: int) -> TgragError:
        if scope["path"] == UPLOAD_PATH:
            return UploadTooLarge(size, self.upload_limit)
        return BodyTooLarge(self.json_limit_text, "TGRAG_MAX_JSON_KB")


async def refuse(err: TgragError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with ``err`` as problem+json, without reading the request body."""
    response = JSONResponse(problem_body(err), status_code=err.http_status, media_type=PROBLEM,
                            headers=err.headers)
    await response(scope, receive, send)
