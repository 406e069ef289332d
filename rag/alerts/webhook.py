"""Webhooks: a notification as a signed JSON ``POST``.

The body is the JSON of :meth:`Notification.payload` (``{"delivery_id", "attempt", "alert",
"match", "text", "sent"}``), UTF-8.  Headers:

* ``X-Tgrag-Signature: sha256=<hex>`` — HMAC-SHA256 of the exact body bytes, keyed with the
  alert's own secret (shown once when the alert is saved) or, when the deployment sets
  ``TGRAG_ALERT_WEBHOOK_SECRET``, with that; :func:`verify` is what a receiver does;
* ``X-Tgrag-Delivery: <delivery id>`` — the same on every attempt: receivers deduplicate on it.

Any 2xx is delivered; anything else, a timeout or a refused connection is a
:class:`~rag.errors.DeliveryFailed` (retried with backoff by the dispatcher).  Redirects are not
followed (a redirect could point anywhere).  For tenants other than ``default`` the host must
resolve to public addresses, checked again at every send (unless
``TGRAG_ALERT_WEBHOOK_PRIVATE``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rag.alerts.delivery import Notification
from rag.alerts.model import WEBHOOK, check_webhook_url
from rag.errors import DeliveryFailed, InputError
from rag.ids import DEFAULT_TENANT
from rag.settings import Settings

if TYPE_CHECKING:
    import httpx

SIGNATURE_HEADER = "X-Tgrag-Signature"
DELIVERY_HEADER = "X-Tgrag-Delivery"
USER_AGENT = "tgrag-alerts/0.1"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` with ``secret``."""
    return hmac.compare_digest(sign(secret, body), signature.strip())


class WebhookNotifier:
    """The ``webhook`` channel's notifier (one per process; one HTTP connection pool)."""

    channel = WEBHOOK

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> httpx.Client:
        """The connection pool, made at the first send: importing httpx and loading the CA
        certificates cost ~0.1 s of every server's start, most of which never send a webhook."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.settings.alert_webhook_timeout,
                                        follow_redirects=False,
                                        headers={"User-Agent": USER_AGENT})
        return self._client

    def available(self) -> bool:
        return True  # a failing receiver is the delivery's failure, retried

    def secret(self, notification: Notification) -> str:
        alert = notification.alert
        if alert.secret:
            return alert.secret
        if self.settings.alert_webhook_secret is not None:
            return self.settings.alert_webhook_secret.get_secret_value()
        raise DeliveryFailed(f"alert {alert.id} has no webhook secret",
                             hint="set TGRAG_ALERT_WEBHOOK_SECRET or save the alert again")

    def send(self, notification: Notification) -> None:
        alert = notification.alert
        url = alert.webhook
        if not url:
            raise DeliveryFailed(f"alert {alert.id} has no webhook")
        self.post(url, notification.payload(), secret=self.secret(notification),
                  delivery_id=notification.id,
                  allow_private=alert.tenant == DEFAULT_TENANT
                  or self.settings.alert_webhook_private)

    def post(self, url: str, payload: dict[str, Any], *, secret: str, delivery_id: str,
             allow_private: bool) -> None:
        """One signed ``POST`` of ``payload`` (alerts, and the scheduled digests of
        ``rag.digest_webhooks``); :class:`DeliveryFailed` unless the receiver answers 2xx."""
        host = urlsplit(url).hostname or url
        try:
            check_webhook_url(url, allow_private=allow_private)
        except InputError as err:
            raise DeliveryFailed(err.message, hint=err.hint) from None
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   SIGNATURE_HEADER: sign(secret, body), DELIVERY_HEADER: delivery_id}
        import httpx  # at the first send only, as the client (see ``client``)

        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"webhook {host}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"webhook {host} answered HTTP {response.status_code}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
