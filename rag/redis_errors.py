"""What a lost Redis connection becomes: the one error surfaces show.

Its own module (only redis-py and the error classes) so the CLI's error mapping does not import
LlamaIndex's Redis stores (``rag.redis_backend``), which takes seconds at every ``tgrag`` start.
"""

from __future__ import annotations

import logging

import redis

from rag.errors import BackendUnavailable

log = logging.getLogger("tgrag.redis")

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError


def unavailable(exc: BaseException) -> BackendUnavailable:
    """The error to show for a lost Redis connection: what is wrong, not where (the exception's
    text names the socket path or the server address; the log has it)."""
    log.warning("Redis unreachable", extra={"error": str(exc)})
    err = BackendUnavailable("Redis is not reachable right now",
                             hint="try again in a moment; if it persists, see the server's log")
    err.headers = {"Retry-After": "1"}
    return err
