"""Optional ranking stages after retrieval: cross-encoder reranking, then the recency boost.

Both are off by default and work on the top ``depth`` posts (``TGRAG_RERANK_DEPTH``) that
retrieval returned, whatever the mode; posts past that depth keep their order after them.  Search
fetches ``max(k, depth)`` posts when a stage is on, reorders, then cuts the page, so filters
(applied in the store) and ``min_score`` (applied to the retrieval score) mean what they meant.

* Reranking (``TGRAG_RERANK_MODEL``, empty = off): a ``sentence_transformers.CrossEncoder`` reads
  each (query, post text) pair; the posts are reordered by its score.  The model is loaded on first
  use, once per process; torch is imported only then.  The post text is the full post from the
  docstore (cut to ``RERANK_CHARS``; the model reads its first ``max_length`` tokens), or the
  snippet if the docstore has none.
* Recency (``TGRAG_RECENCY_HALF_LIFE_DAYS``, 0 = off): ``rag.recency``, applied to the reranker's
  scores when reranking is on, to the retrieval scores otherwise.  A hit standing for a group of
  near-duplicates is as recent as its newest copy.

A hit's ``score`` stays the retrieval score (cosine, BM25 or fused), so ``min_score`` and the QA
threshold keep their scale; with a stage on, results are in the stage's order and ``score`` need
not decrease down the list.  Neither stage is on by default: docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rag import recency
from rag.errors import InputError
from rag.recency import Recency
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.index import Index

RERANK_CHARS = 2000  # ≈ 500 tokens of Russian: more than a MiniLM/BERT cross-encoder reads
INSTALL_HINT = "pip install torch==2.13.0 'tgrag[huggingface]' (CPU torch first), " \
               "or unset TGRAG_RERANK_MODEL"


class Ranked(Protocol):
    score: float
    date: int


H = TypeVar("H", bound=Ranked)


@dataclass(frozen=True)
class RankingConfig:
    """What happens after retrieval.  ``RankingConfig()`` = nothing (the default settings)."""

    rerank_model: str = ""  # a local folder or a model name for sentence_transformers.CrossEncoder
    depth: int = 30  # top posts the stages reorder
    recency: Recency = field(default_factory=Recency)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise InputError(f"rerank depth must be ≥ 1, got {self.depth}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RankingConfig:
        return cls(rerank_model=settings.rerank_model.strip(), depth=settings.rerank_depth,
                   recency=Recency(settings.recency_half_life_days, settings.recency_weight))

    @property
    def enabled(self) -> bool:
        return bool(self.rerank_model) or self.recency.enabled

    def pool(self, wanted: int) -> int:
        """How many posts retrieval should return so that ``wanted`` can be cut after the stages."""
        return max(wanted, self.depth) if self.enabled else wanted


# -- the cross-encoder ----------------------------------------------------------------------------

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()


def load_cross_encoder(name: str) -> Any:
    """The ``CrossEncoder`` at ``name`` (a local folder or a model name), loaded once per process.

    Raises :class:`InputError` with what to do when sentence-transformers is not installed or the
    model cannot be loaded (there is no model hub offline: point it at a local folder).
    """
    name = name.strip()
    if not name:
        raise InputError("no cross-encoder configured", hint="set TGRAG_RERANK_MODEL")
    with _LOAD_LOCK:
        if name in _MODELS:
            return _MODELS[name]
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise InputError(
                "TGRAG_RERANK_MODEL needs sentence-transformers and torch (the huggingface extra)",
                hint=INSTALL_HINT,
            ) from exc
        looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
        if looks_local and not Path(name).expanduser().is_dir():
            raise InputError(f"cross-encoder folder {name!r} does not exist",
                             hint="set TGRAG_RERANK_MODEL to a model folder, or empty to turn "
                                  "reranking off")
        try:
            model = CrossEncoder(str(Path(name).expanduser()) if looks_local else name,
                                 device="cpu")
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load it"
            raise InputError(
                f"cannot load cross-encoder {name!r}: {type(exc).__name__}: {exc}"[:500],
                hint="set TGRAG_RERANK_MODEL to a local folder with a sentence-transformers "
                     "CrossEncoder (config, tokenizer, weights); model names need the Hugging "
                     "Face hub, which is not reachable offline",
            ) from exc
        labels = int(getattr(model, "num_labels", 1) or 1)
        if labels != 1:
            raise InputError(
                f"{name!r} is a {labels}-label classifier, not a reranker",
                hint="use a cross-encoder with one relevance score (num_labels = 1)",
            )
        _MODELS[name] = model
        return model


class CrossEncoderScorer:
    """Relevance of texts to a query by a cross-encoder (higher = more relevant)."""

    def __init__(self, model: str, batch_size: int = 16) -> None:
        self.model = load_cross_encoder(model)
        self.batch_size = batch_size

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        out = self.model.predict([(query, t) for t in texts], batch_size=self.batch_size,
                                 show_progress_bar=False, convert_to_numpy=True)
        return [float(x) for x in out.reshape(-1)]


# -- the stages -----------------------------------------------------------------------------------


def rerank(query: str, hits: list[H], config: RankingConfig,
           texts: Callable[[list[H]], list[str]]) -> list[H]:
    """``hits`` (best first) with the top ``config.depth`` reordered by the enabled stages.

    ``texts`` gives the text the cross-encoder reads for each hit (called only when reranking).
    Stable: equal scores keep the retrieval order (after a newer-first tie break for recency).
    """
    if not config.enabled or not hits:
        return hits
    head, tail = hits[: config.depth], hits[config.depth:]
    rel = [float(h.score) for h in head]
    if config.rerank_model:
        scored = CrossEncoderScorer(config.rerank_model).score(query, texts(head))
        idx = sorted(range(len(head)), key=lambda i: -scored[i])
        head, rel = [head[i] for i in idx], [scored[i] for i in idx]
    if config.recency.enabled:
        idx = recency.order(rel, [latest_date(h) for h in head], config.recency)
        head = [head[i] for i in idx]
    return head + tail


def latest_date(hit: Any) -> int:
    """When the hit's text was last posted: its own date, or its newest near-duplicate's (a hit
    that stands for a group of copies shows the oldest; a repost today is news today)."""
    return max([int(hit.date)] + [int(c.date) for c in getattr(hit, "copies", None) or ()])


def post_texts(index: Index, hits: Sequence[Any], limit: int = RERANK_CHARS) -> list[str]:
    """Each hit's full post text from the docstore (its snippet if missing), cut to ``limit``."""
    out: list[str] = []
    for hit in hits:
        try:
            text = index.post_text(hit.id) or ""
        except Exception:  # a docstore hiccup costs the reranker context, not the search
            text = ""
        out.append((text or hit.snippet)[:limit])
    return out
