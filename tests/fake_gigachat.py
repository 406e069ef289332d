"""A fake GigaChat API on 127.0.0.1 for tests: real HTTP, spoken to by the real ``gigachat`` SDK.

It speaks what SDK 0.2.x sends and parses (see ``gigachat/api/*.py``):

* ``POST /api/v2/oauth`` — form ``scope=…`` with ``Authorization: Basic <credentials>`` and an
  ``RqUID`` header → ``{"access_token", "expires_at"}`` (expiry in unix *milliseconds*);
* ``GET /api/v1/models``, ``POST /api/v1/embeddings``;
* ``POST /api/v1/chat/completions`` — plain JSON, or with ``"stream": true`` a ``text/event-stream``
  of ``data: {chunk}`` lines ending with ``data: [DONE]``.

Every API call needs ``Authorization: Bearer <token>`` with a token the fake issued (or the
static OpenAI-style key ``sk-test``); :meth:`FakeGigaChat.expire_tokens` revokes them all, like a
token that expired server-side.  Scripted replies (:class:`Reply`) are consumed one per chat
request: HTTP errors, a refusal (``finish_reason="blacklist"``), a malformed body, a slow answer.
Without a script, ``responder(request_json) -> str`` makes the answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CREDENTIALS = "dGVzdDp0ZXN0"  # base64("test:test"): the SDK warns on non-base64 credentials
OPENAI_KEY = "sk-test"
REFUSAL_TEXT = "Не люблю менять тему разговора, но вот сейчас тот самый случай."


@dataclass
class Reply:
    """One scripted answer to a chat request."""

    content: str | None = None  # None = ask the responder
    status: int = 200
    finish_reason: str = "stop"
    delay: float = 0.0  # seconds before answering (timeouts)
    word_delay: float = 0.0  # streaming: seconds between words (an answer being written)
    raw_body: bytes | None = None  # sent as-is (malformed JSON)
    headers: dict[str, str] = field(default_factory=dict)


def default_responder(request: dict[str, Any]) -> str:
    last = request["messages"][-1]["content"]
    return f"Ответ на: {last[:40]}"


class FakeGigaChat:
    def __init__(self, responder: Callable[[dict[str, Any]], str] = default_responder) -> None:
        self.responder = responder
        self.script: deque[Reply] = deque()
        self.token_ttl = 1800.0
        self.oauth_calls = 0
        self.chat_calls = 0
        self.requests: list[dict[str, Any]] = []  # chat request bodies, in order
        self.max_in_flight = 0
        self._in_flight = 0
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control --------------------------------------------------------------------------------

    def start(self) -> FakeGigaChat:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def origin(self) -> str:
        assert self._server
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/v1"

    @property
    def auth_url(self) -> str:
        return f"{self.origin}/api/v2/oauth"

    def then(self, *replies: Reply) -> FakeGigaChat:
        self.script.extend(replies)
        return self

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # -- used by the handler --------------------------------------------------------------------

    def issue_token(self) -> dict[str, Any]:
        with self._lock:
            self.oauth_calls += 1
            token = f"tok-{self.oauth_calls}"
            self._tokens.add(token)
        return {"access_token": token, "expires_at": int((time.time() + self.token_ttl) * 1000)}

    def authorized(self, header: str | None) -> bool:
        token = (header or "").removeprefix("Bearer ").strip()
        with self._lock:
            return token in self._tokens or token == OPENAI_KEY

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.chat_calls += 1
            self.requests.append(request)
            reply = self.script.popleft() if self.script else Reply()
        if reply.content is None and reply.status == 200 and reply.raw_body is None:
            if reply.finish_reason == "blacklist":
                reply.content = REFUSAL_TEXT
            else:
                reply.content = self.responder(request)
        return reply

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeGigaChat

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _check_auth(self) -> bool:
        if self.server_fake.authorized(self.headers.get("Authorization")):
            return True
        self._send_json(401, {"status": 401, "message": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        if self.path.endswith("/models"):
            if self._check_auth():
                self._send_json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "owned_by": "salutedevices"}
                    for m in ("GigaChat", "GigaChat-2", "GigaChat-2-Pro", "GigaChat-2-Max")
                ]})
            return
        self._send_json(404, {"status": 404, "message": "Not found"})

    def do_POST(self) -> None:
        fake = self.server_fake
        body = self._body()
        if self.path.endswith("/oauth"):
            form = parse_qs(body.decode())
            ok = (self.headers.get("Authorization") == f"Basic {CREDENTIALS}"
                  and self.headers.get("RqUID") and form.get("scope"))
            if not ok:
                self._send_json(401, {"code": 6, "message": "credentials doesn't match db data"})
                return
            self._send_json(200, fake.issue_token())
            return
        if not self._check_auth():
            return
        request = json.loads(body or b"{}")
        if self.path.endswith("/embeddings"):
            data = [
                {"object": "embedding", "index": i, "usage": {"prompt_tokens": len(t.split())},
                 "embedding": [float(len(t) % 7), float(len(t.split())), 1.0]}
                for i, t in enumerate(request.get("input", []))
            ]
            self._send_json(200, {"object": "list", "data": data, "model": request.get("model")})
            return
        if not self.path.endswith("/chat/completions"):
            self._send_json(404, {"status": 404, "message": "Not found"})
            return
        fake.enter()
        try:
            self._chat(fake, request)
        finally:
            fake.leave()

    def _chat(self, fake: FakeGigaChat, request: dict[str, Any]) -> None:
        reply = fake.next_reply(request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self._send_json(reply.status, {"status": reply.status, "message": "scripted error"},
                            reply.headers)
            return
        if reply.raw_body is not None:
            self._send_json(200, reply.raw_body)
            return
        model = request.get("model", "GigaChat")
        content = reply.content or ""
        usage = {"prompt_tokens": 10, "completion_tokens": len(content.split()),
                 "total_tokens": 10 + len(content.split())}
        created = int(time.time())
        if not request.get("stream"):
            self._send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                "model": model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                             "message": {"role": "assistant", "content": content}}],
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        words = content.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk: dict[str, Any] = {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant",
                                                   "content": word if last else word + " "}}],
            }
            if last:
                chunk["choices"][0]["finish_reason"] = reply.finish_reason
                chunk["usage"] = usage
            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            self.wfile.flush()
            if reply.word_delay and not last:
                time.sleep(reply.word_delay)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def gigachat_llm(fake: FakeGigaChat, **overrides: Any) -> Any:
    """A ``GigaChatLLM`` pointed at the fake, with test-sized timeouts and no backoff delay."""
    from rag.llm.gigachat import GigaChatLLM

    opts: dict[str, Any] = {
        "credentials": CREDENTIALS, "base_url": fake.base_url, "auth_url": fake.auth_url,
        "verify_ssl_certs": False, "timeout": 5.0, "retry_backoff": 0.01, "max_retries": 2,
    }
    opts.update(overrides)
    return GigaChatLLM(**opts)
