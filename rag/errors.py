"""The one error hierarchy of tgrag.

Every error raised on purpose by the core is a :class:`TgragError`.  Each subclass says *what kind*
of thing went wrong; the message says what exactly, and ``hint`` says what to do about it.  The
surfaces map them once: the CLI to an exit code and one line, the API to
``application/problem+json``.

    TgragError
    ├── InputError            bad input: a file, a record, a query or an option (exit 2, HTTP 400)
    ├── NotFoundError         a post, channel or job that does not exist (exit 2, HTTP 404)
    ├── BackendUnavailable    Redis or Qdrant cannot be reached or opened (exit 3, HTTP 503)
    │   └── DataDirLocked     embedded mode: another process owns the data folder
    ├── Busy                  another worker holds the resource, e.g. a channel's sync lock
    │                         (exit 3, HTTP 409)
    ├── ModelMismatch         the collection was built with another model (exit 4, HTTP 409)
    └── LLMError              the LLM failed or refused (exit 5, HTTP 502)
"""

from __future__ import annotations


class TgragError(Exception):
    """Base class. ``hint`` tells the user what to do next."""

    exit_code: int = 1
    http_status: int = 500
    title: str = "tgrag error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(TgragError):
    """Bad input: a malformed file or record, an invalid option or query."""

    exit_code = 2
    http_status = 400
    title = "Bad input"


class NotFoundError(TgragError):
    """The requested post, channel or job does not exist."""

    exit_code = 2
    http_status = 404
    title = "Not found"


class BackendUnavailable(TgragError):
    """Redis or Qdrant cannot be reached; raised before anything is written."""

    exit_code = 3
    http_status = 503
    title = "Backend unavailable"


class DataDirLocked(BackendUnavailable):
    """Embedded mode: the data folder is owned by another process (e.g. ``tgrag serve``)."""

    title = "Data folder in use"


class Busy(TgragError):
    """Another worker holds the resource right now (a channel being synced); try again later."""

    exit_code = 3
    http_status = 409
    title = "Busy"


class ModelMismatch(TgragError):
    """The collection was built with a different embedding model or dimension."""

    exit_code = 4
    http_status = 409
    title = "Embedding model mismatch"


class LLMError(TgragError):
    """The LLM backend failed, timed out or refused to answer."""

    exit_code = 5
    http_status = 502
    title = "LLM failure"
