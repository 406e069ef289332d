"""Structured, quiet logs: one ``key=value`` line per record on stderr.

Quiet by default (``WARNING``, from ``TGRAG_LOG_LEVEL``).  Chatty third-party loggers (httpx,
LlamaIndex, Qdrant, uvicorn's access log) stay at ``WARNING`` unless the level is ``DEBUG``.
Fields passed with ``extra={...}`` are logged as keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from rag.errors import InputError

NOISY = ("httpx", "httpcore", "urllib3", "llama_index", "qdrant_client", "uvicorn.access",
         "filelock", "sentence_transformers", "transformers")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_HANDLER_MARK = "_tgrag_handler"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and all(c not in value for c in ' ="\n') else json.dumps(
            value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


class KeyValueFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg=… key=value …`` (values JSON-quoted when needed)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is *now* (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str | int = "WARNING") -> None:
    """Set up the root logger once (calling again only changes the level)."""
    if isinstance(level, str):
        name = level.strip().upper()
        if name not in LEVELS:
            raise InputError(f"unknown log level {level!r}",
                             hint=f"set TGRAG_LOG_LEVEL to one of {', '.join(LEVELS)}")
        level = getattr(logging, name)
    root = logging.getLogger()
    if not any(getattr(h, _HANDLER_MARK, False) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(KeyValueFormatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    noisy_level = logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in NOISY:
        logging.getLogger(name).setLevel(noisy_level)
