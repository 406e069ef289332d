"""Where a search spends its time: inside the engine vs outside it, and a profile of the outside.

Opens an existing index (e.g. one ``bench/search.py`` built; ``--collection`` for those), takes
``--queries`` word windows cut from its chunks (seeded) and, per mode:

1. runs each query once in a fresh process state (the query embedding and the lemma caches
   cold) and once more warm, timing ``PostSearcher.search`` (k=10) and the store's search calls
   inside it: *engine* = the store's calls, *outside* = the rest (embedding, fusion, collapsing,
   snippets, hits);
2. replays the engine's answers (recorded in step 1) so that only the outside part runs, each
   query ``--repeat`` times, keeping each query's fastest run: wall and CPU milliseconds without
   the noise other processes add (this is the figure the ≤ 10 ms goal is about);
3. with ``--profile``, a cProfile of the replayed (outside-only) searches.

Usage: python bench/profile_search.py --data-dir DIR [--collection NAME] [--modes hybrid]
                                      [--queries 100] [--repeat 5] [--profile] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_corpus import word_window_queries  # noqa: E402

from rag.index import Index  # noqa: E402
from rag.search import PostSearcher  # noqa: E402
from rag.settings import Settings  # noqa: E402

SEED = 20240501


class RecordingStore:
    """The store with its search calls timed and their answers recorded, or replayed."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.answers: dict[tuple[Any, ...], Any] = {}
        self.replay = False
        self.spent = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _call(self, key: tuple[Any, ...], fetch: Callable[[], Any]) -> Any:
        if self.replay:
            return self.answers[key]
        t0 = time.perf_counter()
        try:
            found = fetch()
        finally:
            self.spent += time.perf_counter() - t0
        self.answers[key] = found
        return found

    def search_dense(self, vector: Any, flt: Any, limit: int, *, fields: Any = None) -> Any:
        return self._call(("dense", tuple(vector), flt, limit, fields),
                          lambda: self._store.search_dense(vector, flt, limit, fields=fields))

    def search_sparse(self, vector: Any, flt: Any, limit: int, *, fields: Any = None) -> Any:
        return self._call(("sparse", tuple(vector.indices), flt, limit, fields),
                          lambda: self._store.search_sparse(vector, flt, limit, fields=fields))

    def chunks_by_id(self, point_ids: Any) -> Any:
        return self._call(("ids", tuple(point_ids)),
                          lambda: self._store.chunks_by_id(point_ids))


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--collection", default=None, help="default: TGRAG_COLLECTION's default")
    ap.add_argument("--modes", default="dense,sparse,hybrid")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile the replayed searches")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    extra = {"collection": args.collection} if args.collection else {}
    settings = Settings(data_dir=args.data_dir, _env_file=None, **extra)  # type: ignore[call-arg]
    with Index.open(settings, purpose="bench profile") as index:
        texts = [c.text for _, c in zip(range(5000), index.store.scroll(fields=["text"]),
                                        strict=False)]
        queries = [q for _, q in word_window_queries(texts, args.queries, SEED)]
        store = RecordingStore(index.store)
        searcher = PostSearcher(replace(index, store=store))
        print(f"{index.store.count()} points, {len(queries)} queries, k=10")
        for mode in (m for m in args.modes.split(",") if m):
            store.replay = False
            runs: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
            for state in ("cold", "warm"):  # the first pass meets every query for the first time
                for q in queries:
                    store.spent = 0.0
                    t0 = time.perf_counter()
                    searcher.search(q, k=10, mode=mode)
                    runs[state].append(((time.perf_counter() - t0) * 1000, store.spent * 1000))
            store.replay = True
            wall: list[float] = []
            cpu: list[float] = []
            for q in queries:
                best_wall = best_cpu = float("inf")
                for _ in range(args.repeat):
                    w0, c0 = time.perf_counter(), time.thread_time()
                    searcher.search(q, k=10, mode=mode)
                    best_cpu = min(best_cpu, (time.thread_time() - c0) * 1000)
                    best_wall = min(best_wall, (time.perf_counter() - w0) * 1000)
                wall.append(best_wall)
                cpu.append(best_cpu)
            for state, rows in runs.items():
                print(f"{mode} {state}: search p50 {p50([t for t, _ in rows])} ms, in the engine "
                      f"{p50([e for _, e in rows])} ms, outside {p50([t - e for t, e in rows])} ms")
            print(f"{mode} outside the engine alone (engine answers replayed, best of "
                  f"{args.repeat}): p50 {p50(wall)} ms wall, {p50(cpu)} ms CPU; "
                  f"p95 {round(sorted(wall)[int(0.95 * (len(wall) - 1))], 2)} ms wall")
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                for q in queries:
                    searcher.search(q, k=10, mode=mode)
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
