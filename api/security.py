"""API keys, tenants and per-key rate limits.

``TGRAG_API_KEYS`` is a comma-separated list of ``key`` or ``key:tenant`` entries; a bare key
belongs to tenant ``default``.  A key is sent as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``.  With no keys configured, auth is off: every request is tenant ``default``
and ``tgrag serve`` binds to loopback only (see :func:`check_bind`).

Each key has a token bucket of ``TGRAG_RATE_LIMIT`` requests per minute (burst = the same
number); an empty bucket answers ``429`` with ``Retry-After``.  Buckets live in this process's
memory: with several API processes the effective limit is per process.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rag.errors import Forbidden, InputError, RateLimited, Unauthorized
from rag.ids import DEFAULT_TENANT, validate_tenant
from rag.settings import Settings

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``key_id`` (a short hash of the key, safe to log) and its tenant."""

    key_id: str
    tenant: str

    @property
    def is_operator(self) -> bool:
        """Keys of the default tenant run the deployment (Telegram sync, metrics)."""
        return self.tenant == DEFAULT_TENANT


ANONYMOUS = Principal("anonymous", DEFAULT_TENANT)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def parse_api_keys(entries: list[str]) -> dict[str, str]:
    """``["k1:acme", "k2"]`` → ``{"k1": "acme", "k2": "default"}``."""
    keys: dict[str, str] = {}
    for entry in entries:
        key, sep, tenant = entry.strip().rpartition(":") if ":" in entry else (entry, "", "")
        key = key.strip() if sep else entry.strip()
        if not key:
            raise InputError("empty API key in TGRAG_API_KEYS",
                             hint="use comma-separated `key` or `key:tenant` entries")
        keys[key] = validate_tenant(tenant) if sep else DEFAULT_TENANT
    return keys


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback bind address when no API keys are configured."""
    if not settings.api_keys and host.strip("[]") not in LOOPBACK:
        raise InputError(
            f"refusing to bind {host}: no API keys are configured, so the API would be open to "
            "anyone who can reach this address",
            hint="set TGRAG_API_KEYS (e.g. `k1:acme,k2`) or serve on 127.0.0.1",
        )


class TokenBuckets:
    """In-memory token buckets, one per key: ``per_minute`` tokens, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token; returns 0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


class Authenticator:
    """Resolves a request to a :class:`Principal` and applies the rate limit."""

    def __init__(self, settings: Settings) -> None:
        self.keys = parse_api_keys(settings.api_keys)
        self.buckets = TokenBuckets(settings.rate_limit)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def __call__(self, request: Request) -> Principal:
        if not self.keys:
            return ANONYMOUS
        given = _presented_key(request)
        if given is None:
            raise Unauthorized("no API key", hint="send `Authorization: Bearer <key>` or "
                               "`X-API-Key: <key>`")
        tenant = None
        for key, owner in self.keys.items():  # constant time per key
            if hmac.compare_digest(key.encode(), given.encode()):
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid API key", hint="check the key with your administrator")
        principal = Principal(key_id(given), tenant)
        wait = self.buckets.take(principal.key_id)
        if wait > 0:
            raise RateLimited(f"rate limit of {int(self.buckets.capacity)} requests per minute "
                              "exceeded for this key", retry_after=max(1, math.ceil(wait)))
        return principal


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def authenticate(request: Request) -> Principal:
    """Dependency: the caller (401/429 as problem+json when refused)."""
    principal: Principal = request.app.state.authenticator(request)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_operator(principal: PrincipalDep) -> Principal:
    """Dependency: only keys of the default tenant (deployment-wide routes)."""
    if not principal.is_operator:
        raise Forbidden("this route is for the operator's keys (tenant default)",
                        hint="Telegram sync and metrics are deployment-wide; ask the operator")
    return principal
