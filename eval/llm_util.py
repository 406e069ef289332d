"""What ``eval generate`` and ``eval answers`` share about talking to the configured LLM.

* :func:`require_llm`: both commands are meaningless without an LLM; the message says what to set.
* :func:`chat_text`: one chat call → ``(text, refused)``, every backend's failure an
  :class:`~rag.errors.LLMError` (the GigaChat client has already retried 429/5xx by then).
* :func:`extract_json`: the first JSON object in a reply, whether bare, in a ```json fence or
  after a sentence of preamble.
* :class:`FailureGuard`: one failed post or question is counted and skipped, but a run whose LLM
  fails ``limit`` times in a row before anything succeeded stops with the error, and one whose LLM
  dies midway stops early keeping what it has, instead of calling a dead endpoint once per item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import LLM

from rag.errors import InputError, LLMError, TgragError
from rag.llm import finish_reason
from rag.settings import Settings

LLM_HINT = ("set TGRAG_LLM=gigachat with TGRAG_GIGACHAT_CREDENTIALS, or TGRAG_LLM=openai with "
            "TGRAG_OPENAI_BASE_URL and TGRAG_OPENAI_MODEL (see README, 'Tagging and answers')")
FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)
CONSECUTIVE_FAILURES = 5


def require_llm(settings: Settings, command: str) -> None:
    """An :class:`InputError` when no LLM is configured (``TGRAG_LLM=none``)."""
    if settings.llm == "none":
        raise InputError(f"{command} needs an LLM, and TGRAG_LLM is 'none'", hint=LLM_HINT)


def chat_text(llm: LLM, messages: Sequence[ChatMessage]) -> tuple[str, bool]:
    """The reply's text and whether the model refused (GigaChat ``finish_reason=blacklist``)."""
    try:
        response = llm.chat(list(messages))
    except TgragError:
        raise
    except Exception as exc:  # the OpenAI-compatible backend raises its own errors
        raise LLMError(f"the LLM failed: {exc}", hint="check TGRAG_LLM and its settings") from exc
    return (response.message.content or "").strip(), finish_reason(response) == "blacklist"


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``; ``ValueError`` when there is none."""
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start = candidate.find("{")
        while start >= 0:
            try:
                value, _ = json.JSONDecoder().raw_decode(candidate, start)
            except json.JSONDecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    raise ValueError("no JSON object in the reply")


class FailureGuard:
    """Counts LLM errors in a row (see the module docstring)."""

    def __init__(self, what: str, limit: int = CONSECUTIVE_FAILURES) -> None:
        self.what = what
        self.limit = limit
        self.in_a_row = 0
        self.succeeded = False
        self.last: LLMError | None = None

    def ok(self) -> None:
        self.in_a_row = 0
        self.succeeded = True

    def failed(self, err: LLMError) -> bool:
        """Count one failure; raise if nothing ever worked, return True when it is time to stop."""
        self.in_a_row += 1
        self.last = err
        if not self.succeeded and self.in_a_row >= self.limit:
            raise LLMError(f"{self.what}: the LLM failed {self.in_a_row} times in a row and "
                           f"never succeeded; last error: {err.message}",
                           hint=err.hint or "check TGRAG_LLM and its settings")
        # After successes, a longer run of failures: the endpoint died (quota, outage) midway.
        return self.in_a_row >= 4 * self.limit

    def raise_if_all_failed(self) -> None:
        """At the end of a run shorter than ``limit``: every call failed → the last error."""
        if not self.succeeded and self.last is not None:
            raise LLMError(f"{self.what}: every LLM call failed; last error: {self.last.message}",
                           hint=self.last.hint or "check TGRAG_LLM and its settings")
