"""Helper for tests/test_crash_safety.py: a deterministic corpus, and an ingest run to kill.

Not a test module (no ``test_`` prefix).  Run as a script it ingests ``make_posts(n, version)``
into ``data_dir`` with small batches, printing ``committed <n>`` after each committed batch, and can
kill itself with SIGKILL at an exact point of the write order:

- ``--die after-add:N``   right after the N-th store write (``ChunkStore.write``: the vectors
  written, the docstore not);
- ``--die before-delete:N`` inside the N-th store write, after the upsert and before the
  deletion of the chunks a post no longer has.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ingest.documents import Post  # noqa: E402

CHANNEL_ID = 1000724666
WORDS = ["погода", "выборы", "футбол", "биржа", "театр", "наука", "дороги", "школа", "налоги",
         "музей", "космос", "река"]
LONG_EVERY = 50  # post i with i % LONG_EVERY == 7 is long (two chunks) in version 0


def long_text(i: int) -> str:
    sentence = (f"Подробный разбор номер {i}: городские службы обсуждают ремонт дорог, "
                f"новые маршруты автобусов и расписание электричек на следующий сезон. ")
    return "".join(f"Абзац {k}. " + sentence * 3 + "\n\n" for k in range(12))


def text_of(i: int, version: int) -> str:
    word = WORDS[i % len(WORDS)]
    if version == 0:
        if i % LONG_EVERY == 7:
            return long_text(i)
        return f"Пост {i}: {word}."
    # version 1: every third post is edited, and every long post becomes short
    if i % 3 == 0 or i % LONG_EVERY == 7:
        return f"Правка {i}: {word}, уточнено."
    return text_of(i, 0)


def make_posts(n: int, version: int = 0) -> list[Post]:
    return [
        Post(channel_id=CHANNEL_ID, message_id=i, date=1_700_000_000 + 60 * i,
             text=text_of(i, version), channel="crashtest", channel_title="Crash test",
             views=100 + i + 1000 * version)
        for i in range(1, n + 1)
    ]


def _arm(mode: str, store_class: type) -> None:
    """Kill this process at the point ``mode`` names, in the engine class the index opened."""
    kind, _, nth = mode.partition(":")
    target = int(nth)
    calls = {"write": 0}
    original_write = store_class.write
    original_delete = store_class._delete_stale

    def write(self, chunks):  # type: ignore[no-untyped-def]
        calls["write"] += 1
        out = original_write(self, chunks)
        if kind == "after-add" and calls["write"] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def delete_stale(self, keep):  # type: ignore[no-untyped-def]
        if kind == "before-delete" and calls["write"] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_delete(self, keep)

    store_class.write = write  # type: ignore[attr-defined]
    store_class._delete_stale = delete_stale  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--version", type=int, default=0)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--die", default="")
    args = ap.parse_args()

    from ingest.pipeline import PostPipeline
    from rag.index import Index
    from rag.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir), _env_file=None)  # type: ignore[call-arg]
    index = Index.open(settings, purpose="crash-test")
    if args.die:
        _arm(args.die, type(index.store))
    print(f"opened {os.getpid()}", flush=True)
    pipeline = PostPipeline(index, batch_size=args.batch)
    pipeline.ingest(make_posts(args.n, args.version),
                    on_progress=lambda done, _r: print(f"committed {done}", flush=True))
    print("finished", flush=True)
    index.close()


if __name__ == "__main__":
    main()
