"""Time a digest on an existing index, stage by stage: reading the period's posts with their
stored vectors, grouping them into stories, ranking and summarising (offline: no LLM).

Usage (on a copy of a data folder: embedded mode takes the folder while it runs):
    nice -n 10 python bench/digest_time.py DATA_DIR --since 2024-11-27 --until 2024-11-27 -n 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.services import Services  # noqa: E402
from rag.digest import DigestBuilder, group_stories, parse_period  # noqa: E402
from rag.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--since", default="1d")
    parser.add_argument("--until", default=None)
    parser.add_argument("-n", "--repeat", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    settings = Settings(data_dir=args.data_dir, _env_file=None)  # type: ignore[call-arg]
    with Services.open(settings, purpose="bench digest", llm=None) as services:
        opened = time.perf_counter() - started
        since, until = parse_period(args.since, args.until)
        times: dict[str, list[float]] = {"read": [], "group": [], "whole digest": []}
        for _ in range(args.repeat):
            filters = services.filters()
            filters.since, filters.until, filters.tenant = since, until, services.tenant
            t0 = time.perf_counter()
            posts, _ = DigestBuilder(services.index).read_posts(filters)
            t1 = time.perf_counter()
            group_stories([p.text for p in posts], [p.vector for p in posts],
                          copy_threshold=settings.duplicate_threshold,
                          topic_threshold=settings.digest_cluster_threshold)
            t2 = time.perf_counter()
            digest = services.digest(since, until)
            t3 = time.perf_counter()
            times["read"].append(t1 - t0)
            times["group"].append(t2 - t1)
            times["whole digest"].append(t3 - t2)
    print(f"{digest.posts} posts, {digest.stories_total} stories; opening the services "
          f"{opened:.1f} s")
    print("| stage | median s | min s |")
    print("|---|---|---|")
    for stage, values in times.items():
        print(f"| {stage} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    main()
