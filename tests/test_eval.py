"""The BEIR loader, the run/metric plumbing and ``tgrag eval retrieval`` on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.cli.eval_commands import register
from eval.beir import load_beir
from eval.retrieval import evaluate_retrieval, parse_modes, score
from rag.errors import InputError
from rag.hybrid import FusionConfig, fuse
from rag.settings import Settings

CORPUS = [
    {"_id": "d1", "title": "Ставка", "text": "Центробанк повысил ключевую ставку до 16%."},
    {"_id": "d2", "title": "", "text": "Синоптики обещают снегопад в Москве на выходных."},
    {"_id": "d3", "text": "В Москве открылась новая станция метро."},
    {"_id": "d4", "title": "Смартфоны", "text": "Новый смартфон получил камеру на 200 Мп."},
]
QUERIES = [
    {"_id": "q1", "text": "какую ставку установил ЦБ?"},
    {"_id": "q2", "text": "где открыли станцию метро"},
    {"_id": "q3", "text": "вопрос без разметки"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n"


def write_dataset(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels.tsv").write_text(qrels, encoding="utf-8")
    return root


# -- loader -------------------------------------------------------------------------------------


def test_load_beir(tmp_path: Path) -> None:
    ds = load_beir(write_dataset(tmp_path / "tiny"))
    assert ds.name == "tiny"
    assert list(ds.corpus) == ["d1", "d2", "d3", "d4"]
    assert ds.corpus["d1"].full_text == "Ставка\nЦентробанк повысил ключевую ставку до 16%."
    assert ds.corpus["d3"].full_text == "В Москве открылась новая станция метро."
    assert ds.queries == {"q1": "какую ставку установил ЦБ?", "q2": "где открыли станцию метро"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert list(ds.limited(1).queries) == ["q1"] and len(ds.limited(1).corpus) == 4


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: (r / "qrels.tsv").unlink(), "lacks qrels.tsv"),
        (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{oops\n'),
         "corpus.jsonl line 2: malformed JSON"),
        (lambda r: (r / "corpus.jsonl").write_text('{"text": "a"}\n'), "line 1: missing '_id'"),
        (lambda r: (r / "queries.jsonl").write_text('{"_id": "q1", "text": ""}\n'),
         "queries.jsonl line 1: 'text' must be a non-empty string"),
        (lambda r: (r / "qrels.tsv").write_text("q1\td1\n"), "qrels.tsv line 1: expected 3"),
        (lambda r: (r / "qrels.tsv").write_text("q1\td9\t1\n"), "document 'd9' is not in"),
        (lambda r: (r / "qrels.tsv").write_text("q9\td1\t1\n"), "query 'q9' is not in"),
        (lambda r: (r / "qrels.tsv").write_text("q1\td1\thigh\n"), "is not a number"),
        (lambda r: (r / "corpus.jsonl").write_bytes(b"\xff\xfe"), "is not UTF-8"),
    ],
)
def test_load_beir_errors_name_file_and_line(tmp_path: Path, mutate, message: str) -> None:
    root = write_dataset(tmp_path / "bad")
    mutate(root)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_beir(root)


def test_load_beir_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "nope")


def test_parse_modes() -> None:
    assert parse_modes("hybrid, dense,hybrid") == ["hybrid", "dense"]
    with pytest.raises(InputError, match="bm25"):
        parse_modes("dense,bm25")


# -- runs and metrics -----------------------------------------------------------------------------


def test_fused_runs_and_score(tmp_path: Path) -> None:
    ds = load_beir(write_dataset(tmp_path / "tiny"))
    dense = {"q1": [("d2", 0.9), ("d1", 0.8)], "q2": [("d3", 0.9)]}
    sparse = {"q1": [("d1", 7.0)], "q2": []}
    fusion = FusionConfig(method="rrf")
    lists = {"dense": dense, "sparse": sparse,
             "hybrid": {q: fuse(dense[q], sparse[q], fusion) for q in dense}}
    runs = {mode: {q: {d: float(len(r) - i) for i, (d, _) in enumerate(r)}
                   for q, r in ranked.items()} for mode, ranked in lists.items()}
    assert list(runs["hybrid"]["q1"]) == ["d1", "d2"]  # in both lists beats top of one
    metrics, pvalues = score(ds, runs)
    assert metrics["dense"]["mrr@10"] == pytest.approx((0.5 + 1) / 2)
    assert metrics["sparse"]["recall@1"] == pytest.approx(0.5)  # q2 has no sparse hit at all
    assert metrics["hybrid"]["ndcg@10"] == pytest.approx(1.0)
    assert set(pvalues["hybrid"]) == {"dense", "sparse"}


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_retrieval_command(tmp_path: Path, settings: Settings) -> None:
    root = write_dataset(tmp_path / "tiny")
    app = typer.Typer()

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = settings

    register(app)
    out = tmp_path / "out" / "tiny.json"
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", str(root), "--json",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "| hybrid |" in result.stdout
    data = json.loads(out.read_text())
    assert data["dataset"] == "tiny" and data["queries"] == 2 and data["docs"] == 4
    assert set(data["modes"]) == {"dense", "sparse", "hybrid"}
    assert set(data["modes"]["dense"]) == {"ndcg@10", "mrr@10", "recall@1", "recall@10",
                                           "recall@100"}
    assert data["modes"]["sparse"]["recall@1"] == 1.0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # cached: the second run embeds nothing and gives the same numbers
    again = evaluate_retrieval(root, settings)
    assert again.metrics["hybrid"]["ndcg@10"] == pytest.approx(data["modes"]["hybrid"]["ndcg@10"],
                                                               abs=1e-4)


@pytest.mark.parametrize("missing", ["ranx", "matplotlib"])
def test_eval_retrieval_without_the_extra_fails_before_indexing(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    # It used to index the whole dataset, then die with "No module named 'ranx'".
    import sys

    from api.cli import app

    monkeypatch.setitem(sys.modules, missing, None)  # import of it now fails, as uninstalled
    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    root = write_dataset(tmp_path / "tiny")
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", str(root)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: tgrag eval retrieval needs the eval extra")
    assert "Traceback" not in result.output and "index:" not in result.stderr
    with pytest.raises(InputError) as caught:
        evaluate_retrieval(root, settings)
    assert f"{missing} is not installed" in caught.value.message
    assert caught.value.hint and "tgrag[eval]" in caught.value.hint
    assert not settings.data_dir.exists()  # nothing was indexed
