"""The scheduled digest through the bot: who gets it, in which language, and the sending.

At ``TGRAG_DIGEST_SCHEDULE`` the process running the bot sends every allowed user
(``TGRAG_BOT_USERS`` and ``TGRAG_BOT_ADMINS``) their tenant's digest of the day before
(``rag.digest_delivery``: once a day, also across restarts).  Telegram lets a bot write only to
people who have written to it, so a user is reached once the bot's session knows them (they sent
it anything, ever); a ``@username`` entry is looked up the same way.  ``/digest off`` stops a
user's daily digest, ``/digest on`` brings it back.

Keys (owner :class:`DigestSubscribers`): ``<ns>:bot:digest:users``, a hash user id → JSON
``{"lang": "ru"|"en", "digest": bool}``, written when an allowed user's language or choice
changes (the bot remembers the language of each user's last message).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from rag.digest_delivery import Recipient

if TYPE_CHECKING:
    from api.bot.runner import BotRunner
    from rag.digest import Digest

log = logging.getLogger("tgrag.bot")


@dataclass(frozen=True, slots=True)
class Preference:
    lang: str = "ru"
    digest: bool = True


class DigestSubscribers:
    """The users' language and digest choice (the key's owner, see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self.key = f"{namespace}:bot:digest:users"
        self._known: dict[int, Preference] = {}  # allowed users only: bounded by the config

    def get(self, user_id: int) -> Preference | None:
        raw = self._r.hget(self.key, str(user_id))
        if not raw:
            return None
        data = json.loads(raw)
        return Preference(str(data.get("lang") or "ru"), bool(data.get("digest", True)))

    def remember(self, user_id: int, lang: str, *, digest: bool | None = None) -> bool:
        """Keep ``lang`` (and ``digest`` when given); whether the user wants the digest."""
        stored = self._known.get(user_id) or self.get(user_id)
        keep = stored.digest if stored is not None else True
        wanted = Preference(lang, keep if digest is None else digest)
        if wanted != stored:  # one write per change, not per message
            self._r.hset(self.key, str(user_id), json.dumps({"lang": wanted.lang,
                                                             "digest": wanted.digest}))
        self._known[user_id] = wanted
        return wanted.digest


class BotDigestSink:
    """:class:`rag.digest_delivery.DigestSink` of the bot: the allowed users, by their chat."""

    channel = "bot"

    def __init__(self, runner: BotRunner, subscribers: DigestSubscribers) -> None:
        self.runner = runner
        self.subscribers = subscribers

    def available(self) -> bool:
        return self.runner.can_send

    async def recipients(self) -> list[Recipient]:
        client = self.runner.client
        if client is None:
            return []
        found: list[Recipient] = []
        seen: set[int] = set()
        for who, grant in self.runner.access.grants.items():
            try:
                peer: Any = await client.get_input_entity(who)
            except Exception as exc:  # never wrote to the bot, or an unknown username
                log.info("digest: cannot reach %s yet (%s)", who, type(exc).__name__)
                continue
            user_id = getattr(peer, "user_id", None)
            if user_id is None or user_id in seen:
                continue
            seen.add(user_id)
            choice = self.subscribers.get(user_id) or Preference()
            if choice.digest:
                found.append(Recipient(f"bot:{user_id}", grant.tenant, choice.lang, peer))
        return found

    async def send(self, recipient: Recipient, digest: Digest) -> None:
        from api.bot.formatting import digest_messages
        from api.bot.texts import language

        client = self.runner.client
        if client is None:
            raise ConnectionError("the bot is not connected")
        for part in digest_messages(digest, language(recipient.lang), scheduled=True):
            await client.send_message(recipient.address, part, parse_mode="html",
                                      link_preview=False)
