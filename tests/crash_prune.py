"""Helper for tests/test_prune_crash.py: a prune run to kill.

Not a test module (no ``test_`` prefix).  Run as a script it prunes ``data_dir`` of every post
dated before ``--cutoff`` (unix seconds) in batches of ``--batch`` posts, printing ``deleted <n>``
after each batch, and can kill itself with SIGKILL at an exact point of the deletion order
(``ingest.deletion.delete_posts``: store, docstore, catalog):

- ``--die after-store:N``    right after the N-th batch's store delete (docstore, catalog intact);
- ``--die in-docstore:N``    halfway through the N-th batch's docstore deletes;
- ``--die before-catalog:N`` after the N-th batch's docstore deletes, before the catalog's.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _arm(mode: str, index: object) -> None:
    import ingest.deletion as deletion

    kind, _, nth = mode.partition(":")
    target = int(nth)
    calls = {"batch": 0, "forgotten": 0}
    store = index.store  # type: ignore[attr-defined]
    catalog = index.catalog  # type: ignore[attr-defined]
    original_delete = store.delete_docs
    original_forget = deletion._forget_document
    original_catalog = type(catalog).forget_posts

    def delete_docs(doc_ids):  # type: ignore[no-untyped-def]
        calls["batch"] += 1
        calls["forgotten"] = 0
        original_delete(doc_ids)
        if kind == "after-store" and calls["batch"] == target:
            store.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        calls["size"] = len(doc_ids)

    def forget(idx, doc_id):  # type: ignore[no-untyped-def]
        original_forget(idx, doc_id)
        calls["forgotten"] += 1
        if kind == "in-docstore" and calls["batch"] == target \
                and calls["forgotten"] == calls["size"] // 2:
            os.kill(os.getpid(), signal.SIGKILL)

    def forget_posts(self, channel_id, message_ids):  # type: ignore[no-untyped-def]
        if kind == "before-catalog" and calls["batch"] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_catalog(self, channel_id, message_ids)

    store.delete_docs = delete_docs
    deletion._forget_document = forget  # type: ignore[assignment]
    type(catalog).forget_posts = forget_posts  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--cutoff", type=float, required=True)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--die", default="")
    args = ap.parse_args()

    from ingest.retention import DAY, RetentionPolicy, plan_prune, prune
    from rag.index import Index
    from rag.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir), _env_file=None)  # type: ignore[call-arg]
    index = Index.open(settings, purpose="crash-test prune")
    if args.die:
        _arm(args.die, index)
    print(f"opened {os.getpid()}", flush=True)
    plans = plan_prune(index, RetentionPolicy(), older_than=(time.time() - args.cutoff) / DAY)
    print(f"planned {sum(len(p.expired) for p in plans)}", flush=True)
    done = {"n": 0}

    def on_batch(_plan, n):  # type: ignore[no-untyped-def]
        done["n"] += n
        print(f"deleted {done['n']}", flush=True)

    prune(index, plans, batch=args.batch, on_batch=on_batch)
    print("finished", flush=True)
    index.close()


if __name__ == "__main__":
    main()
