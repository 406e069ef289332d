"""Search benchmark: the same 25k- and 100k-post indexes in every engine, side by side, one run.

Indexes (built once per size and engine, cached under ``--out``, default ``bench/out/search``):

* ``25k``: the 22,099 real posts of the news set + 2,901 real BEIR paragraphs (danetqa, then
  xquad_r_en sentences) as posts of a top-up channel, as ``bench/load.py --top-up-to`` does;
* ``100k``: the 22,099 real posts + 77,901 perturbed copies of them (distinct ids and dates;
  ``bench/bench_corpus.py`` says how they are made);
* 10 % of the posts (seeded) belong to a second tenant, ``bench2``: every search carries a tenant
  condition, and the ``tenant`` filter is a search as that smaller tenant.

Vectors are not re-embedded: a real post's chunks get the shared vector of that post (the bundled
model's, ``../shared/data/.../vectors``); the 2,901 paragraphs are embedded once with the bundled
model and cached (``OUT/beir_vectors.npy``).  Chunks (the pipeline's splitter), sparse vectors
(our encoder) and tags (the keyword tagger, corpus-wide frequencies) come from our own code.
Everything is written through the store (``Chunk`` s upserted: a fresh folder has nothing stale
to delete), the docstore and the channel catalog, so ``tgrag serve`` and ``bench/load.py`` can
open the folder.

Then, for each size and engine, in a subprocess of its own (so RSS is that engine's): open time,
RSS, disk, and for each mode (dense, sparse, hybrid) × filter (none, channel, date range, tag,
tenant) the latency of ``PostSearcher.search`` (k=10) split into the time inside the engine (the
store's search calls) and outside it.  A first, cold pass (hybrid, no filter) measures what a new
query costs outside the engine in a fresh process (query embedding, cold lemma cache); the cells
after it run warm (query embeddings in the LRU).  Engines: ``local`` (qdrant-client's local mode),
``edge`` (the Qdrant engine in-process, ``rag.store.edge``; skipped with a message when this branch
has none), ``server`` when ``TGRAG_QDRANT_URL`` is set.

Usage: python bench/search.py [--sizes 25k,100k] [--engines local,edge] [--queries 200]
                              [--budget 20] [--min-queries 20] [--out DIR] [--json PATH]
                              [--build-only]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pickle
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_corpus import (  # noqa: E402
    BenchPost,
    Corpus,
    copy_of,
    copy_plan,
    perturbed_vector,
    real_posts,
    real_vectors,
    topup_posts,
    word_window_queries,
)

from ingest.documents import Post  # noqa: E402
from rag.ids import DEFAULT_TENANT, chunk_id  # noqa: E402
from rag.settings import Settings  # noqa: E402

SIZES = {"25k": 25_000, "100k": 100_000, "3k": 3_000}  # 3k: a quick check of the script
SEED = 20240501
OTHER_TENANT = "bench2"
TENANT_SHARE = 0.10
BUILD_VERSION = 2  # bump when what a build writes changes (2: the build ends with optimize)
MODES = ("dense", "sparse", "hybrid")
FILTERS = ("none", "channel", "date", "tag", "tenant")
DATE_WINDOW = 15 * 86_400  # ± around the query's post: a 30-day range
WRITE_BATCH = 512
DEFAULT_OUT = REPO / "bench" / "out" / "search"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the corpus -----------------------------------------------------------------------------------


def beir_vectors(out: Path, posts: list[Post]) -> np.ndarray:
    """The bundled model's passage vectors of the top-up posts, embedded once and cached."""
    digest = hashlib.sha256("\x00".join(p.text for p in posts).encode()).hexdigest()[:16]
    path = out / f"beir_vectors-{len(posts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    from rag.embeddings import build_embedding

    model = build_embedding(Settings(_env_file=None)).model  # type: ignore[call-arg]
    log(f"embedding {len(posts)} BEIR paragraphs once (cached in {path})…")
    started = time.perf_counter()
    rows: list[list[float]] = []
    for i in range(0, len(posts), 64):
        rows += model.get_text_embedding_batch([p.text for p in posts[i:i + 64]])
        log(f"  {len(rows)}/{len(posts)} ({time.perf_counter() - started:.0f} s)")
    vectors = np.asarray(rows, dtype=np.float16)
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def prepare(size: str, out: Path) -> Corpus:
    """The posts of one size with tags, chunks, sparse vectors and vector rows (cached)."""
    cache = out / f"corpus-{size}-v{BUILD_VERSION}.pkl"
    if cache.exists():
        with cache.open("rb") as fh:
            corpus: Corpus = pickle.load(fh)
        return corpus
    from ingest.splitting import PostSplitter
    from ingest.tagging import KeywordTagger
    from rag.embeddings import build_embedding
    from rag.sparse import SparseEncoder

    started = time.perf_counter()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    total = SIZES[size]
    real = real_posts(settings.max_post_chars)
    vectors = real_vectors(real)
    base = list(real)
    copies: list[tuple[Post, int]] = []  # (copy, row of its original)
    if total <= len(real):  # a quick check: a seeded sample of the real posts
        keep = sorted(random.Random(SEED).sample(range(len(real)), total))
        base, vectors = [real[i] for i in keep], vectors[keep]
    elif total <= len(real) + 5000:  # 25k: top up with real paragraphs
        extra = topup_posts(total - len(real))
        base += extra
        vectors = np.concatenate([vectors, beir_vectors(out, extra)])
    else:
        rng = random.Random(SEED)
        copies = [(copy_of(real[i], j, rng), i) for j, i in copy_plan(len(real), total, SEED)]
    log(f"{size}: tagging {len(base)} posts…")
    tags = KeywordTagger().tag_texts([p.text for p in base])
    emb = build_embedding(settings)
    splitter = PostSplitter(emb.count_tokens,
                            chunk_tokens=min(settings.chunk_tokens, emb.max_tokens - 16))
    encoder = SparseEncoder()
    tenant_rng = random.Random(SEED + 1)

    def bench_post(post: Post, post_tags: list[str], row: int) -> BenchPost:
        if tenant_rng.random() < TENANT_SHARE:
            post = replace(post, tenant=OTHER_TENANT)
        nodes = splitter.get_nodes_from_documents([post.to_document()])
        chunks = [(n.get_content(), encoder.encode_document(n.get_content())) for n in nodes]
        return BenchPost(post, post_tags, chunks, row)

    log(f"{size}: splitting and sparse-encoding {total} posts…")
    posts = [bench_post(p, t, i) for i, (p, t) in enumerate(zip(base, tags, strict=True))]
    if copies:
        noise = np.random.default_rng(SEED)
        rows = np.stack([perturbed_vector(vectors[i], noise) for _, i in copies])
        first = len(vectors)
        vectors = np.concatenate([vectors, rows.astype(np.float16)])
        posts += [bench_post(c, tags[i], first + k) for k, (c, i) in enumerate(copies)]
    corpus = Corpus(posts, vectors)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"queries-{size}.json").write_text(json.dumps(
        queries([bp.post for bp in posts[:len(base)]], tags), ensure_ascii=False))
    with cache.open("wb") as fh:
        pickle.dump(corpus, fh, protocol=pickle.HIGHEST_PROTOCOL)
    log(f"{size}: {len(posts)} posts, {sum(len(p.chunks) for p in posts)} chunks prepared in "
        f"{time.perf_counter() - started:.0f} s")
    return corpus


def queries(posts: list[Post], tags: list[list[str]]) -> list[dict[str, Any]]:
    """Word windows of the size's real posts, each with its post's channel, date and first tag
    for the filtered runs."""
    found = word_window_queries([p.text for p in posts], 400, SEED)
    return [{"q": text, "channel_id": posts[i].channel_id, "date": posts[i].date,
             "tag": tags[i][0]} for i, text in found if tags[i]]


def load_queries(out: Path, size: str, n: int) -> list[dict[str, Any]]:
    return list(json.loads((out / f"queries-{size}.json").read_text()))[:n]


# -- engines --------------------------------------------------------------------------------------


def available(engine: str) -> str | None:
    """``None`` when the engine can run here, else why not."""
    if engine == "edge" and importlib.util.find_spec("rag.store.edge") is None:
        return "rag.store.edge is not on this branch yet"
    if engine == "server" and not os.environ.get("TGRAG_QDRANT_URL"):
        return "TGRAG_QDRANT_URL is not set"
    if engine not in ("local", "edge", "server"):
        return f"unknown engine {engine!r} (local, edge, server)"
    return None


def engine_settings(engine: str, data_dir: Path, size: str) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "collection": f"bench_{size}"}
    if engine == "server":
        values["qdrant_url"] = os.environ["TGRAG_QDRANT_URL"]
        values["qdrant_api_key"] = os.environ.get("TGRAG_QDRANT_API_KEY") or None
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def open_index(engine: str, settings: Settings, embedding: Any = None) -> Any:
    """The index of one engine (the only engine-specific code of this script).

    ``edge`` and ``server`` are what ``Index.open`` picks for the settings (the embedded default,
    or ``TGRAG_QDRANT_URL``); ``local`` is qdrant-client's local mode, asked for explicitly since
    it need not be the embedded default.  Each worker process opens one engine only.
    """
    from rag import index as index_module

    if engine == "local":
        from rag.store.qdrant import QdrantStore

        def open_local(settings: Settings, model_name: str, dim: int) -> QdrantStore:
            return QdrantStore.local(settings.qdrant_path, settings.collection, model_name, dim)

        index_module.open_store = open_local  # type: ignore[assignment]
    return index_module.Index.open(settings, purpose="bench search", embedding=embedding)


def data_dir_of(out: Path, size: str, engine: str) -> Path:
    return out / f"{size}-{engine}" / "data"


def disk_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    # Allocated blocks, as du counts them: the engine preallocates its write-ahead log and
    # segment files, whose apparent size (st_size) is far above what they occupy.
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# -- build ----------------------------------------------------------------------------------------


def build(size: str, engine: str, out: Path) -> dict[str, Any]:
    """Write one size into one engine (skipped when a build of this version is there)."""
    from rag.store import Chunk, SparseVector

    data_dir = data_dir_of(out, size, engine)
    marker = data_dir.parent / "built.json"
    if marker.exists():
        built = json.loads(marker.read_text())
        if built.get("version") == BUILD_VERSION:
            return dict(built)
    # Two runs over the same --out must not build the same index at once (the second would delete
    # the first's folder): the builder's pid is recorded until its build is done.
    owner = data_dir.parent / "building.pid"
    if owner.exists():
        pid = int(owner.read_text().strip() or 0)
        import psutil

        if pid and pid != os.getpid() and psutil.pid_exists(pid):
            raise SystemExit(f"{size}/{engine} is being built by process {pid}: run again when "
                             "it is done")
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    data_dir.parent.mkdir(parents=True)
    owner.write_text(str(os.getpid()))
    corpus = prepare(size, out)
    vectors = corpus.vectors.astype(np.float32)
    started = time.perf_counter()
    settings = engine_settings(engine, data_dir, size)
    index = open_index(engine, settings)
    try:
        batch: list[Any] = []
        docs: list[Any] = []
        by_tenant: dict[str, list[tuple[int, str, str, int, int]]] = {}
        for n, bp in enumerate(corpus.posts, 1):
            doc = bp.post.to_document()
            doc.metadata["tags"] = list(bp.tags)
            doc.metadata["tag_source"] = "keywords"
            dense = vectors[bp.vector].tolist()
            for k, (text, (indices, values)) in enumerate(bp.chunks):
                batch.append(Chunk(node_id=chunk_id(doc.doc_id, k), doc_id=doc.doc_id, text=text,
                                   dense=dense, sparse=SparseVector(indices, values),
                                   metadata=dict(doc.metadata)))
            docs.append(doc)
            p = bp.post
            by_tenant.setdefault(p.tenant, []).append(
                (p.channel_id, p.channel, p.channel_title, p.message_id, p.date))
            if len(batch) >= WRITE_BATCH or n == len(corpus.posts):
                # A fresh folder has no stale chunks to delete: the upsert half of
                # ChunkStore.write only (its delete half scans every point per batch in local
                # mode, which made the 100k local build quadratic).
                index.store._upsert(batch)
                index.store.flush()
                index.docstore.add_documents(docs)
                batch, docs = [], []
                if n % (WRITE_BATCH * 20) < WRITE_BATCH or n == len(corpus.posts):
                    log(f"  {size}/{engine}: {n}/{len(corpus.posts)} posts "
                        f"({time.perf_counter() - started:.0f} s)")
        for tenant, rows in by_tenant.items():
            view = index if tenant == DEFAULT_TENANT else index.for_tenant(tenant)
            view.catalog.record_posts(rows)
        write_s = time.perf_counter() - started
        # What the end of `tgrag ingest` does: the edge engine builds its HNSW graph and payload
        # indexes only here (a no-op for local mode and a server).
        log(f"  {size}/{engine}: optimizing…")
        t_opt = time.perf_counter()
        index.store.optimize()
        optimize_s = time.perf_counter() - t_opt
        points = index.store.count()
    finally:
        index.close()
    built = {"version": BUILD_VERSION, "size": size, "engine": engine,
             "posts": len(corpus.posts), "points": points,
             "write_s": round(write_s, 1), "optimize_s": round(optimize_s, 1),
             "build_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(built, indent=2))
    owner.unlink(missing_ok=True)
    return built


# -- measure --------------------------------------------------------------------------------------


class TimedStore:
    """The store with its search calls timed (the engine's share of a search)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.spent = 0.0
        self.cpu = 0.0  # this thread's CPU seconds inside the calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _timed(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.spent += time.perf_counter() - t0
            self.cpu += time.thread_time() - c0

    def search_dense(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._store.search_dense, *args, **kwargs)

    def search_sparse(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._store.search_sparse, *args, **kwargs)

    def chunks_by_id(self, *args: Any) -> Any:  # the winners' payloads: the engine's work too
        return self._timed(self._store.chunks_by_id, *args)


def pct(values: Sequence[float], p: float) -> float:
    ms = sorted(values)
    return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2) if ms else float("nan")


def summary(total: list[float], engine: list[float], embed: list[float],
            outside_cpu: list[float]) -> dict[str, Any]:
    outside = [t - e - m for t, e, m in zip(total, engine, embed, strict=True)]
    return {"n": len(total),
            "p50": pct(total, 50), "p95": pct(total, 95), "p99": pct(total, 99),
            "engine_p50": pct(engine, 50), "engine_p95": pct(engine, 95),
            "engine_p99": pct(engine, 99),
            "outside_p50": pct(outside, 50), "outside_p95": pct(outside, 95),
            "outside_cpu_p50": pct(outside_cpu, 50),
            "embed_p50": pct(embed, 50),
            "mean": round(statistics.fmean(total), 2) if total else float("nan")}


def measure(size: str, engine: str, out: Path, n_queries: int, budget: float,
            min_queries: int) -> dict[str, Any]:
    """Open one engine's index and time every mode × filter (runs in its own process)."""
    from rag.embeddings import build_embedding
    from rag.search import PostSearcher, SearchFilters

    qs = load_queries(out, size, n_queries)
    data_dir = data_dir_of(out, size, engine)
    settings = engine_settings(engine, data_dir, size)
    embedding = build_embedding(settings)
    embedding.embed_query("прогрев модели")  # the model's first call is slow, and not the index's
    rss_before = rss_mb()
    t0 = time.perf_counter()
    index = open_index(engine, settings, embedding)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()
    timed = TimedStore(index.store)
    searcher = PostSearcher(replace(index, store=timed))
    embed_spent = [0.0, 0.0]  # wall, CPU
    embed = searcher.retriever.embed_query

    def timed_embed(text: str) -> list[float]:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return embed(text)
        finally:
            embed_spent[0] += time.perf_counter() - t
            embed_spent[1] += time.thread_time() - c

    searcher.retriever.embed_query = timed_embed

    def run(q: dict[str, Any], mode: str, flt: str) -> tuple[float, float, float, float]:
        filters = SearchFilters()
        if flt == "channel":
            filters.channel_ids = [q["channel_id"]]
        elif flt == "date":
            filters.since, filters.until = q["date"] - DATE_WINDOW, q["date"] + DATE_WINDOW
        elif flt == "tag":
            filters.tags = [q["tag"]]
        elif flt == "tenant":
            filters.tenant = OTHER_TENANT
        timed.spent, timed.cpu, embed_spent[0], embed_spent[1] = 0.0, 0.0, 0.0, 0.0
        t, c = time.perf_counter(), time.thread_time()
        searcher.search(q["q"], filters, k=10, mode=mode)
        outside_cpu = time.thread_time() - c - timed.cpu - embed_spent[1]
        return ((time.perf_counter() - t) * 1000, timed.spent * 1000, embed_spent[0] * 1000,
                outside_cpu * 1000)

    def cell(mode: str, flt: str) -> dict[str, Any]:
        rows: list[tuple[float, float, float, float]] = []
        deadline = time.perf_counter() + budget
        for q in qs:
            rows.append(run(q, mode, flt))
            if time.perf_counter() > deadline and len(rows) >= min_queries:
                break
        return summary(*(list(col) for col in zip(*rows, strict=True)))

    try:
        first = run(qs[0], "hybrid", "none")
        cold = cell("hybrid", "none")  # new queries: embedding and lemma caches cold
        # The cold cell may stop (--budget) before the last query: embed the rest now, so that
        # the warm cells really are warm (the first of them timed the model for those otherwise).
        for q in qs:
            embed(q["q"])
        cells = {f"{mode}/{flt}": cell(mode, flt) for mode in MODES for flt in FILTERS}
        points = index.store.count()
    finally:
        index.close()
    return {"size": size, "engine": engine, "points": points, "open_s": round(open_s, 2),
            "first_search_ms": round(first[0], 1), "rss_open_mb": round(rss_open - rss_before, 1),
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "disk_mb": round(disk_mb(data_dir) - disk_mb(settings.redis_dir), 1),
            "cold": cold, "cells": cells}


# -- the run --------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    if args.worker == "build":
        result = build(args.size, args.engine, args.out)
    else:
        result = measure(args.size, args.engine, args.out, args.queries, args.budget,
                         args.min_queries)
    print(json.dumps(result))


def in_subprocess(kind: str, size: str, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--size", size, "--engine", engine,
           "--out", str(args.out), "--queries", str(args.queries), "--budget", str(args.budget),
           "--min-queries", str(args.min_queries)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {size}/{engine} failed (exit {proc.returncode})")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| size | engine | points | open s | RSS MB (engine / process) | disk MB |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['size']} | {r['engine']} | {r['points']:,} | {r['open_s']} | "
                     f"{r['rss_open_mb']} / {r['peak_rss_mb']} | {r['disk_mb']} |")
    lines += ["", "cold pass (hybrid, no filter, each query new to the process), p50 ms: "
              "search / in the engine / query embedding / the rest outside (CPU)"]
    for r in results:
        c = r["cold"]
        lines.append(f"- {r['size']} {r['engine']}: {c['p50']} / {c['engine_p50']} / "
                     f"{c['embed_p50']} / {c['outside_p50']} ({c['outside_cpu_p50']})")
    lines += ["", "| size | mode | filter | engine | n | search p50 / p95 / p99 ms | "
              "in engine p50 / p95 / p99 ms | outside p50 ms (CPU) |",
              "|---|---|---|---|---:|---|---|---:|"]
    for size in dict.fromkeys(r["size"] for r in results):
        for key in results[0]["cells"]:
            mode, flt = key.split("/")
            for r in (r for r in results if r["size"] == size):
                c = r["cells"][key]
                lines.append(f"| {size} | {mode} | {flt} | {r['engine']} | {c['n']} | "
                             f"{c['p50']} / {c['p95']} / {c['p99']} | {c['engine_p50']} / "
                             f"{c['engine_p95']} / {c['engine_p99']} | {c['outside_p50']} "
                             f"({c['outside_cpu_p50']}) |")
    return "\n".join(lines)


HYBRID_P95_GOAL_MS = 30.0  # issue 11: at 100k posts, inside the search call, any filter


def goals(results: list[dict[str, Any]]) -> str:
    """Issue 11's search goals against the figures: met, or missed by how much."""
    lines = ["", "goals:"]
    for r in (r for r in results if r["size"] == "100k" and r["engine"] != "local"):
        for flt in FILTERS:
            p95 = r["cells"][f"hybrid/{flt}"]["p95"]
            goal = HYBRID_P95_GOAL_MS
            verdict = ("met" if p95 <= goal else
                       f"MISSED by {p95 - goal:.1f} ms ({p95 / goal:.1f}×)")
            lines.append(f"- 100k {r['engine']} hybrid/{flt}: p95 {p95} ms vs ≤ "
                         f"{goal:.0f} ms: {verdict}")
    for size in dict.fromkeys(r["size"] for r in results):
        local = next((r for r in results if r["size"] == size and r["engine"] == "local"), None)
        for r in (r for r in results if r["size"] == size and r["engine"] != "local"):
            if local is None:
                continue
            slower = [k for k, c in r["cells"].items() if c["p50"] > local["cells"][k]["p50"]]
            lines.append(f"- {size} {r['engine']} slower than local mode (p50) in: "
                         f"{', '.join(slower) or 'no cell'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="25k,100k")
    ap.add_argument("--engines", default="local,edge,server")
    ap.add_argument("--queries", type=int, default=200, help="queries per cell (at most)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds per cell; a cell stops after it once it has --min-queries")
    ap.add_argument("--min-queries", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--worker", choices=("build", "measure"), help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = [s for s in args.sizes.split(",") if s]
    for size in sizes:
        if size not in SIZES:
            raise SystemExit(f"unknown size {size!r} ({', '.join(SIZES)})")
    engines = []
    for engine in (e for e in args.engines.split(",") if e):
        why = available(engine)
        if why:
            log(f"{engine}: skipped ({why})")
        else:
            engines.append(engine)
    results = []
    for size in sizes:
        prepare(size, args.out)  # once, in this process: the workers read the cache
        for engine in engines:
            built = in_subprocess("build", size, engine, args)
            log(f"{size}/{engine}: {built['posts']:,} posts, {built['points']:,} points "
                f"(built in {built['build_s']} s, of which optimize {built['optimize_s']} s)")
        if args.build_only:
            continue
        for engine in engines:
            log(f"{size}/{engine}: measuring…")
            results.append(in_subprocess("measure", size, engine, args))
    if results:
        print(table(results))
        print(goals(results))
        if args.json:
            args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
