"""API keys, tenants, per-key rate limits, the throttle on wrong keys and the loopback rule.

``TGRAG_API_KEYS`` is a comma-separated list of ``key`` or ``key:tenant`` entries; a bare key
belongs to tenant ``default``.  A key is sent as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``.  With no keys configured, auth is off: every request is tenant ``default``,
``tgrag serve`` binds to loopback only (see :func:`check_bind`) and the app itself answers only
loopback clients, whatever server runs it (``api.gate``).

Each key has a token bucket of ``TGRAG_RATE_LIMIT`` requests per minute (burst = the same
number); an empty bucket answers ``429`` with ``Retry-After``.  Wrong keys are counted per client
address (:func:`address_key`) the same way, ``TGRAG_AUTH_FAILURE_LIMIT`` per minute; past that the
address gets ``429`` for every keyed route, even with the right key, until its bucket refills.
Buckets live in this process's memory: with several API processes the limits are per process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rag.errors import Forbidden, InputError, RateLimited, Unauthorized
from rag.ids import DEFAULT_TENANT, validate_tenant
from rag.settings import Settings


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


KEY_RULE = ("each entry is `key` or `key:tenant`: a key is printable ASCII without spaces, `,` "
            "or `:`, and a tenant is 1-64 characters of a-z, 0-9, '_' and '-', written in "
            "lower case")


def parse_api_keys(entries: list[str]) -> dict[str, str]:
    """``["k1:acme", "k2"]`` → ``{"k1": "acme", "k2": "default"}``.

    Strict, so that no entry can mean two things: a key never contains ``:``, and the part after
    the one ``:`` must be a tenant name exactly as written (``Zx8:Q`` is refused rather than read
    as key ``Zx8`` of tenant ``q``).  Errors name the entry by position, never echo a key.
    """
    keys: dict[str, str] = {}
    for n, entry in enumerate(entries, 1):
        key, sep, tenant = entry.strip().partition(":")
        where = f"TGRAG_API_KEYS entry {n}"
        if not key:
            raise InputError(f"{where} has an empty key", hint=KEY_RULE)
        if ":" in tenant:
            raise InputError(f"{where} has more than one ':' (a key cannot contain ':')",
                             hint=KEY_RULE)
        if not all(33 <= ord(c) < 127 for c in key):
            raise InputError(f"{where}: the key has a space or a non-ASCII character",
                             hint=KEY_RULE)
        if sep:
            try:
                valid = validate_tenant(tenant)
            except InputError:
                valid = ""
            if valid != tenant:
                raise InputError(
                    f"{where} is ambiguous: the part after ':' ({tenant[:20]!r}) is not a "
                    "tenant name, so is the ':' part of the key?", hint=KEY_RULE)
        if key in keys:
            raise InputError(f"{where} repeats an earlier key",
                             hint="give each key once; " + KEY_RULE)
        keys[key] = tenant if sep else DEFAULT_TENANT
    return keys


def is_loopback(host: str | None) -> bool:
    """Whether a client or bind address is this machine's loopback (``127.0.0.0/8``, ``::1``,
    ``::ffff:127.x``).  ``None`` (a Unix socket) is local too; a name is not (see
    :func:`check_bind` for names)."""
    if host is None:
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def address_key(host: str | None) -> str:
    """The unit wrong keys are counted by: an IPv4 address, or an IPv6 /64 (one host usually
    has a whole /64, so counting single IPv6 addresses would not slow anyone down)."""
    if host is None:
        return "local"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback bind address when no API keys are configured.  A name counts as
    loopback when every address it resolves to is (``localhost``)."""
    if settings.api_keys or is_loopback(host):
        return
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None)}
    except OSError:
        resolved = set()
    if resolved and all(is_loopback(str(a)) for a in resolved):
        return
    raise InputError(
        f"refusing to bind {host}: no API keys are configured, so the API would be open to "
        "anyone who can reach this address",
        hint="set TGRAG_API_KEYS (e.g. `k1:acme,k2`) or serve on a loopback address "
        "(127.0.0.1)",
    )


class TokenBuckets:
    """In-memory token buckets, one per key: ``per_minute`` tokens, refilled continuously.

    At most ``max_keys`` buckets are kept (the least recently used go first), so keys chosen by
    clients (addresses) cannot grow the table without bound; a forgotten bucket is a full one.
    """

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def take(self, key: str) -> float:
        """Take a token; returns 0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now); takes nothing."""
        if self.capacity <= 0:
            return 0.0
        with self._lock:
            if key not in self._buckets:
                return 0.0
            tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class Authenticator:
    """Resolves a request's headers to a :class:`Principal`, applies the per-key rate limit, and
    keeps the per-address count of wrong keys (the gate, ``api.gate``, calls it before a route
    reads any body)."""

    def __init__(self, settings: Settings) -> None:
        self.keys = parse_api_keys(settings.api_keys)
        self.buckets = TokenBuckets(settings.rate_limit, max_keys=max(1, len(self.keys)))
        self.failures = TokenBuckets(settings.auth_failure_limit)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, headers: Mapping[str, str], address: str | None) -> Principal:
        """The caller, or :class:`Unauthorized` / :class:`RateLimited`."""
        if not self.keys:
            return ANONYMOUS
        where = address_key(address)
        wait = self.failures.wait(where)
        if wait > 0:  # even the right key: its answer would tell a guesser it was right
            raise RateLimited("too many wrong API keys from this address",
                              retry_after=max(1, math.ceil(wait)))
        given = _presented_key(headers)
        if given is None:
            raise Unauthorized("no API key", hint="send `Authorization: Bearer <key>` or "
                               "`X-API-Key: <key>`")
        tenant = None
        for key, owner in self.keys.items():  # constant time per key
            if hmac.compare_digest(key.encode(), given.encode()):
                tenant = owner
        if tenant is None:
            self.failures.take(where)
            raise Unauthorized("invalid API key", hint="check the key with your administrator")
        principal = Principal(key_id(given), tenant)
        wait = self.buckets.take(principal.key_id)
        if wait > 0:
            raise RateLimited(f"rate limit of {int(self.buckets.capacity)} requests per minute "
                              "exceeded for this key", retry_after=max(1, math.ceil(wait)))
        return principal

    def __call__(self, request: Request) -> Principal:
        client = request.client
        return self.check(request.headers, client.host if client else None)


def _presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def authenticate(request: Request) -> Principal:
    """Dependency: the caller.  The gate (``api.gate``) has already checked the key before the
    body was read; this only hands its answer to the route (and checks itself when a route is
    reached without the gate, e.g. an app assembled differently)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = request.app.state.authenticator(request)
        request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_operator(principal: PrincipalDep) -> Principal:
    """Dependency: only keys of the default tenant (deployment-wide routes)."""
    if not principal.is_operator:
        raise Forbidden("this route is for the operator's keys (tenant default)",
                        hint="Telegram sync and metrics are deployment-wide; ask the operator")
    return principal
