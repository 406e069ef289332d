"""GigaChatLLM through the real SDK against the fake GigaChat server (no network)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from rag.errors import LLMError
from rag.llm import build_llm, finish_reason
from rag.llm.gigachat import GigaChatLLM
from rag.settings import Settings
from tests.fake_gigachat import CREDENTIALS, FakeGigaChat, Reply, gigachat_llm


def test_chat_sends_system_role_and_reuses_token(fake: FakeGigaChat) -> None:
    llm = gigachat_llm(fake, model="GigaChat-2-Max", temperature=0.1, max_tokens=77)
    msgs = [ChatMessage(role=MessageRole.SYSTEM, content="Ты помощник."),
            ChatMessage(role=MessageRole.USER, content="Привет")]
    for _ in range(3):
        response = llm.chat(msgs)
    assert response.message.content == "Ответ на: Привет"
    assert finish_reason(response) == "stop"
    assert llm.complete("Как дела?").text == "Ответ на: Как дела?"
    assert fake.oauth_calls == 1  # one token for four requests
    sent = fake.requests[0]
    assert sent["model"] == "GigaChat-2-Max"
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 77
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_expired_token_reauthenticates(fake: FakeGigaChat) -> None:
    llm = gigachat_llm(fake)
    llm.complete("раз")
    fake.expire_tokens()  # server-side expiry: the cached token now gets a 401
    assert llm.complete("два").text == "Ответ на: два"
    assert fake.oauth_calls == 2


def test_bad_credentials_is_llm_error_with_hint(fake: FakeGigaChat) -> None:
    llm = gigachat_llm(fake, credentials="d3Jvbmc6a2V5")
    with pytest.raises(LLMError) as err:
        llm.complete("привет")
    assert "credentials" in str(err.value) and err.value.hint


def test_429_backs_off_then_succeeds(fake: FakeGigaChat) -> None:
    fake.then(Reply(status=429, headers={"Retry-After": "0"}), Reply(status=429))
    assert gigachat_llm(fake).complete("вопрос").text == "Ответ на: вопрос"
    assert fake.chat_calls == 3


def test_500_after_retries_is_llm_error(fake: FakeGigaChat) -> None:
    fake.then(*[Reply(status=500)] * 5)
    with pytest.raises(LLMError, match=r"HTTP 500.*3 attempts"):
        gigachat_llm(fake, max_retries=2).complete("вопрос")
    assert fake.chat_calls == 3


def test_timeout_is_llm_error(fake: FakeGigaChat) -> None:
    fake.then(Reply(delay=1.5))
    with pytest.raises(LLMError, match="did not answer within 0.5s") as err:
        gigachat_llm(fake, timeout=0.5).complete("вопрос")
    assert "TGRAG_GIGACHAT_TIMEOUT" in (err.value.hint or "")
    assert fake.chat_calls == 1  # timeouts are not retried


def test_malformed_body_is_llm_error(fake: FakeGigaChat) -> None:
    fake.then(Reply(raw_body=b'{"choices": [oops'))
    with pytest.raises(LLMError):
        gigachat_llm(fake, max_retries=0).complete("вопрос")


def test_blacklist_refusal_is_reported(fake: FakeGigaChat) -> None:
    fake.then(Reply(finish_reason="blacklist"))
    response = gigachat_llm(fake).complete("запретное")
    assert finish_reason(response) == "blacklist"


def test_stream_yields_tokens_in_order(fake: FakeGigaChat) -> None:
    fake.responder = lambda req: "один два три четыре"
    llm = gigachat_llm(fake)
    deltas = [r.delta for r in llm.stream_complete("считай")]
    assert deltas == ["один ", "два ", "три ", "четыре"]
    assert fake.requests[0]["stream"] is True
    chats = list(llm.stream_chat([ChatMessage(role=MessageRole.USER, content="x")]))
    assert chats[-1].message.content == "один два три четыре"
    assert finish_reason(chats[-1]) == "stop"


def test_stream_retries_429_before_first_token(fake: FakeGigaChat) -> None:
    fake.responder = lambda req: "а б"
    fake.then(Reply(status=429))
    assert "".join(r.delta or "" for r in gigachat_llm(fake).stream_complete("x")) == "а б"


def test_async_stream_and_chat(fake: FakeGigaChat) -> None:
    fake.responder = lambda req: "раз два"
    llm = gigachat_llm(fake)

    async def run() -> tuple[list[str], str]:
        gen = await llm.astream_chat([ChatMessage(role=MessageRole.USER, content="x")])
        deltas = [r.delta or "" async for r in gen]
        done = await llm.acomplete("y")
        return deltas, done.text

    deltas, text = asyncio.run(run())
    assert deltas == ["раз ", "два"] and text == "раз два"
    assert fake.oauth_calls == 1


def test_concurrency_limit_is_respected(fake: FakeGigaChat) -> None:
    fake.then(*[Reply(delay=0.2)] * 4)
    llm = gigachat_llm(fake, concurrency=1)
    threads = [threading.Thread(target=llm.complete, args=(f"q{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.chat_calls == 4 and fake.max_in_flight == 1

    fake.then(*[Reply(delay=0.3)] * 2)
    fake.max_in_flight = 0
    llm2 = gigachat_llm(fake, concurrency=2)
    threads = [threading.Thread(target=llm2.complete, args=(f"q{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.max_in_flight == 2


def test_models_and_embeddings_through_the_shared_client(fake: FakeGigaChat) -> None:
    llm = gigachat_llm(fake)
    assert "GigaChat-2-Max" in [m.id_ for m in llm.client.get_models().data]
    assert len(llm.client.embeddings(["а б", "в"]).data) == 2
    assert fake.oauth_calls == 1


def test_build_llm_from_settings(fake: FakeGigaChat) -> None:
    assert build_llm(Settings(_env_file=None)) is None  # type: ignore[call-arg]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, llm="gigachat", gigachat_credentials=CREDENTIALS,
        gigachat_base_url=fake.base_url, gigachat_auth_url=fake.auth_url,
        gigachat_verify_ssl=False, gigachat_model="GigaChat-2",
    )
    llm = build_llm(settings)
    assert isinstance(llm, GigaChatLLM)
    assert llm.complete("тест").text == "Ответ на: тест"
    with pytest.raises(LLMError, match="credentials"):
        build_llm(Settings(_env_file=None, llm="gigachat"))  # type: ignore[call-arg]


def test_build_llm_openai_compatible(fake: FakeGigaChat) -> None:
    pytest.importorskip("llama_index.llms.openai_like")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, llm="openai", openai_base_url=fake.base_url, openai_api_key="sk-test",
        openai_model="GigaChat-2",
    )
    llm = build_llm(settings)
    assert llm is not None
    assert llm.complete("тест").text == "Ответ на: тест"
    assert "".join(r.delta or "" for r in llm.stream_complete("а")) == "Ответ на: а"
    with pytest.raises(LLMError, match="endpoint"):
        build_llm(Settings(_env_file=None, llm="openai"))  # type: ignore[call-arg]
