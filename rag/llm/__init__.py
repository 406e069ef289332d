"""The LLM behind tagging and question answering, chosen by ``TGRAG_LLM``.

* ``none`` (default): no LLM; tagging uses keywords and ``ask`` answers extractively.
* ``gigachat``: :class:`rag.llm.gigachat.GigaChatLLM` over the official SDK.
* ``openai``: any OpenAI-compatible endpoint (the gpt2giga proxy, Ollama, vLLM) through
  LlamaIndex's ``OpenAILike``.  It lives in the optional extra ``tgrag[openai]`` because it pulls
  the ``openai`` SDK, which the default install does not need.
"""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse
from llama_index.core.llms import LLM

from rag.errors import LLMError
from rag.settings import Settings


def finish_reason(response: ChatResponse | CompletionResponse) -> str | None:
    """The finish reason an LLM reported (GigaChat's ``"blacklist"`` = refused), if any."""
    reason = response.additional_kwargs.get("finish_reason")
    if reason is None and isinstance(response.raw, dict):
        choices = response.raw.get("choices") or [{}]
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
    return reason


def build_llm(settings: Settings) -> LLM | None:
    """The configured LLM, or ``None`` when ``TGRAG_LLM=none`` (offline mode)."""
    if settings.llm == "none":
        return None
    if settings.llm == "gigachat":
        from rag.llm.gigachat import GigaChatLLM

        creds = settings.gigachat_credentials
        ca_bundle = settings.gigachat_ca_bundle
        return GigaChatLLM(
            credentials=creds.get_secret_value() if creds else None,
            model=settings.gigachat_model,
            temperature=settings.gigachat_temperature,
            max_tokens=settings.gigachat_max_tokens,
            timeout=settings.gigachat_timeout,
            scope=settings.gigachat_scope,
            base_url=settings.gigachat_base_url,
            auth_url=settings.gigachat_auth_url,
            verify_ssl_certs=settings.gigachat_verify_ssl,
            ca_bundle_file=str(ca_bundle) if ca_bundle else None,
            max_retries=settings.llm_max_retries,
            retry_backoff=settings.llm_retry_backoff,
            concurrency=settings.llm_concurrency,
        )
    return _openai_like(settings)


def _openai_like(settings: Settings) -> LLM:
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError as exc:
        raise LLMError(
            "TGRAG_LLM=openai needs the OpenAI-compatible client",
            hint="pip install 'tgrag[openai]' (or llama-index-llms-openai-like)",
        ) from exc
    if not settings.openai_base_url or not settings.openai_model:
        raise LLMError(
            "TGRAG_LLM=openai needs an endpoint and a model",
            hint="set TGRAG_OPENAI_BASE_URL (e.g. http://localhost:8090/v1) and TGRAG_OPENAI_MODEL",
        )
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
    return OpenAILike(
        model=settings.openai_model,
        api_base=settings.openai_base_url,
        api_key=key,
        is_chat_model=True,
        context_window=32768,
        temperature=settings.gigachat_temperature if settings.gigachat_temperature is not None
        else 0.2,
        max_tokens=settings.gigachat_max_tokens,
        timeout=settings.gigachat_timeout,
        max_retries=settings.llm_max_retries,
    )


__all__ = ["build_llm", "finish_reason"]
