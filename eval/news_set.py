"""The Russian news question set as a BEIR folder, built from the shared posts at run time.

``eval/sets/news_ru/`` holds only questions, gold answers and post ids (the post texts belong to
their channels and stay in the data folder):

* ``questions.jsonl``: ``{"id", "question", "answers": [...], "post_ids": ["tg:<channel>:<msg>",
  ...]}``, questions about one news post each, every answer an exact span of that post; the
  post's near-duplicate copies in other channels are listed too (any of them is a right source);
* ``no_answer.jsonl``: ``{"id", "question"}``, news-like questions whose answer is nowhere in
  the 22,099 posts (2023-08 … 2024-12), for the "nothing relevant found" floor.

``python -m eval.news_set --out DIR`` writes ``corpus.jsonl`` (the posts as the readers give them
to the pipeline: markup stripped), ``queries.jsonl`` (answerable questions with
``metadata.answers``, the others with ``metadata.no_answer: true``) and ``qrels.tsv``;
``tgrag eval answers --dataset DIR`` then grades the QA on them.  ``--max-corpus N`` keeps the
question posts plus a seeded sample of the others, for runs that cannot embed all 22,099 posts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from ingest.documents import Post
from ingest.readers import read_paths
from rag.errors import InputError

SETS = Path(__file__).parent / "sets" / "news_ru"
DEFAULT_POSTS = Path("../shared/data/telegram/nktkln_telegram_news/raw")


def load_questions(folder: Path = SETS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The answerable and the no-answer questions of the set."""
    def read(name: str) -> list[dict[str, Any]]:
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return read("questions.jsonl"), read("no_answer.jsonl")


def write_dataset(posts_dir: Path, out: Path, max_corpus: int | None = None, seed: int = 0,
                  folder: Path = SETS) -> dict[str, int]:
    """Write the BEIR folder; returns counts (docs, answerable, no-answer questions)."""
    answerable, no_answer = load_questions(folder)
    posts = {f"tg:{p.channel_id}:{p.message_id}": p
             for p in read_paths([posts_dir]) if isinstance(p, Post)}
    wanted = {pid for q in answerable for pid in q["post_ids"]}
    missing = sorted(wanted - posts.keys())
    if missing:
        raise InputError(f"{len(missing)} question posts are not in {posts_dir} "
                         f"(e.g. {missing[0]})", hint="pass the folder of the news set's raw posts")
    keep = list(posts)
    if max_corpus is not None and max_corpus < len(keep):
        others = [pid for pid in keep if pid not in wanted]
        random.Random(seed).shuffle(others)
        chosen = wanted | set(others[:max(0, max_corpus - len(wanted))])
        keep = [pid for pid in keep if pid in chosen]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for pid in keep:
            p = posts[pid]
            meta = {"channel_id": p.channel_id, "channel": p.channel,
                    "message_id": p.message_id, "date": p.date}
            f.write(json.dumps({"_id": pid, "title": "", "text": p.text, "metadata": meta},
                               ensure_ascii=False) + "\n")
    kept = set(keep)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in answerable:
            meta = {"answers": q["answers"], "post_ids": q["post_ids"]}
            f.write(json.dumps({"_id": q["id"], "text": q["question"], "metadata": meta},
                               ensure_ascii=False) + "\n")
        for q in no_answer:
            f.write(json.dumps({"_id": q["id"], "text": q["question"],
                                "metadata": {"no_answer": True}}, ensure_ascii=False) + "\n")
    with (out / "qrels.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in answerable:
            for pid in q["post_ids"]:
                if pid in kept:
                    f.write(f"{q['id']}\t{pid}\t1\n")
    return {"docs": len(keep), "answerable": len(answerable), "no_answer": len(no_answer)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the set to")
    parser.add_argument("--posts", type=Path, default=DEFAULT_POSTS,
                        help=f"the news set's raw posts (default {DEFAULT_POSTS})")
    parser.add_argument("--max-corpus", type=int, default=None,
                        help="question posts plus a sample of the others, N in all")
    parser.add_argument("--seed", type=int, default=0, help="seed of that sample")
    args = parser.parse_args(argv)
    try:
        counts = write_dataset(args.posts, args.out, args.max_corpus, args.seed)
    except InputError as err:
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['docs']} posts, {counts['answerable']} questions with an "
          f"answer, {counts['no_answer']} without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
