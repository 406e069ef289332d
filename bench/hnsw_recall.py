"""How good the embedded engine's HNSW dense search is, and how many chunks a list needs per post.

Two figures behind constants of the search (``rag.store.base.DENSE_SEARCH_EF``,
``rag.hybrid.DENSE_CHUNKS_PER_POST`` / ``SPARSE_CHUNKS_PER_POST``), on an index that
``bench/search.py`` built (``--build-only``):

* **recall**: for each query, the posts of a dense list of ``--limit`` chunks searched with
  ``hnsw_ef`` = the engine's default and each ``--ef``, against the exact (brute-force) list:
  the share of the exact top-10 posts found, and the time of the call without payloads;
* **chunks per post**: how many chunks of the exact dense list and of the BM25 list it takes to
  see 100 distinct posts (a long post's chunks come together).

Queries: the 3–6-word windows ``bench/search.py`` sampled (its ``queries-SIZE.json``), embedded
with the bundled model; every search carries the tenant condition, as the product's do.

Usage:
  python bench/hnsw_recall.py --size 100k [--out bench/out/search] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import qdrant_edge as qe  # noqa: E402

from rag.embeddings import build_embedding  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.sparse import SparseEncoder  # noqa: E402

POSTS = 100
EXACT_CHUNKS = 1000


def first_posts(points: list[Any], n: int) -> list[str]:
    """The first ``n`` distinct posts of a chunk list, in order."""
    seen: dict[str, None] = {}
    for p in points:
        seen.setdefault(str(p.payload["doc_id"]), None)
        if len(seen) >= n:
            break
    return list(seen)


def chunks_for(points: list[Any], n: int) -> int | None:
    """How many chunks of the list it takes to see ``n`` distinct posts (None: never)."""
    seen: set[str] = set()
    for i, p in enumerate(points, start=1):
        seen.add(str(p.payload["doc_id"]))
        if len(seen) >= n:
            return i
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="100k", help="an index of bench/search.py: 25k or 100k")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "search")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--limit", type=int, default=129, help="chunks per dense list")
    ap.add_argument("--ef", default="129,200,300,400,600")
    args = ap.parse_args()

    shard_dir = args.out / f"{args.size}-edge" / "data" / "edge" / f"bench_{args.size}" / "shard"
    shard = qe.EdgeShard.load(str(shard_dir))
    queries = [q["q"] for q in json.loads(
        (args.out / f"queries-{args.size}.json").read_text())][:args.queries]
    embedding = build_embedding(Settings())
    encoder = SparseEncoder()
    vectors = [embedding.embed_query(q) for q in queries]
    tenant = qe.Filter(must=[qe.FieldCondition(key="tenant", match=qe.MatchValue("default"))])

    def dense(vector: list[float], limit: int, params: Any, payload: Any = ("doc_id",)) -> Any:
        return shard.query(qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(vector, using="dense"), filter=tenant,
            with_payload=list(payload) if payload else False, params=params))

    exact = [dense(v, EXACT_CHUNKS, qe.SearchParams(exact=True)) for v in vectors]
    print(f"{args.size}: {len(queries)} queries, dense lists of {args.limit} chunks, "
          "tenant condition\n")
    print("| hnsw_ef | exact top-10 posts found | call without payloads, ms (median) |")
    print("|---|---:|---:|")
    for label in ["default", *args.ef.split(",")]:
        params = None if label == "default" else qe.SearchParams(hnsw_ef=int(label))
        found = []
        for v, ex in zip(vectors, exact, strict=True):
            got = set(first_posts(dense(v, args.limit, params), POSTS)[:10])
            found.append(len(got & set(first_posts(ex, 10))) / 10)
        took = []
        for v in vectors:
            t0 = time.perf_counter()
            dense(v, args.limit, params, payload=None)
            took.append((time.perf_counter() - t0) * 1000)
        print(f"| {label} | {statistics.fmean(found):.1%} | {statistics.median(took):.2f} |")

    print(f"\nchunks it takes to see {POSTS} posts (exact dense list; BM25 list):")
    for name, lists in (
        ("dense", exact),
        ("sparse", [shard.query(qe.QueryRequest(
            limit=EXACT_CHUNKS, filter=tenant, with_payload=["doc_id"],
            query=qe.Query.Nearest(qe.SparseVector(s.indices, s.values), using="sparse")))
            for s in (encoder.encode_query(q) for q in queries)]),
    ):
        needed = sorted(chunks_for(points, POSTS) or EXACT_CHUNKS + 1 for points in lists)
        n = len(needed)
        fewer = sum(1 for x in needed if x > EXACT_CHUNKS)
        print(f"- {name}: median {needed[n // 2]}, 90th percentile {needed[int(n * 0.9)]}, "
              f"max {needed[-1] if not fewer else 'more than ' + str(EXACT_CHUNKS)}; "
              f"exactly {POSTS} for {sum(1 for x in needed if x == POSTS) / n:.0%} "
              f"(fewer than {POSTS} posts match at all: {fewer})")
    shard.close()


if __name__ == "__main__":
    main()
