"""GigaChat as a LlamaIndex LLM, over the official ``gigachat`` SDK (>= 0.2.3).

Why our own class rather than ``llama-index-llms-gigachat-ru``: that package pins ``gigachat<0.2``,
opens a new client (and fetches a new OAuth token) on every call and rejects current model names.

Here one SDK client lives as long as the LLM object, so the OAuth token is fetched once and reused
until it nears expiry; the SDK itself re-authenticates once on a 401.  On top of the SDK we add:

* retries with exponential backoff on 429 and 5xx (honouring ``Retry-After``) — ours, not the
  SDK's, so the delays are configurable down to zero in tests and a stream is never retried after
  its first token (that would repeat text the caller already printed);
* a concurrency limit: personal (``GIGACHAT_API_PERS``) keys allow one request at a time, and a
  second concurrent request is answered with 429;
* one error type: every failure becomes :class:`rag.errors.LLMError` with a hint.

The async methods run the sync client in a worker thread.  The SDK's async client binds its
``httpx.AsyncClient`` to the event loop that first used it, which breaks callers that run
``asyncio.run`` per call (the CLI); a thread keeps one token cache, one connection pool and one
concurrency limit for sync and async callers alike.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from gigachat import GigaChat
from gigachat import exceptions as gx
from gigachat.models import Chat, ChatCompletion, Messages, MessagesRole
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, PrivateAttr, ValidationError

from rag.errors import LLMError

T = TypeVar("T")

# GigaChat's finish reason when its content filter refuses to answer.
REFUSAL = "blacklist"

_ROLES = {
    MessageRole.SYSTEM: MessagesRole.SYSTEM,
    MessageRole.DEVELOPER: MessagesRole.SYSTEM,
    MessageRole.USER: MessagesRole.USER,
    MessageRole.ASSISTANT: MessagesRole.ASSISTANT,
    MessageRole.MODEL: MessagesRole.ASSISTANT,
    MessageRole.CHATBOT: MessagesRole.ASSISTANT,
    MessageRole.FUNCTION: MessagesRole.FUNCTION,
    MessageRole.TOOL: MessagesRole.FUNCTION,
}
_END = object()


class GigaChatLLM(CustomLLM):
    """A LlamaIndex chat LLM over GigaChat: one client, cached token, retries, a concurrency cap."""

    model: str = Field("GigaChat", description="GigaChat model name, e.g. GigaChat-2-Max.")
    temperature: float | None = Field(0.2, description="Sampling temperature; None = default.")
    max_tokens: int = Field(1024, description="Max tokens to generate.")
    timeout: float = Field(60.0, description="Seconds per request.")
    scope: str = Field("GIGACHAT_API_PERS", description="PERS, B2B or CORP scope.")
    base_url: str | None = Field(None, description="API base URL; None = the SDK default.")
    auth_url: str | None = Field(None, description="OAuth URL; None = the SDK default.")
    verify_ssl_certs: bool = True
    ca_bundle_file: str | None = None
    max_retries: int = Field(3, description="Retries on 429/5xx/connection errors.")
    retry_backoff: float = Field(1.0, description="First retry delay (s); doubles each retry.")
    concurrency: int = Field(1, description="Concurrent requests allowed.")
    context_window: int = 32768

    _client: GigaChat = PrivateAttr()
    _slots: threading.BoundedSemaphore = PrivateAttr()

    def __init__(
        self, *, credentials: str | None = None, access_token: str | None = None, **data: Any
    ) -> None:
        super().__init__(**data)
        if not credentials and not access_token:
            raise LLMError(
                "GigaChat credentials are not set",
                hint="set TGRAG_GIGACHAT_CREDENTIALS to the base64 authorization key, "
                "or TGRAG_LLM=none for the offline mode",
            )
        opts: dict[str, Any] = {
            "credentials": credentials, "access_token": access_token, "scope": self.scope,
            "model": self.model, "timeout": self.timeout, "verify_ssl_certs": self.verify_ssl_certs,
            "ca_bundle_file": self.ca_bundle_file, "base_url": self.base_url,
            "auth_url": self.auth_url,
            # Retries are ours (see module docstring); the SDK's would stack on top of them.
            "max_retries": 0,
        }
        self._client = GigaChat(**{k: v for k, v in opts.items() if v is not None})
        self._slots = threading.BoundedSemaphore(max(1, self.concurrency))

    @classmethod
    def class_name(cls) -> str:
        return "GigaChatLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.max_tokens,
            is_chat_model=True, model_name=self.model,
        )

    @property
    def client(self) -> GigaChat:
        """The one SDK client (exposed for tests and ``GET /models``-style diagnostics)."""
        return self._client

    def close(self) -> None:
        self._client.close()

    # -- requests -------------------------------------------------------------------------------

    def _payload(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Chat:
        converted = [
            Messages(role=_ROLES.get(m.role, MessagesRole.USER), content=m.content or "")
            for m in messages
        ]
        return Chat(
            model=kwargs.get("model", self.model),
            messages=converted,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )

    @contextmanager
    def _slot(self) -> Iterator[None]:
        self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def _delay(self, attempt: int, exc: Exception) -> float:
        if isinstance(exc, gx.RateLimitError):
            try:
                if exc.retry_after > 0:
                    return min(float(exc.retry_after), 60.0)
            except (TypeError, ValueError):
                pass
        # Jitter keeps several workers that hit a 429 together from retrying in lockstep.
        base = self.retry_backoff * (2**attempt)
        return min(base + random.uniform(0, base / 4), 60.0)

    def _with_retries(self, call: Callable[[], T]) -> T:
        with self._slot():
            attempt = 0
            while True:
                try:
                    return call()
                except Exception as exc:
                    if attempt >= self.max_retries or not _retryable(exc):
                        raise self._error(exc, attempts=attempt + 1) from exc
                    time.sleep(self._delay(attempt, exc))
                    attempt += 1

    def _stream_with_retries(self, payload: Chat) -> Iterator[Any]:
        with self._slot():
            attempt = 0
            while True:
                started = False
                try:
                    for chunk in self._client.stream(payload):
                        started = True
                        yield chunk
                    return
                except GeneratorExit:
                    raise
                except Exception as exc:
                    if started or attempt >= self.max_retries or not _retryable(exc):
                        raise self._error(exc, attempts=attempt + 1) from exc
                    time.sleep(self._delay(attempt, exc))
                    attempt += 1

    def _error(self, exc: Exception, *, attempts: int) -> LLMError:
        where = self.base_url or "the GigaChat API"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, gx.AuthenticationError):
            return LLMError(
                f"GigaChat rejected the credentials (HTTP 401 from {exc.url})",
                hint="check TGRAG_GIGACHAT_CREDENTIALS (the base64 authorization key, not the "
                "client secret) and TGRAG_GIGACHAT_SCOPE (PERS/B2B/CORP)",
            )
        if isinstance(exc, gx.RateLimitError):
            return LLMError(
                f"GigaChat rate limit (HTTP 429){tries}",
                hint="keep TGRAG_LLM_CONCURRENCY at 1 for personal keys, or retry later",
            )
        if isinstance(exc, gx.ServerError):
            return LLMError(
                f"GigaChat server error (HTTP {exc.status_code}){tries}",
                hint="GigaChat is having trouble; retry later",
            )
        if isinstance(exc, gx.ResponseError):
            body = (exc.content or b"")[:300].decode("utf-8", "replace")
            return LLMError(
                f"GigaChat answered HTTP {exc.status_code}: {body}",
                hint="check TGRAG_GIGACHAT_MODEL (see the models your key allows) and the scope",
            )
        if isinstance(exc, httpx.TimeoutException):
            return LLMError(
                f"GigaChat did not answer within {self.timeout:g}s{tries}",
                hint="raise TGRAG_GIGACHAT_TIMEOUT or retry later",
            )
        if isinstance(exc, httpx.TransportError):
            tls = "certificate" in str(exc).lower() or "ssl" in str(exc).lower()
            return LLMError(
                f"cannot reach {where}: {exc}",
                hint="install the Russian Trusted Root CA and point TGRAG_GIGACHAT_CA_BUNDLE at "
                "it (or TGRAG_GIGACHAT_VERIFY_SSL=false for testing)" if tls else
                "check the network and TGRAG_GIGACHAT_BASE_URL / TGRAG_GIGACHAT_AUTH_URL",
            )
        if isinstance(exc, ValidationError | ValueError):
            return LLMError(
                f"GigaChat sent a response this client cannot read: {exc}",
                hint="upgrade the gigachat package, or report the response",
            )
        if isinstance(exc, gx.GigaChatException):
            return LLMError(f"GigaChat error: {exc}")
        return LLMError(f"GigaChat call failed: {exc!r}")

    # -- LlamaIndex interface --------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        payload = self._payload(messages, **kwargs)
        completion: ChatCompletion = self._with_retries(lambda: self._client.chat(payload))
        if not completion.choices:
            raise LLMError("GigaChat returned no choices", hint="retry later")
        choice = completion.choices[0]
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=choice.message.content),
            raw=completion.model_dump(by_alias=True),
            additional_kwargs={
                "finish_reason": choice.finish_reason,
                "usage": completion.usage.model_dump(),
                "model": completion.model,
            },
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        payload = self._payload(messages, **kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            reason: str | None = None
            for chunk in self._stream_with_retries(payload):
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta.content or ""
                reason = choice.finish_reason or reason
                text += delta
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                    delta=delta,
                    raw=chunk.model_dump(by_alias=True),
                    additional_kwargs={"finish_reason": reason},
                )

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(
            text=response.message.content or "", raw=response.raw,
            additional_kwargs=response.additional_kwargs,
        )

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        chats = self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)

        def gen() -> CompletionResponseGen:
            for r in chats:
                yield CompletionResponse(
                    text=r.message.content or "", delta=r.delta, raw=r.raw,
                    additional_kwargs=r.additional_kwargs,
                )

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return _in_thread(lambda: self.stream_chat(messages, **kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return _in_thread(lambda: self.stream_complete(prompt, formatted, **kwargs))


def _retryable(exc: Exception) -> bool:
    # Timeouts are not retried: a model that is slow now is slow on the next try too, and the
    # caller already waited the whole timeout once.
    if isinstance(exc, httpx.TimeoutException):
        return False
    if isinstance(exc, gx.RateLimitError | gx.ServerError | httpx.TransportError):
        return True
    return isinstance(exc, gx.ResponseError) and exc.status_code in (429, 500, 502, 503, 504)


async def _in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Drive a blocking iterator in a worker thread, yielding its items to the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop closed under us: nobody is listening any more
            stop.set()

    def produce() -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = make()
            for item in iterator:
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(_Failure(exc))
        finally:
            # Closing the generator releases the concurrency slot it holds.
            close = getattr(iterator, "close", None)
            if close:
                close()
            put(_END)

    loop.run_in_executor(None, produce)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
