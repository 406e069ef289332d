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

Usage: python bench/alert_threshold.py --data-dir COPY_OF_NEWS_INDEX [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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
from rag.snippets import analyzer  # noqa: E402
from rag.store import StoreFilter  # noqa: E402

LABELS = REPO / "bench" / "alert_threshold_labels.jsonl"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    labelled: dict[str, dict[str, bool]] = defaultdict(dict)
    for line in args.labels.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            labelled[row["query"]][row["id"]] = bool(row["relevant"])
    settings = Settings(data_dir=args.data_dir, _env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    out: dict[str, Any] = {"queries": {}, "thresholds": THRESHOLDS}
    with Index.open(settings, purpose="bench alert_threshold") as index:
        matcher = AlertMatcher(index)
        out["posts"] = index.post_count()
        for query, labels in labelled.items():
            scores = cosines(index, query)
            missing = [d for d in labels if d not in scores]
            if missing:
                raise SystemExit(f"{query!r}: labelled posts not in the index: {missing[:3]}")
            # The same check the dispatcher runs: AlertMatcher.score agrees with these scores.
            probe = build_alert(settings, "default", query, threshold=0.5, mode="dense")
            for s in matcher.score(probe, list(labels)):
                assert abs(s.score - scores[s.doc_id]) < 1e-5, (query, s.doc_id)
            rule = WordsRule.parse(query)
            gate = {d for d, s in scores.items() if s >= FLOOR
                    and not rule.stems.isdisjoint(analyzer().tokens(index.post_text(d) or ""))}
            gate |= {d for d in labels if not rule.stems.isdisjoint(
                analyzer().tokens(index.post_text(d) or ""))}
            out["queries"][query] = {
                "labelled": len(labels), "relevant": sum(labels.values()),
                "dense": {t: estimate(scores, labels, t) for t in THRESHOLDS},
                "hybrid": {t: estimate(scores, labels, t, gate) for t in THRESHOLDS},
                "bands": {b: [sum(labels[d] for d in labels if band_of(scores[d]) == b),
                              sum(1 for d in labels if band_of(scores[d]) == b)] for b in BANDS},
            }
            print(f"{query}: done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
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
    print(f"posts in the index: {out['posts']}, {len(queries)} queries, "
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
