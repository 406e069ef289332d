"""Errors → one short sentence for the user, the cause in the log (the bot's one error mapping).

Bad input and "not found" say what was wrong (the core's message); a backend, LLM or unexpected
failure says only that it failed: its cause is logged, never shown.
"""

from __future__ import annotations

import logging

from api.bot.markup import Html
from api.bot.texts import Lang, t
from rag.errors import Busy, Forbidden, InputError, LLMError, NotFoundError, TgragError

log = logging.getLogger("tgrag.bot")


def failure_text(exc: BaseException, lang: Lang) -> Html:
    if isinstance(exc, InputError):
        return t(lang, "bad_input", detail=exc.message)
    if isinstance(exc, NotFoundError):
        return t(lang, "not_found_item", detail=exc.message)
    if isinstance(exc, Busy):
        return t(lang, "busy")
    if isinstance(exc, Forbidden):
        return t(lang, "admin_only")
    if isinstance(exc, LLMError):
        return t(lang, "llm_failed")
    return t(lang, "failed")


def log_failure(exc: BaseException, what: str) -> None:
    if isinstance(exc, InputError | NotFoundError | Busy | Forbidden):
        log.info("bot %s: %s", what, exc)
    elif isinstance(exc, TgragError):
        log.warning("bot %s failed: %s", what, exc)
    else:
        log.error("bot %s failed", what, exc_info=exc)
