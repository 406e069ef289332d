"""Search-quality regression guard on a fixed danetqa subset (CI-sized: ≤ 600 passages).

The subset: the first 150 queries of ``danetqa`` that have relevant passages, those passages, and
the first other passages of the corpus as distractors up to 600 in all.  It goes through the real
pipeline and retriever (``evaluate_retrieval``), so a change to the splitter, the encoders, the
store or the fusion that costs quality fails here.  Thresholds = measured minus a small margin
(measured values in docs/eval.md, "CI subset").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.retrieval import evaluate_retrieval
from rag.settings import Settings

N_QUERIES = 150
N_PASSAGES = 600
MARGIN = 0.02
# nDCG@10 measured on the subset with the defaults, through the search users get (PostSearcher,
# near-duplicates collapsed; see docs/eval.md), minus MARGIN in the test.
MEASURED = {"dense": 0.8387, "sparse": 0.8207, "hybrid": 0.9022}


def write_subset(src: Path, dst: Path) -> Path:
    """The fixed subset of ``src`` in BEIR format under ``dst``."""
    queries = [json.loads(line) for line in (src / "queries.jsonl").open(encoding="utf-8")]
    qrels: dict[str, list[str]] = {}
    lines = (src / "qrels.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        qid, did, rel = line.split("\t")
        if int(rel) > 0:
            qrels.setdefault(qid, []).append(did)
    chosen = [q for q in queries if q["_id"] in qrels][:N_QUERIES]
    relevant = {d for q in chosen for d in qrels[q["_id"]]}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").open(encoding="utf-8")]
    keep = [d for d in corpus if d["_id"] in relevant]
    keep += [d for d in corpus if d["_id"] not in relevant][: N_PASSAGES - len(keep)]
    dst.mkdir(parents=True)
    (dst / "corpus.jsonl").write_text(
        "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in keep), encoding="utf-8")
    (dst / "queries.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in chosen), encoding="utf-8")
    (dst / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q['_id']}\t{d}\t1\n" for q in chosen for d in qrels[q["_id"]]),
        encoding="utf-8")
    return dst


@pytest.mark.slow
@pytest.mark.shared
def test_danetqa_subset_quality(shared_data: Path, tmp_path: Path, settings: Settings) -> None:
    src = shared_data / "eval" / "danetqa"
    if not src.is_dir():
        pytest.skip(f"needs the danetqa BEIR set in {src}")
    subset = write_subset(src, tmp_path / "danetqa_ci")
    result = evaluate_retrieval(subset, settings)
    assert result.queries == N_QUERIES and result.docs <= N_PASSAGES
    ndcg = {mode: m["ndcg@10"] for mode, m in result.metrics.items()}
    print(result.to_markdown())  # shown with -s, handy when updating MEASURED
    for mode, measured in MEASURED.items():
        assert ndcg[mode] >= measured - MARGIN, (mode, ndcg, MEASURED)
    # the product promise: the default hybrid never loses to dense
    assert ndcg["hybrid"] >= ndcg["dense"], ndcg
