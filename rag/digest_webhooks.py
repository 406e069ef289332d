"""The scheduled digest as a signed webhook: the :class:`~rag.digest_delivery.DigestSink` of the
URLs in ``TGRAG_DIGEST_WEBHOOKS``.

Sent with the alerts' webhook client (``rag.alerts.webhook.WebhookNotifier.post``): the same
``X-Tgrag-Signature`` (HMAC-SHA256 of the body, keyed with ``TGRAG_ALERT_WEBHOOK_SECRET``) and
``X-Tgrag-Delivery`` headers, no redirects followed.  The URLs are the operator's, so private
addresses are allowed.  The body::

    {"delivery_id": "digest:<day>:<tenant>:<url hash>", "type": "digest", "day": "YYYY-MM-DD",
     "tenant": "...", "digest": <the digest JSON>, "text": "<the digest as plain text>",
     "sent": "<ISO time>"}

``delivery_id`` is the same on every attempt of a day: a receiver deduplicates on it.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

from rag.alerts.webhook import WebhookNotifier
from rag.digest import Digest
from rag.digest_delivery import Recipient
from rag.settings import Settings


class WebhookDigestSink:
    channel = "webhook"

    def __init__(self, settings: Settings, notifier: WebhookNotifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or WebhookNotifier(settings)

    def available(self) -> bool:
        return True  # a receiver that fails is that delivery's failure, retried

    async def recipients(self) -> list[Recipient]:
        found = []
        for entry in self.settings.digest_webhooks:
            tenant, _, url = entry.partition("=")
            key = f"webhook:{tenant}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"
            found.append(Recipient(key, tenant, "ru", url))
        return found

    async def send(self, recipient: Recipient, digest: Digest) -> None:
        secret = self.settings.alert_webhook_secret
        assert secret is not None  # the settings refuse webhooks without it
        due = datetime.fromtimestamp(digest.until, UTC)
        schedule = self.settings.schedule  # the day the delivery counts by, in its time zone
        day = schedule.day_key(due) if schedule is not None else due.date().isoformat()
        payload: dict[str, Any] = {
            "delivery_id": f"digest:{day}:{recipient.key.removeprefix('webhook:')}",
            "type": "digest", "day": day, "tenant": recipient.tenant,
            "digest": digest.to_dict(), "text": digest_text(digest),
            "sent": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # The client is blocking (httpx, its own timeout): off the event loop.
        await asyncio.to_thread(self.notifier.post, str(recipient.address), payload,
                                secret=secret.get_secret_value(),
                                delivery_id=payload["delivery_id"], allow_private=True)

    def close(self) -> None:
        self.notifier.close()


def digest_text(digest: Digest) -> str:
    """The digest as plain text: one paragraph per story (title, summary, its posts' links)."""
    blocks = []
    for n, story in enumerate(digest.stories, 1):
        links = " ".join(f"[{k}] {p.link}" for k, p in enumerate(story.posts, 1))
        blocks.append(f"{n}. {story.title}\n{story.summary}\n{links}")
    return "\n\n".join(blocks)
