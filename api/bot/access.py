"""Who may use the bot, and how often: ``TGRAG_BOT_USERS``, ``TGRAG_BOT_ADMINS``, rate limits.

Nobody by default.  ``TGRAG_BOT_USERS`` lists Telegram user ids or ``@usernames``, each with its
tenant (``123456789:acme``, ``@alice:acme``; a bare entry is tenant ``default``): a user sees
that tenant's posts only, exactly as an API key of that tenant does.  Ids are stable; a username
can be changed or taken over by someone else, so prefer ids (the bot's /help shows yours).
``TGRAG_BOT_ADMINS`` (ids or ``@usernames``) may also follow and unfollow channels; channel sync
feeds tenant ``default``, so admins belong to it (an admin listed with another tenant is a
configuration error) and need not be repeated in ``TGRAG_BOT_USERS``.

Rate limits are token buckets per allowed user (``TGRAG_BOT_RATE_LIMIT`` per minute), kept only
for the configured users; strangers share ONE bucket for the refusals they get, so a flood of
strangers costs neither memory nor more than a trickle of answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.errors import InputError
from rag.ids import DEFAULT_TENANT, validate_tenant
from rag.settings import Settings

USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,31}$")
REFUSALS_PER_MINUTE = 20  # answers to strangers, all of them together


@dataclass(frozen=True, slots=True)
class Grant:
    """What an allowed user may do: whose posts they see, and whether they manage channels."""

    tenant: str
    admin: bool = False


def _parse_who(entry: str, setting: str) -> int | str:
    """A user id (int) or a lower-cased username (str) from ``123`` / ``@name``."""
    text = entry.strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    name = text.removeprefix("@")
    if text.startswith("@") and USERNAME.match(name):
        return name.lower()
    raise InputError(
        f"{setting}: {entry!r} is neither a Telegram user id nor an @username",
        hint="use numeric ids (the bot's /help shows yours) or @usernames, comma-separated",
    )


@dataclass
class AccessList:
    """The allowed users, keyed by user id (int) or lower-cased username (str)."""

    grants: dict[int | str, Grant] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessList:
        return cls.parse(settings.bot_users, settings.bot_admins)

    @classmethod
    def parse(cls, users: list[str], admins: list[str]) -> AccessList:
        """``["123:acme", "@alice"]`` and ``["456"]`` → the grants; bad entries are errors."""
        grants: dict[int | str, Grant] = {}
        for entry in users:
            who_text, sep, tenant = entry.strip().rpartition(":")
            if not sep:
                who_text, tenant = entry, DEFAULT_TENANT
            who = _parse_who(who_text, "TGRAG_BOT_USERS")
            grant = Grant(validate_tenant(tenant))
            if grants.get(who, grant) != grant:
                raise InputError(f"TGRAG_BOT_USERS lists {who_text.strip()!r} twice with "
                                 "different tenants", hint="keep one entry per user")
            grants[who] = grant
        for entry in admins:
            if ":" in entry:
                raise InputError(
                    f"TGRAG_BOT_ADMINS: {entry!r} names a tenant",
                    hint="admins manage the deployment's channels (tenant default): list them "
                         "by id or @username only",
                )
            who = _parse_who(entry, "TGRAG_BOT_ADMINS")
            known = grants.get(who)
            if known is not None and known.tenant != DEFAULT_TENANT:
                raise InputError(
                    f"{entry.strip()!r} is an admin but TGRAG_BOT_USERS gives it tenant "
                    f"{known.tenant!r}",
                    hint="channel sync feeds tenant default: an admin must belong to it",
                )
            grants[who] = Grant(DEFAULT_TENANT, admin=True)
        return cls(grants)

    @property
    def empty(self) -> bool:
        return not self.grants

    def lookup(self, user_id: int, username: str | None) -> Grant | None:
        """The grant of a Telegram user, by id first, then by current username; None = stranger."""
        grant = self.grants.get(user_id)
        if grant is None and username:
            grant = self.grants.get(username.lower())
        return grant


class TokenBucket:
    """``rate`` tokens per minute, burst ``rate``; ``take()`` is False when empty."""

    def __init__(self, rate: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.clock = clock or time.monotonic
        self.stamp = self.clock()
        self.warned = False  # told the user they are limited, since the bucket last ran dry

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate / 60)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.warned = False
            return True
        return False

    def retry_after(self) -> int:
        """Seconds until the next token."""
        return max(1, int((1 - self.tokens) * 60 / self.rate + 0.999))


class RateLimits:
    """Per-user buckets (allowed users only) and the strangers' one shared bucket."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] | None = None) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[int, TokenBucket] = {}
        self._strangers = TokenBucket(REFUSALS_PER_MINUTE, clock)

    def allow(self, user_id: int) -> TokenBucket | None:
        """None when the user may go on; else their (empty) bucket, to say how long to wait.

        Call it for allowed users only: a stranger must not get a bucket (memory)."""
        if self.per_minute <= 0:
            return None
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = TokenBucket(self.per_minute, self.clock)
        return None if bucket.take() else bucket

    def may_refuse(self) -> bool:
        """Whether to answer one more stranger now (else stay silent)."""
        return self._strangers.take()
