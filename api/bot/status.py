"""The bot's state where every process can read it, and the claim that keeps it to one process.

The running bot writes its state to Redis (``<ns>:bot:status``, expiring unless refreshed), so
``GET /ready`` of any API process reports it, also when the bot runs in ``tgrag bot`` or
``tgrag worker`` elsewhere.  Telegram would deliver a bot's updates to every connection logged in
as it, so two processes running one bot would both answer: each bot process first takes the
claim ``<ns>:bot:claim:<bot id>`` (a lock with expiry, renewed while it runs); another process
with the same token waits in ``standby`` and takes over when the first stops or dies.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from ingest.telegram.state import RedisLock

STATUS_TTL = 90.0  # seconds a published state stays without a refresh (3 heartbeats)


class StatusBoard:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.namespace = namespace
        self.key = f"{namespace}:bot:status"

    def publish(self, state: str, detail: str = "", *, bot: str = "",
                ttl: float = STATUS_TTL) -> None:
        data = {"state": state, "detail": detail, "bot": bot, "updated": int(time.time())}
        self._r.set(self.key, json.dumps(data, ensure_ascii=False), px=max(1, int(ttl * 1000)))

    def clear(self) -> None:
        self._r.delete(self.key)

    def read(self) -> dict[str, Any] | None:
        raw = self._r.get(self.key)
        return json.loads(raw) if raw else None

    def claim(self, bot_id: int, ttl: float) -> RedisLock:
        return RedisLock(self._r, f"{self.namespace}:bot:claim:{bot_id}", ttl)


def ready_report(board: StatusBoard, token_configured: bool) -> str | None:
    """The ``bot`` field of ``GET /ready``: ``ok (@name)``, ``unauthorized: …``, … or ``not
    running`` (a token is set here but no bot process reports); None = no bot anywhere."""
    data = board.read()
    if data is None:
        return "not running" if token_configured else None
    text = data["state"]
    if data.get("bot"):
        text += f" (@{data['bot']})"
    if data.get("detail"):
        text += f": {data['detail']}"
    return text
