"""The sparse encoder, the fusion functions and sparse/hybrid retrieval on a real local index."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from llama_index.core.schema import MetadataMode, TextNode

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.errors import InputError
from rag.hybrid import (
    FusionConfig,
    HybridRetriever,
    fuse,
    normalize,
    rrf,
    score_fusion,
)
from rag.index import Index
from rag.search import PostSearcher, SearchFilters
from rag.sparse import HASH_SPACE, SPARSE_KEY, Analyzer, SparseEncoder, term_id

# -- analysis -------------------------------------------------------------------------------------


def test_analyzer_normalizes_russian_forms_and_drops_stopwords() -> None:
    a = Analyzer()
    assert a.tokens("Кошки") == a.tokens("кошку") == a.tokens("КОШКАМИ")
    assert a.tokens("ёлка") == a.tokens("елки")
    assert a.tokens("и в на не что это") == []
    # pymorphy3 joins suppletive forms the stemmer alone cannot
    assert a.tokens("людей") == a.tokens("человек")


def test_analyzer_stems_english_and_keeps_numbers() -> None:
    a = Analyzer()
    assert a.tokens("running runs") == ["run", "run"]
    assert "2024" in a.tokens("в 2024 году")
    assert a.tokens("the and of") == []


def test_term_ids_are_stable_and_in_range() -> None:
    # A fixed value: ids must never change between versions, or stored vectors stop matching.
    assert term_id("кошк") == term_id("кошк")
    assert 0 <= term_id("кошк") < HASH_SPACE
    assert term_id("кошк") != term_id("собак")
    assert term_id("кошк") == 299850507


def test_document_values_saturate_and_normalize_length() -> None:
    enc = SparseEncoder(k1=1.2, b=0.75, avg_len=4)
    idx, values = enc.encode_document("кошка кошки кошку собака")
    assert idx == sorted(idx) and len(idx) == 2
    by_id = dict(zip(idx, values, strict=True))
    cat, dog = by_id[term_id("кошк")], by_id[term_id("собак")]
    # tf=3 vs tf=1 at average length: BM25 tf·(k1+1)/(tf+k1)
    assert math.isclose(cat, 3 * 2.2 / (3 + 1.2))
    assert math.isclose(dog, 1 * 2.2 / (1 + 1.2))
    # a longer document lowers the weight of the same tf
    long_idx, long_values = enc.encode_document("собака " + "слово " * 20)
    assert dict(zip(long_idx, long_values, strict=True))[term_id("собак")] < dog


def test_query_has_unit_weights_per_unique_term() -> None:
    q = SparseEncoder().encode_query("Кошки и кошка, собаки")
    assert q.values == [1.0, 1.0]
    assert SparseEncoder().encode_query("и в на").indices == []


def test_transform_sets_sparse_and_hides_it_from_embedding_text() -> None:
    node = TextNode(text="Кошки любят молоко", metadata={"channel": "cats"})
    (out,) = SparseEncoder()([node])
    assert out.metadata[SPARSE_KEY][0]
    assert SPARSE_KEY in out.excluded_embed_metadata_keys
    assert SPARSE_KEY in out.excluded_llm_metadata_keys
    assert "_sparse" not in out.get_content(metadata_mode=MetadataMode.EMBED)


# -- fusion ---------------------------------------------------------------------------------------


def test_rrf_weighted() -> None:
    fused = rrf([["a", "b"], ["b", "c"]], k=1)
    assert [k for k, _ in fused] == ["b", "a", "c"]
    assert math.isclose(dict(fused)["b"], 1 / 3 + 1 / 2)
    heavy_first = rrf([["a", "b"], ["b", "c"]], weights=[3, 1], k=1)
    assert heavy_first[0][0] == "a"
    with pytest.raises(InputError):
        rrf([["a"]], weights=[1, 2])


def test_normalize() -> None:
    assert normalize([3.0, 1.0, 2.0], "minmax") == [1.0, 0.0, 0.5]
    assert normalize([5.0, 5.0], "minmax") == [1.0, 1.0]
    z = normalize([1.0, 2.0, 3.0], "zscore")
    assert math.isclose(sum(z), 0.0, abs_tol=1e-12) and z[2] > z[1] > z[0]
    assert normalize([], "zscore") == []


def test_score_fusion_missing_keys_get_the_floor() -> None:
    dense = [("a", 0.9), ("b", 0.5)]
    sparse = [("c", 12.0), ("a", 2.0)]
    fused = dict(score_fusion([dense, sparse], [0.5, 0.5], "minmax"))
    assert math.isclose(fused["a"], 0.5 * 1 + 0.5 * 0)
    assert math.isclose(fused["c"], 0.5 * 0 + 0.5 * 1)
    assert math.isclose(fused["b"], 0.0)
    fused_z = score_fusion([dense, sparse], method="zscore")
    assert {k for k, _ in fused_z} == {"a", "b", "c"}


def test_fuse_respects_depth_and_config() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("x", 0.1)]
    sparse = [("c", 9.0), ("b", 5.0), ("y", 1.0)]
    top = fuse(dense, sparse, FusionConfig(method="rrf", depth=2))
    assert top[0][0] == "b" and {k for k, _ in top} == {"a", "b", "c"}
    only_dense = fuse(dense, sparse, FusionConfig(method="minmax", sparse_weight=0.0))
    assert [k for k, _ in only_dense][:3] == ["a", "b", "x"]
    with pytest.raises(InputError):
        FusionConfig(method="max")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        FusionConfig(depth=0)


# -- on a real (local-mode) index ---------------------------------------------------------------

TEXTS = [
    "Центробанк повысил ключевую ставку до 16 процентов годовых.",
    "Синоптики обещают снегопад и гололёд в Москве на выходных.",
    "В Москве открылась новая станция метро на Большой кольцевой линии.",
    "Курс рубля укрепился после решения Центробанка по ключевой ставке.",
    "Новый смартфон получил камеру на 200 мегапикселей.",
]


@pytest.fixture
def filled(index: Index) -> Index:
    posts = [Post(channel_id=7, message_id=i, date=1_700_000_000 + i, text=t, channel="news")
             for i, t in enumerate(TEXTS, start=1)]
    PostPipeline(index).ingest(posts)
    return index


@pytest.mark.slow
def test_pipeline_writes_sparse_vectors_outside_the_payload(filled: Index) -> None:
    (point,) = filled.store.chunks_of("tg:7:1", with_vectors=True)
    assert "sparse" in point.vector and point.vector["sparse"].indices
    assert not any(k.startswith("_") for k in point.payload)


@pytest.mark.slow
def test_local_mode_applies_idf(filled: Index) -> None:
    enc = SparseEncoder()
    # "москв" is in 2 posts, "метро" in 1: with IDF the rare term outweighs the common one
    hits = filled.store.search_sparse(enc.encode_query("москва метро"), None, 5)
    assert hits[0].payload["doc_id"] == "tg:7:3"
    common = filled.store.search_sparse(enc.encode_query("москва"), None, 5)[0].score
    rare = filled.store.search_sparse(enc.encode_query("метро"), None, 5)[0].score
    n, df_common, df_rare = 5, 2, 1
    idf = lambda df: math.log((n - df + 0.5) / (df + 0.5) + 1)  # noqa: E731
    assert rare / common == pytest.approx(
        idf(df_rare) / idf(df_common), rel=0.2  # tf parts differ only by length norm
    )
    assert filled.store.search_sparse(enc.encode_query("и в на"), None, 5) == []


@pytest.mark.slow
def test_hybrid_retriever_modes(filled: Index) -> None:
    r = HybridRetriever(filled.store, filled.embedding.model.get_query_embedding)
    for mode in ("dense", "sparse", "hybrid"):
        hits = r.retrieve("решение ЦБ по ключевой ставке", mode=mode, limit=3)  # type: ignore[arg-type]
        assert hits and hits[0].doc_id in {"tg:7:1", "tg:7:4"}, mode
        assert len({h.doc_id for h in hits}) == len(hits)
    with pytest.raises(InputError):
        r.retrieve("x", mode="bm25")  # type: ignore[arg-type]


@pytest.mark.slow
def test_post_searcher_modes_with_filters(filled: Index) -> None:
    searcher = PostSearcher(filled)
    assert filled.settings.search_mode == "hybrid"
    for mode in ("sparse", "hybrid", None):
        hits = searcher.search("станция метро", k=3, mode=mode)
        assert hits[0].id == "tg:7:3" and hits[0].snippet.startswith("В Москве"), mode
        assert searcher.search("станция метро", SearchFilters(channel_ids=[8]), mode=mode) == []
    late = SearchFilters(since=1_700_000_004)
    assert {h.id for h in searcher.search("Москва", late, mode="sparse")} <= {"tg:7:4", "tg:7:5"}


def test_stopwords_are_bm25s_lists_loaded_without_the_package() -> None:
    # The lists come from bm25s's own file, without its package __init__ (numba, scipy: half a
    # second of every start).  A fresh interpreter shows what `import rag.sparse` loads.
    import subprocess
    import sys

    from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_RUSSIAN

    from rag import sparse

    assert tuple(STOPWORDS_RUSSIAN) == sparse.STOPWORDS_RUSSIAN
    assert tuple(STOPWORDS_EN) == sparse.STOPWORDS_EN
    assert {"и", "the", "который"} <= sparse.STOPWORDS
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, rag.sparse; print(sorted(m for m in sys.modules "
         "if m.split('.')[0] in ('bm25s', 'numba', 'scipy')))"],
        capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parent.parent).stdout.strip()  # this checkout's rag
    assert loaded == "[]"


def test_every_encoder_and_the_snippets_share_one_stem_cache() -> None:
    # A search makes its own encoder; a cold stem cache per request made every query pay
    # pymorphy3 again (the API's per-request cost).
    from rag.sparse import shared_analyzer

    first, second = SparseEncoder(), SparseEncoder()
    assert first.analyzer is second.analyzer is shared_analyzer()
    first.encode_query("ключевую ставку сохранили")
    hits = second.analyzer._stem_one.cache_info().hits
    second.encode_query("ключевую ставку сохранили")
    assert second.analyzer._stem_one.cache_info().hits == hits + 3
