"""Where a search spends its time: per-query seconds and a cProfile of a few searches.

Opens an existing index (e.g. the one ``bench/ingest.py --data-dir DIR`` and
``bench/load.py --data-dir DIR --top-up-to 25000`` built), warms the model up with one query,
times four queries and prints the top functions by cumulative time.

Usage: python bench/profile_search.py --data-dir DIR [--mode dense|sparse|hybrid] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag.index import Index  # noqa: E402
from rag.search import PostSearcher  # noqa: E402
from rag.settings import Settings  # noqa: E402

QUERIES = ["санкции против банков", "курс доллара на бирже", "выборы президента",
           "новый смартфон samsung"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with Index.open(Settings(data_dir=args.data_dir), purpose="bench profile") as index:
        searcher = PostSearcher(index)
        searcher.search("повышение ключевой ставки", k=10, mode=args.mode)  # warm-up
        started = time.perf_counter()
        for q in QUERIES:
            searcher.search(q, k=10, mode=args.mode)
        took = (time.perf_counter() - started) / len(QUERIES)
        print(f"{args.mode}: {took:.3f} s per query over {index.store.count()} points")
        profile = cProfile.Profile()
        profile.enable()
        for q in QUERIES:
            searcher.search(q, k=10, mode=args.mode)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
