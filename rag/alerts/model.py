"""What an alert (a saved search) is, and what one of its notifications carries.

An alert belongs to a tenant exactly like a post does (an API key's tenant; the CLI's is
``default``).  Its JSON is the contract's ``{"id", "query", "filters", "rule", "threshold",
"webhook", "created"}``; the webhook secret and the bot chat are kept with it but never shown.

Rules (``rag.alerts.matcher``):

* ``semantic``: the post's best chunk has a dense cosine ≥ ``threshold`` with the query (the
  saved search, in dense mode with ``min_score``, would retrieve it); in mode ``hybrid`` it must
  also contain one of the query's words (lemma + stem, as the BM25 half).  The cosine is the only
  absolute score: fused and BM25 scores are relative to a candidate list and to corpus statistics,
  so a fixed threshold on them would change meaning as the index grows.
* ``words``: every word and every quoted phrase of the query is in the post, matched by lemma +
  stem like the sparse index ("ставки" matches "ставку"); ``threshold`` is ``null``.
* ``mention``: a message of a group-chat window mentions the account the syncs read with — its
  own @username, a link to its user id, or a keyword (``TGRAG_MENTION_KEYWORDS`` plus the
  query's comma-separated words or phrases, lemma-aware; an empty query adds none), as
  :class:`rag.mentions.MentionMatcher` finds them; channel posts and the account's own messages
  never match; ``threshold`` is ``null``.  Group chats are synced for the deployment (tenant
  ``default``), so only that tenant has mention alerts.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from rag.errors import InputError
from rag.ids import DEFAULT_TENANT
from rag.search import MAX_QUERY_CHARS, parse_filters
from rag.settings import Settings
from rag.store import StoreFilter
from rag.tags import normalize_tag

Rule = Literal["semantic", "words", "mention"]
RULES: tuple[Rule, ...] = ("semantic", "words", "mention")
ALERT_MODES = ("dense", "hybrid")
ALERT_ID_CHARS = 12
MAX_WEBHOOK_CHARS = 2000
# Where a notification goes besides the pull list (GET /alerts/{id}/matches): one delivery queue
# per channel, consumed by the processes that have a notifier for it (rag.alerts.delivery).
WEBHOOK, BOT = "webhook", "bot"


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(slots=True)
class AlertFilters:
    """Which posts an alert looks at: channels (any of), tags (any of), a date range, and the
    semantic rule's mode."""

    channel_ids: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    since: int | None = None
    until: int | None = None
    mode: str | None = None  # semantic only: dense | hybrid

    def to_dict(self) -> dict[str, Any]:
        return {"channel": list(self.channel_ids), "tag": list(self.tags),
                "since": iso(self.since), "until": iso(self.until), "mode": self.mode}

    def to_record(self) -> dict[str, Any]:
        return {"channel_ids": list(self.channel_ids), "tags": list(self.tags),
                "since": self.since, "until": self.until, "mode": self.mode}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> AlertFilters:
        return cls(channel_ids=[int(c) for c in data.get("channel_ids") or []],
                   tags=list(data.get("tags") or []), since=data.get("since"),
                   until=data.get("until"), mode=data.get("mode"))

    def store_filter(self, tenant: str, doc_ids: tuple[str, ...] = ()) -> StoreFilter:
        """The store's filter for this alert's posts of ``tenant`` (among ``doc_ids``)."""
        return StoreFilter(tenant=tenant, channel_ids=tuple(self.channel_ids),
                           tags=tuple(t for t in (normalize_tag(t) for t in self.tags) if t),
                           since=self.since, until=self.until, doc_ids=doc_ids)


@dataclass(slots=True)
class Alert:
    """A saved search of one tenant (see the module docstring)."""

    id: str
    tenant: str
    query: str
    rule: Rule
    threshold: float | None
    filters: AlertFilters
    webhook: str | None = None
    created: float = field(default_factory=time.time)
    secret: str | None = field(default=None, repr=False)  # this alert's webhook key, if its own
    chat_id: int | None = None  # the bot chat that saved it: bot notifications go there
    lang: str | None = None  # the bot user's language (ru | en), for the notification texts

    @property
    def keywords(self) -> list[str]:
        """A mention alert's own keywords: the query's comma-separated words or phrases."""
        return mention_keywords(self.query) if self.rule == "mention" else []

    @property
    def channels(self) -> list[str]:
        """The delivery channels of its notifications (the pull list is always kept)."""
        return ([WEBHOOK] if self.webhook else []) + ([BOT] if self.chat_id is not None else [])

    def to_dict(self) -> dict[str, Any]:
        """The contract's alert JSON."""
        return {"id": self.id, "query": self.query, "filters": self.filters.to_dict(),
                "rule": self.rule, "threshold": self.threshold, "webhook": self.webhook,
                "created": iso(self.created)}

    def to_record(self) -> dict[str, Any]:
        """Everything, for Redis (``from_record`` reads it back)."""
        return {"id": self.id, "tenant": self.tenant, "query": self.query, "rule": self.rule,
                "threshold": self.threshold, "filters": self.filters.to_record(),
                "webhook": self.webhook, "created": self.created, "secret": self.secret,
                "chat_id": self.chat_id, "lang": self.lang}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Alert:
        return cls(id=data["id"], tenant=data["tenant"], query=data["query"],
                   rule=cast(Rule, data["rule"]), threshold=data.get("threshold"),
                   filters=AlertFilters.from_record(data.get("filters") or {}),
                   webhook=data.get("webhook"), created=float(data.get("created") or 0),
                   secret=data.get("secret"), chat_id=data.get("chat_id"),
                   lang=data.get("lang"))


def mention_keywords(query: str) -> list[str]:
    """``"релиз, ключевая ставка"`` → ``["релиз", "ключевая ставка"]`` (as TGRAG_MENTION_KEYWORDS
    is written)."""
    return [k.strip() for k in query.replace("\n", ",").split(",") if k.strip()]


def new_alert_id() -> str:
    return secrets.token_hex(ALERT_ID_CHARS // 2)


def is_alert_id(value: str) -> bool:
    return len(value) == ALERT_ID_CHARS and all(c in "0123456789abcdef" for c in value)


def build_alert(settings: Settings, tenant: str, query: str, *, rule: str = "semantic",
                threshold: float | None = None, channel_ids: list[int] | None = None,
                tags: list[str] | None = None, since: str | int | None = None,
                until: str | int | None = None, mode: str | None = None,
                webhook: str | None = None, chat_id: int | None = None,
                lang: str | None = None) -> Alert:
    """A new alert from what a person typed, checked (nothing is saved here).

    Defaults: the semantic rule, ``TGRAG_ALERT_THRESHOLD`` and ``TGRAG_ALERT_MODE``.  A webhook
    gets its own signing secret unless the deployment signs with ``TGRAG_ALERT_WEBHOOK_SECRET``.
    A mention alert's query may be empty (the account's @username and TGRAG_MENTION_KEYWORDS).
    """
    text = (query or "").strip()
    if not text and rule != "mention":
        raise InputError("empty alert query", hint="pass the words or the topic to watch for")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the query is {len(text)} characters long; the limit is "
                         f"{MAX_QUERY_CHARS}", hint="shorten the query")
    if rule not in RULES:
        raise InputError(f"unknown alert rule {rule!r}", hint="use semantic, words or mention")
    if rule == "semantic":
        threshold = settings.alert_threshold if threshold is None else float(threshold)
        if not 0 < threshold <= 1:
            raise InputError(f"the threshold must be in (0, 1], got {threshold}",
                             hint=f"a cosine; the default is {settings.alert_threshold}")
        mode = mode or settings.alert_mode
        if mode not in ALERT_MODES:
            hint = ("to match words rather than meaning use the words rule" if mode == "sparse"
                    else f"use one of: {', '.join(ALERT_MODES)}")
            raise InputError(f"mode {mode!r} is not a mode of semantic alerts", hint=hint)
    else:
        if threshold is not None:
            why = ("every word and quoted phrase must be in the post" if rule == "words"
                   else "a message mentions the account or it does not")
            raise InputError(f"a {rule} alert has no threshold", hint=f"{why}; drop the threshold")
        if mode:
            raise InputError(f"a {rule} alert has no mode", hint="modes are for semantic alerts")
        mode = None
    if rule == "mention":
        if tenant != DEFAULT_TENANT:
            raise InputError("mention alerts watch the group chats the deployment follows, which "
                             f"are indexed for tenant default, not {tenant!r}",
                             hint="use a semantic or words alert")
        _check_keywords(text)
    dates = parse_filters(since=since, until=until)  # checked: formats, since ≤ until
    filters = AlertFilters(channel_ids=list(channel_ids or []),
                           tags=[t for t in (normalize_tag(t) for t in tags or []) if t],
                           since=dates.since, until=dates.until, mode=mode)
    allow_private = tenant == DEFAULT_TENANT or settings.alert_webhook_private
    hook = check_webhook_url(webhook, allow_private=allow_private) if webhook else None
    secret = None
    if hook and settings.alert_webhook_secret is None:
        secret = secrets.token_urlsafe(32)
    alert = Alert(id=new_alert_id(), tenant=tenant, query=text, rule=cast(Rule, rule),
                  threshold=threshold if rule == "semantic" else None, filters=filters,
                  webhook=hook, secret=secret, chat_id=chat_id,
                  lang=lang if lang in ("ru", "en") else None)
    if rule == "words" or mode == "hybrid":
        from rag.alerts.words import WordsRule

        try:  # a query of stopwords only is refused now rather than never matching
            WordsRule.parse(text)
        except InputError as err:
            if rule == "words":
                raise
            raise InputError(err.message, hint="hybrid needs one of the query's words in the "
                             "post; use mode dense") from None
    return alert


def _check_keywords(query: str) -> None:
    """Each keyword of a mention alert must have a word that can match (not only stopwords)."""
    from rag.sparse import shared_analyzer

    for keyword in mention_keywords(query):
        if not shared_analyzer().tokens(keyword):
            raise InputError(f"the keyword {keyword!r} has no words to match",
                             hint="keywords are comma-separated words or phrases of two or more "
                                  "letters that are not stopwords (и, в, the, …)")


def check_webhook_url(url: str, *, allow_private: bool = True) -> str:
    """The URL if it is an absolute http(s) URL without credentials; with ``allow_private``
    false, also only if its host resolves to public addresses (a tenant must not make the server
    post to its own network: Redis, a cloud metadata service, the admin panel)."""
    text = url.strip()
    parts = urlsplit(text)
    if len(text) > MAX_WEBHOOK_CHARS or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not a webhook URL",
                         hint="use an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise InputError("the webhook URL has credentials in it",
                         hint="webhooks are signed instead (X-Tgrag-Signature); drop user:pass@")
    if not allow_private:
        host = parts.hostname
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, ValueError) as exc:
            raise InputError(f"the webhook host {host!r} does not resolve ({exc})",
                             hint="check the URL") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                raise InputError(f"the webhook host {host!r} is a private address ({address})",
                                 hint="webhooks go to public addresses; the operator can allow "
                                      "private ones with TGRAG_ALERT_WEBHOOK_PRIVATE=true")
    return text
