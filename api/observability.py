"""Request ids, access logs and Prometheus metrics for the API.

:class:`RequestContext` (pure ASGI middleware, so streaming responses are untouched) gives every
request an id — the client's ``X-Request-ID`` when it is a sane token, else a new one — echoes it
in the response, puts it on every log record written while the request runs (``request_id=``),
and counts the request by method, route *template* (``/posts/{channel}/{message_id}``, not the
concrete path) and status.

:class:`ApiMetrics` is one Prometheus registry per app: the HTTP counters and latency histogram,
plus a collector that reads the index size and the core's counters (``rag.metrics``) at scrape.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.metrics import ALERT_EVENTS, INGEST_POSTS, LLM_CALLS

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("tgrag.api.access")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def install_log_filter() -> None:
    """Attach the request-id filter to the root handlers (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


class IndexCollector(Collector):
    """Index size and the core's counters, read at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        services = getattr(self.app.state, "services", None)  # set while the lifespan runs
        if services is not None:
            index = services.index
            try:
                posts, points = index.post_count(), index.store.count()
            except Exception:  # a backend hiccup must not break the scrape
                posts = points = None
            if posts is not None:
                yield GaugeMetricFamily("tgrag_index_posts", "Posts in the docstore.", posts)
                yield GaugeMetricFamily("tgrag_index_points", "Chunk vectors in the store.",
                                        points)
        ingest = CounterMetricFamily("tgrag_ingest_posts", "Posts seen by ingestion, by outcome.",
                                     labels=["outcome"])
        for (outcome,), value in sorted(INGEST_POSTS.snapshot().items()):
            ingest.add_metric([outcome], value)
        yield ingest
        llm = CounterMetricFamily("tgrag_llm_calls", "LLM requests by kind and outcome.",
                                  labels=["kind", "outcome"])
        for (kind, outcome), value in sorted(LLM_CALLS.snapshot().items()):
            llm.add_metric([kind, outcome], value)
        yield llm
        alerts = CounterMetricFamily("tgrag_alert_events", "Alert notifications: matched, "
                                     "delivered, retry, dead (dead-lettered).", labels=["event"])
        for (event,), value in sorted(ALERT_EVENTS.snapshot().items()):
            alerts.add_metric([event], value)
        yield alerts


class ApiMetrics:
    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tgrag_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("tgrag_http_request_duration_seconds",
                                 "HTTP request latency by route.", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(IndexCollector(app))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class RequestContext:
    """ASGI middleware: request id in and out, access log line, request metrics."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, seconds)
            log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                       "route": template, "status": status,
                                       "ms": round(seconds * 1000, 1)})
            REQUEST_ID.reset(token)
