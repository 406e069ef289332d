"""Replay the extractive QA on cached retrieval: the floor and the sentence selector, fast.

``tgrag eval answers --offline`` retrieves, filters and selects for every question; on a busy
machine a full xquad run takes ~20 minutes, mostly the sentence embeddings.  This script splits
the run in two:

* ``dump``: for every question of a BEIR dataset (the eval index ``tgrag eval answers`` builds
  and caches), the top ``--k`` dense hits with their whole post texts, and the embeddings of the
  question and of every sentence of those posts, into one pickle (``data/bench/NAME.pkl``);
* ``run``: each question through the real code again, from the pickle: ``rag.qa.floor_sources``
  with the settings' floor, then ``rag.qa.extractive_answer`` with a ``SentenceSelector`` whose
  embeddings come from the cache; graded as ``eval.answers`` grades (gold containment in the
  answer and in its first cited sentence, answer length, not found with and without an answer).

With ``--held-out-title`` every answerable question is also put to the index without the
posts sharing its relevant post's title (a BEIR corpus title, the first line of the post text:
xquad's Wikipedia article), as a question with no answer there: the share that gets "not found"
is the floor's right refusals on text of that kind (English encyclopedia paragraphs for xquad,
where the news set's no-answer questions are Russian news).

Figures are printed for all questions and for the two halves by id parity (the last hex digit or
digit of the id: even / odd), so a rule tuned on one half can be checked on the other.
``TGRAG_QA_*`` environment variables change the floor as for ``tgrag ask``.

Usage:
  python bench/qa_replay.py dump --dataset DIR [--k 20] [--out data/bench/NAME.pkl]
  python bench/qa_replay.py run data/bench/NAME.pkl [...] [--json OUT] [--show-misses N]
                                [--held-out-title]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eval.answers import (  # noqa: E402
    contains_gold,
    first_cited_sentence,
    load_gold,
    load_no_answer,
)
from eval.beir import load_beir  # noqa: E402
from rag.qa import extractive_answer, floor_sources  # noqa: E402
from rag.relevance import BACKGROUND_DEPTH, RelevanceFloor  # noqa: E402
from rag.search import SearchFilters  # noqa: E402
from rag.sentences import SentenceSelector, split_sentences  # noqa: E402
from rag.settings import Settings  # noqa: E402

Record = dict[str, Any]


def dump(dataset: Path, k: int, out: Path) -> None:
    from eval.retrieval import index_dataset
    from rag.qa import SOURCE_CHARS, QAEngine

    settings = Settings()
    ds = load_beir(dataset)
    gold = load_gold(ds)
    no_answer = load_no_answer(ds)
    questions = {**ds.queries, **no_answer}
    ids = list(ds.corpus)
    index = index_dataset(ds, settings)
    started = time.perf_counter()
    try:
        engine = QAEngine(index)
        embedding = index.embedding
        records: list[Record] = []
        texts: dict[str, str] = {}
        for qid, question in questions.items():
            hits = engine.searcher.search(question, SearchFilters(), k=max(k, BACKGROUND_DEPTH),
                                          mode="dense")
            for h in hits:
                texts.setdefault(h.id, engine._full_text(h))
            relevant = {d for d, v in ds.qrels.get(qid, {}).items() if v > 0}
            records.append({
                "id": qid, "question": question, "gold": gold.get(qid, []),
                "no_answer": qid in no_answer, "hits": hits,
                "relevant": [h.id for h in hits if ids[h.message_id - 1] in relevant],
                "query_vector": list(embedding.embed_query(question)),
            })
        # Every sentence the selector could embed: those of the first SOURCE_CHARS of each post.
        sentences = sorted({s for t in texts.values() for s in split_sentences(t[:SOURCE_CHARS])})
        vectors: dict[str, list[float]] = {}
        batch = 64
        for i in range(0, len(sentences), batch):
            part = sentences[i:i + batch]
            for s, v in zip(part, embedding.model.get_text_embedding_batch(part), strict=True):
                vectors[s] = list(v)
            print(f"embedded {min(i + batch, len(sentences))}/{len(sentences)} sentences",
                  file=sys.stderr)
    finally:
        index.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        pickle.dump({"dataset": ds.name, "records": records, "texts": texts,
                     "vectors": vectors}, f)
    print(f"{len(records)} questions, {len(texts)} posts, {len(vectors)} sentences, "
          f"{time.perf_counter() - started:.0f} s → {out}")


class CachedEmbeddings:
    """The dump's vectors; a sentence not in it (another split) is embedded and remembered."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.query: Sequence[float] = ()
        self.missed = 0
        self._model: Any = None

    def embed_query(self, _question: str) -> Sequence[float]:
        return self.query

    def embed_passages(self, texts: list[str]) -> list[Sequence[float]]:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            if self._model is None:
                from rag.embeddings import build_embedding
                self._model = build_embedding(Settings()).model
            self.missed += len(missing)
            for t, v in zip(missing, self._model.get_text_embedding_batch(missing), strict=True):
                self.vectors[t] = list(v)
        return [self.vectors[t] for t in texts]


def half(qid: str) -> str:
    digit = next((c for c in reversed(qid) if c in "0123456789abcdefABCDEF"), "0")
    return "even" if int(digit, 16) % 2 == 0 else "odd"


def _title(text: str) -> str:
    return text.split("\n", 1)[0]


def run(dump_path: Path, settings: Settings, dense: bool, held_out: bool = False
        ) -> list[Record]:
    with dump_path.open("rb") as f:
        data = pickle.load(f)
    texts = data["texts"]
    cache = CachedEmbeddings(data["vectors"])
    floor = RelevanceFloor(settings.qa_min_score, settings.qa_sure_score,
                           settings.qa_min_name_share, settings.qa_min_margin)
    selector = (SentenceSelector(cache.embed_query, cache.embed_passages) if dense
                else SentenceSelector())
    items = []
    for r in data["records"]:
        cache.query = r["query_vector"]
        sources = floor_sources(floor, r["question"], r["hits"], settings.qa_top_k,
                                lambda h: texts[h.id])
        item: Record = {"set": data["dataset"], "id": r["id"], "question": r["question"],
                        "gold": r["gold"], "no_answer": r["no_answer"], "half": half(r["id"]),
                        "found": bool(sources), "answer": "",
                        "source_hit": any(s.hit.id in r["relevant"] for s in sources)}
        if sources:
            item["answer"] = extractive_answer(r["question"], sources, selector).answer
        if held_out and r["relevant"]:
            # The same question to the index without its article: nothing there answers it.
            title = _title(texts[r["relevant"][0]])
            rest = [h for h in r["hits"] if _title(texts[h.id]) != title]
            item["held_out_found"] = bool(floor_sources(
                floor, r["question"], rest, settings.qa_top_k, lambda h: texts[h.id]))
        if r["gold"]:
            item["in_answer"] = item["found"] and contains_gold(item["answer"], r["gold"])
            item["in_first"] = item["found"] and contains_gold(
                first_cited_sentence(item["answer"]), r["gold"])
        items.append(item)
    if cache.missed:
        print(f"{dump_path.name}: {cache.missed} sentences embedded anew", file=sys.stderr)
    return items


def figures(items: list[Record]) -> dict[str, float | int | None]:
    graded = [it for it in items if it["gold"]]
    none = [it for it in items if it["no_answer"]]
    answerable = [it for it in items if not it["no_answer"]]
    found = [it for it in items if it["found"]]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None
    return {
        "n": len(graded),
        "in_first": mean([float(it["in_first"]) for it in graded]),
        "in_answer": mean([float(it["in_answer"]) for it in graded]),
        "first_when_found": mean([float(it["in_first"]) for it in graded if it["found"]]),
        "chars": mean([float(len(it["answer"])) for it in found]),
        "lost": mean([float(not it["found"]) for it in answerable]),
        "no_answer_not_found": mean([float(not it["found"]) for it in none]),
        "source_hit": mean([float(it["source_hit"]) for it in answerable]),
        "held_out_not_found": mean([float(not it["held_out_found"]) for it in items
                                    if "held_out_found" in it]),
        "held_out_n": sum("held_out_found" in it for it in items),
    }


def _pct(v: float | int | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--dataset", type=Path, required=True)
    d.add_argument("--k", type=int, default=20)
    d.add_argument("--out", type=Path)
    r = sub.add_parser("run")
    r.add_argument("dumps", type=Path, nargs="+")
    r.add_argument("--lexical", action="store_true", help="no dense sentence scores")
    r.add_argument("--json", type=Path)
    r.add_argument("--show-misses", type=int, default=0)
    r.add_argument("--held-out-title", action="store_true",
                   help="also ask each question without its relevant post's title (article)")
    args = parser.parse_args()
    if args.command == "dump":
        name = args.dataset.resolve().name
        dump(args.dataset, args.k, args.out or REPO / "data" / "bench" / f"{name}.pkl")
        return
    settings = Settings()
    print("| set | half | questions | first cited sentence | answer | first, when answered "
          "| chars | lost | no answer → not found | source hit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    everything = []
    for path in args.dumps:
        items = run(path, settings, dense=not args.lexical, held_out=args.held_out_title)
        everything += items
        for part in ("all", "even", "odd"):
            f = figures([it for it in items if part in ("all", it["half"])])
            chars = "—" if f["chars"] is None else f"{f['chars']:.0f}"
            print(f"| {path.stem} | {part} | {f['n']} | {_pct(f['in_first'])} | "
                  f"{_pct(f['in_answer'])} | {_pct(f['first_when_found'])} | {chars} | "
                  f"{_pct(f['lost'])} | {_pct(f['no_answer_not_found'])} | "
                  f"{_pct(f['source_hit'])} |")
        if args.held_out_title:
            held = {part: figures([it for it in items if part in ("all", it["half"])])
                    for part in ("all", "even", "odd")}
            print("| " + path.stem + " | held-out title → not found | " + " / ".join(
                f"{part} {_pct(f['held_out_not_found'])} (n={f['held_out_n']})"
                for part, f in held.items()) + " |||||||")
        misses = [it for it in items if it["gold"] and not it["in_first"]]
        for it in misses[:args.show_misses]:
            print(f"\n[{it['id']}] {it['question']}  gold={it['gold']}\n  → {it['answer']}")
    if args.json:
        args.json.write_text(json.dumps(everything, ensure_ascii=False, indent=1),
                             encoding="utf-8")


if __name__ == "__main__":
    main()
