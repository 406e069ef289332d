"""Redis: a server from ``TGRAG_REDIS_URL``, or the embedded one under data_dir
(``rag.embedded_redis``: a child redis-server that never outlives this process).

:func:`recover` restarts a dead embedded server; ``rag.redis_errors`` turns a lost connection
into the one error surfaces show.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from llama_index.core.storage.kvstore.types import DEFAULT_BATCH_SIZE, DEFAULT_COLLECTION
from llama_index.storage.kvstore.redis import RedisKVStore

from rag.embedded_redis import EmbeddedRedis, EmbeddedRedisClient, spawn_embedded
from rag.errors import BackendUnavailable
from rag.settings import Settings

log = logging.getLogger("tgrag.redis")


def open_redis(settings: Settings, started: EmbeddedRedis | None = None) -> redis.Redis:
    """Connect to Redis and check it answers; raise ``BackendUnavailable`` otherwise.

    ``started``: the embedded server, already spawned (``rag.backend_start``).  Its client comes
    back as soon as it answers, maybe still loading its data (seconds at 100k posts), so the
    caller can open the vector engine meanwhile; :func:`wait_loaded` waits for the rest."""
    if started is not None:
        return _embedded(settings, started)
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
        where = _redact(settings.redis_url)
    else:
        client = _embedded(settings, None)
        where = f"embedded Redis in {settings.redis_dir}"
    try:
        client.ping()
    except redis.RedisError as exc:
        close_redis(client, settings)
        raise BackendUnavailable(
            f"Redis is not reachable at {where}: {exc}",
            hint="start Redis (docker compose up redis) or unset TGRAG_REDIS_URL for embedded mode",
        ) from exc
    return client


def _redact(url: str) -> str:
    """The URL without its password (error messages end up in logs and HTTP responses)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _embedded(settings: Settings, started: EmbeddedRedis | None) -> redis.Redis:
    if started is None:
        server = spawn_embedded(settings.redis_dir)
        server.wait_ready()
    else:
        server = started
        server.wait_ready(loading=True)
    client = EmbeddedRedisClient(unix_socket_path=str(server.socket))
    client.server = server
    weakref.finalize(client, server.stop)  # a client dropped without close() stops it too
    return client


def wait_loaded(client: redis.Redis) -> None:
    """Wait until the embedded server behind ``client`` has loaded its data (nothing to wait
    for otherwise: ``open_redis`` returns others only once they answer)."""
    server = getattr(client, "server", None)
    if isinstance(server, EmbeddedRedis):
        server.wait_ready()


def close_redis(client: redis.Redis, settings: Settings) -> None:
    """Close the client; in embedded mode also stop the server, which this process owns."""
    server = getattr(client, "server", None)
    client.close()
    if isinstance(server, EmbeddedRedis):
        server.stop()


def recover(client: redis.Redis) -> bool:
    """Restart the embedded server behind ``client`` if it died (True when it did); a Redis
    server of TGRAG_REDIS_URL is not ours to restart: its clients reconnect by themselves."""
    server = getattr(client, "server", None)
    if not isinstance(server, EmbeddedRedis):
        return False
    try:
        return server.ensure_running()
    except BackendUnavailable as exc:
        log.error("cannot restart the embedded Redis", extra={"error": exc.message})
        return False


def async_twin(client: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client for the same server (LlamaIndex's Redis stores want both)."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return redis.asyncio.Redis(unix_socket_path=kwargs["path"], db=kwargs.get("db", 0))
    return redis.asyncio.Redis(
        host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0), username=kwargs.get("username"), password=kwargs.get("password"),
    )


def compact_json(value: dict[str, Any]) -> bytes:
    """A value as compact UTF-8 JSON: a Cyrillic letter takes 2 bytes, not the 6 of ``\\uXXXX``
    (``json.dumps``' default), and no padding.  The docstore holds every post's text, so this
    halves Redis memory.  A text with a lone surrogate (broken input) cannot be UTF-8: that one
    value keeps the escaped form, which reads back the same."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


class CompactRedisKVStore(RedisKVStore):
    """LlamaIndex's Redis key-value store writing :func:`compact_json`; reading is unchanged
    (``json.loads`` reads both forms, so values written before stay readable)."""

    def put(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        self._redis_client.hset(name=collection, key=key, value=compact_json(val))

    async def aput(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        await self._async_redis_client.hset(name=collection, key=key, value=compact_json(val))

    def put_all(self, kv_pairs: list[tuple[str, dict]], collection: str = DEFAULT_COLLECTION,
                batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        with self._redis_client.pipeline() as pipe:
            for n, (key, val) in enumerate(kv_pairs, 1):
                pipe.hset(name=collection, key=key, value=compact_json(val))
                if n % batch_size == 0:
                    pipe.execute()
            pipe.execute()


def kvstore(client: redis.Redis) -> RedisKVStore:
    """A LlamaIndex key-value store over an open client (the docstore uses it)."""
    return CompactRedisKVStore(redis_client=client, async_redis_client=async_twin(client))
