"""The one error hierarchy of tgrag.

Every error raised on purpose by the core is a :class:`TgragError`.  Each subclass says *what kind*
of thing went wrong; the message says what exactly, and ``hint`` says what to do about it.  The
surfaces map them once: the CLI to an exit code and one line, the API to
``application/problem+json``.

    TgragError
    ├── InputError            bad input: a file, a record, a query or an option (exit 2, HTTP 400)
    │   ├── NotReadable       a file that is no Telegram export or dump at all
    │   ├── NothingToRead     none of the given files or folders held a readable export or dump
    │   ├── UploadTooLarge    an upload over TGRAG_MAX_UPLOAD_MB (HTTP 413)
    │   ├── NotLoggedIn       the Telegram session is not logged in (or was logged out)
    │   ├── PrivateChat       a followed reference is a private chat: never read
    │   └── GroupNotOptedIn   a followed reference is a group chat not followed with --group
    ├── NotFoundError         a post, channel or job that does not exist (exit 2, HTTP 404)
    ├── BackendUnavailable    Redis, the vector store or Telegram cannot be reached (exit 3,
    │   │                     HTTP 503)
    │   ├── DataDirLocked     embedded mode: another process owns the data folder
    │   └── TelegramUnavailable  Telegram cannot be reached, or asks to wait (flood wait)
    ├── Busy                  another worker holds the resource, e.g. a channel's sync lock
    │                         (exit 3, HTTP 409)
    ├── ModelMismatch         the collection was built with another model (exit 4, HTTP 409)
    ├── LLMError              the LLM failed or refused (exit 5, HTTP 502)
    ├── DeliveryFailed        an alert's notification was not delivered (a webhook answered an
    │                         error or nothing, the bot could not send); retried, then dead-lettered
    ├── Unauthorized          no or a wrong API key (HTTP 401)
    ├── Forbidden             the key may not use this route (HTTP 403)
    └── RateLimited           too many requests (HTTP 429, ``Retry-After``)

An error may carry ``headers`` (HTTP response headers the API adds, e.g. ``Retry-After``).
"""

from __future__ import annotations

from pathlib import Path


class TgragError(Exception):
    """Base class. ``hint`` tells the user what to do next."""

    exit_code: int = 1
    http_status: int = 500
    title: str = "tgrag error"
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only default; instances set their own

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


class DeliveryFailed(TgragError):
    """A notification (webhook, bot message) was not delivered; the dispatcher retries it with
    backoff and dead-letters it after ``TGRAG_ALERT_MAX_ATTEMPTS``."""

    http_status = 502
    title = "Delivery failed"


class NotReadable(InputError):
    """A file that is no Telegram export or dump at all; ``reason`` says why (without the path)."""

    title = "Not a Telegram export"

    HINT = ("pass a Telegram Desktop export folder, its result.json or the folder zipped, "
            "or a JSON/JSONL dump of posts")

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}", hint=self.HINT)
        self.path = path
        self.reason = reason


class NothingToRead(InputError):
    """Not one of the given paths held a readable export or dump: no such file was found, or every
    one failed (not JSON, not an export, unreadable).  ``problems`` lists ``(file, reason)``."""

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = list(problems or [])


class UploadTooLarge(InputError):
    """An upload larger than ``TGRAG_MAX_UPLOAD_MB``."""

    http_status = 413
    title = "Upload too large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the upload is {size} bytes; the limit is {limit} bytes",
                         hint="split the export or raise TGRAG_MAX_UPLOAD_MB")


class NotLoggedIn(InputError):
    """The Telegram session is missing, was never logged in, or was logged out."""

    title = "Not logged in to Telegram"


class PrivateChat(InputError):
    """A followed reference names a person (a private chat): tgrag never reads those."""

    title = "Private chats are never read"


class GroupNotOptedIn(InputError):
    """A followed reference is a group chat, which is read only when followed as one (opt-in)."""

    title = "Group chat not opted in"


class TelegramUnavailable(BackendUnavailable):
    """Telegram cannot be reached right now, or asks to wait before the next request."""

    title = "Telegram unavailable"


class Unauthorized(TgragError):
    """No API key, or one that is not configured."""

    http_status = 401
    title = "Unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="tgrag"'}  # noqa: RUF012


class Forbidden(TgragError):
    """The caller's key may not use this route."""

    http_status = 403
    title = "Forbidden"


class RateLimited(TgragError):
    """Too many requests for this key; ``retry_after`` seconds until the next is allowed."""

    http_status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, hint=f"retry after {retry_after} s")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
