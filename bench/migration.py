"""How long moving a local-mode index into the embedded engine takes (done once, at first open).

Builds (once, cached in ``--cache``) a qdrant-client local-mode folder of ``--posts`` posts as the
previous version stored them — the 22,099 real news posts' real vectors (topped up with perturbed
copies past 22,099), BM25 vectors from our encoder over the real texts, the pipeline's payload
keys — then, on a copy, runs :func:`rag.store.migration.migrate_local_mode` and checks that every
point arrived with the same payload and (unit) vector.  Prints the time to read local mode, to
write the engine, to build its search index, and the folder sizes.

Usage: nice -n 10 python bench/migration.py [--posts 22099] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.maintenance import DIM, MODEL, post_chunk, real_posts, unit  # noqa: E402
from rag.sparse import SparseEncoder  # noqa: E402
from rag.store import SparseVector  # noqa: E402
from rag.store.edge import EdgeStore  # noqa: E402
from rag.store.migration import migrate_local_mode  # noqa: E402
from rag.store.qdrant import QdrantStore  # noqa: E402

COLLECTION = "tgrag_posts"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_local(folder: Path, n: int) -> float:
    posts, vectors = real_posts()
    encoder = SparseEncoder()
    rng = np.random.default_rng(7)
    store = QdrantStore.local(folder, COLLECTION, MODEL, DIM)
    started = time.perf_counter()
    batch = []
    for i in range(n):
        j = i % len(posts)
        post = posts[j]
        indices, values = encoder.encode_document(post.text)
        copy = i // len(posts)
        vector = vectors[j] if copy == 0 else vectors[j] + rng.normal(0, 0.02, DIM)
        batch.append(post_chunk(post, unit(np.asarray(vector)),
                                SparseVector(list(indices), list(values)),
                                post.message_id + 1_000_000 * copy, int(post.date)))
        if len(batch) == 512:
            store.write(batch)
            batch = []
            log(f"  local mode: {i + 1}/{n}")
    store.write(batch)
    store.close()
    return time.perf_counter() - started


def size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=int, default=22_099)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) /
                    "tgrag-bench-migration")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cached = args.cache / f"local-{args.posts}"
    if not (cached / "meta.json").exists():
        log(f"building the local-mode folder of {args.posts} posts in {cached} (once)")
        shutil.rmtree(cached, ignore_errors=True)
        build_local(cached, args.posts)
    with tempfile.TemporaryDirectory() as tmp:
        local, root = Path(tmp) / "qdrant", Path(tmp) / "edge"
        shutil.copytree(cached, local)
        started = time.perf_counter()
        copied = migrate_local_mode(local, root, COLLECTION, optimize=False)
        copy_s = time.perf_counter() - started
        store = EdgeStore.open(root, COLLECTION, MODEL, DIM)
        started = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - started
        # Every point arrived intact.
        old = QdrantStore.local(local, COLLECTION, MODEL, DIM)
        try:
            want = {c.id: c.payload for c in old.scroll()}
            got = {c.id: c.payload for c in store.scroll()}
            assert got == want, "payloads differ"
            for c in list(old.scroll(page=512))[:2000:97]:
                a = old.chunks_of(c.doc_id, with_vectors=True)[0]
                b = store.chunks_of(c.doc_id, with_vectors=True)[0]
                assert a.dense and b.dense
                assert np.allclose(a.dense, b.dense, atol=1e-6), c.id
        finally:
            old.close()
        store.close()
        report = {"posts": args.posts, "points": copied,
                  "read_and_write_s": round(copy_s, 1), "optimize_s": round(optimize_s, 1),
                  "local_mode_mb": size_mb(local), "edge_mb": size_mb(root)}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
