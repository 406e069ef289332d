"""Ingestion benchmark over the 22k real posts in ../shared/data/telegram/nktkln_telegram_news/raw.

Prints, from one run on a fresh data folder:
  * first ingest: posts/s through the whole pipeline (tag → split → embed → store)
  * embedding only: posts/s of the bare model on the same post texts (a random sample)
  * pipeline overhead = time outside the embedding model ÷ time inside it, both measured inside
    the same ingest run, so load from other processes affects both sides alike   (target ≤ 30 %)
  * unchanged re-ingest: seconds, and speed-up over the first ingest (target ≥ 50×)
  * peak RSS of this process, and Redis memory

Usage: python bench/ingest.py [--sample N | --limit N] [--embed-sample N] [--data-dir DIR]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.documents import Post  # noqa: E402
from ingest.pipeline import PostPipeline  # noqa: E402
from ingest.readers import read_paths  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.settings import Settings  # noqa: E402

DEFAULT_RAW = REPO.parent / "shared" / "data" / "telegram" / "nktkln_telegram_news" / "raw"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_embedding_calls(model: object) -> list[float]:
    """Accumulate the seconds spent in the model's batch embedding method (returned list[0])."""
    spent = [0.0]
    inner = model._get_text_embeddings  # type: ignore[attr-defined]

    def timed(texts: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        try:
            return inner(texts)
        finally:
            spent[0] += time.perf_counter() - start

    # pydantic models refuse unknown attributes through __setattr__; this is a bench-only probe.
    object.__setattr__(model, "_get_text_embeddings", timed)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--raw", type=Path, default=DEFAULT_RAW)
    ap.add_argument("--limit", type=int, default=0, help="ingest only the first N posts")
    ap.add_argument("--sample", type=int, default=0,
                    help="ingest N posts drawn at random (seed 0) from all channels")
    ap.add_argument("--embed-sample", type=int, default=2000,
                    help="posts in the embedding-only sample (0 = all)")
    ap.add_argument("--data-dir", type=Path, default=None)
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

    index = Index.open(settings, purpose="bench")
    pipeline = PostPipeline(index)
    embed_clock = time_embedding_calls(index.embedding.model)

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
    embed_in_pipeline_s = embed_clock[0]
    print(f"first ingest: {first.new} new, {first.embedded_nodes} chunks in {first_s:.1f}s",
          flush=True)

    t2 = time.perf_counter()
    again = pipeline.ingest(posts)
    again_s = time.perf_counter() - t2
    print(f"unchanged re-ingest: {again.unchanged} unchanged, {again.embedded_nodes} embedded, "
          f"{again_s:.2f}s", flush=True)

    # Embedding only, same texts, same batch size, no pipeline around it.
    rng = random.Random(0)
    sample = posts if not args.embed_sample or args.embed_sample >= len(posts) else \
        rng.sample(posts, args.embed_sample)
    model = index.embedding.model
    bs = settings.embed_batch_size
    t3 = time.perf_counter()
    for i in range(0, len(sample), bs):
        model._get_text_embeddings([p.text for p in sample[i:i + bs]])  # type: ignore[attr-defined]
    embed_s = time.perf_counter() - t3

    redis_mb = index.redis.info("memory")["used_memory"] / 2**20
    stats = index.stats()
    index.close()

    pipe_rate = len(posts) / first_s
    embed_rate = len(sample) / embed_s
    figures = {
        "posts": len(posts),
        "chunks": first.embedded_nodes,
        "points": stats["points"],
        "first_ingest_s": round(first_s, 1),
        "pipeline_posts_per_s": round(pipe_rate, 2),
        "embedding_only_posts_per_s": round(embed_rate, 2),
        "embedding_sample": len(sample),
        "embedding_s_inside_ingest": round(embed_in_pipeline_s, 1),
        "pipeline_overhead": round((first_s - embed_in_pipeline_s) / embed_in_pipeline_s, 3),
        "unchanged_reingest_s": round(again_s, 2),
        "reingest_speedup": round(first_s / again_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "redis_used_mb": round(redis_mb, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
