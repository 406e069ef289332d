"""Helper for tests/test_alert_crash.py: an ingest with an alert, killed at an exact point.

Not a test module.  Run as a script it opens the services over ``data_dir`` (the real pipeline,
whose commit hook fills the alert outbox), saves the words alert ``пожар`` with a webhook to
``--url`` unless it exists (printing ``alert <id> <secret>``), ingests ``make_posts(n)`` in small
batches and then runs dispatcher passes until the outbox and the webhook queue are empty, printing
``finished <matches> <delivered>``.  ``--die`` kills it with SIGKILL:

- ``after-record:N`` — in the N-th batch, after the outbox recorded it, before the docstore commit;
- ``after-commit:N`` — right after the N-th batch's docstore commit (nothing checked yet);
- ``after-match:N``  — in the dispatcher, after the N-th recording of matches and deliveries;
- ``after-send:N``   — after the N-th webhook was answered 2xx, before the queue heard of it.
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

from ingest.documents import Post  # noqa: E402

CHANNEL_ID = 1000724667
WORDS = ["складе", "рынке", "заводе", "вокзале", "стройке", "парковке", "базе", "причале"]


def text_of(i: int) -> str:
    place = WORDS[i % len(WORDS)]
    if i % 3 == 0:
        return f"Пожар номер {i} на {place} потушили за час."
    return f"Сводка {i}: на {place} всё спокойно."


def make_posts(n: int) -> list[Post]:
    return [Post(channel_id=CHANNEL_ID, message_id=i, date=1_700_000_000 + 60 * i,
                 text=text_of(i), channel="crashalerts", channel_title="Crash alerts")
            for i in range(1, n + 1)]


def matching(n: int) -> list[str]:
    """The doc ids of ``make_posts(n)`` that the alert matches."""
    return [p.doc_id for p in make_posts(n) if p.message_id % 3 == 0]


def _kill_after(cls: type, name: str, target: int) -> None:
    original = getattr(cls, name)
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(cls, name, wrapped)


def _arm(mode: str) -> None:
    from ingest.pipeline import SafeUpsertPipeline
    from rag.alerts.outbox import OutboxRecorder
    from rag.alerts.store import AlertStore
    from rag.alerts.webhook import WebhookNotifier

    kind, _, nth = mode.partition(":")
    target = int(nth)
    if kind == "after-record":
        _kill_after(OutboxRecorder, "__call__", target)
    elif kind == "after-commit":
        _kill_after(SafeUpsertPipeline, "_update_docstore", target)
    elif kind == "after-match":
        _kill_after(AlertStore, "record", target)
    elif kind == "after-send":
        _kill_after(WebhookNotifier, "send", target)
    else:
        raise SystemExit(f"unknown --die {mode}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--die", default="")
    args = ap.parse_args()

    from api.services import Services
    from rag.alerts.delivery import DeliveryQueue
    from rag.alerts.outbox import Outbox
    from rag.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir), ingest_batch_size=args.batch,
                        _env_file=None)  # type: ignore[call-arg]
    services = Services.open(settings, purpose="crash-alerts")
    if args.die:
        _arm(args.die)
    if not services.alerts():
        alert = services.add_alert("пожар", rule="words", webhook=args.url)
        print(f"alert {alert.id} {alert.secret}", flush=True)
    services.ingest(make_posts(args.n),
                    on_progress=lambda done, _r: print(f"committed {done}", flush=True))
    index = services.index
    outbox = Outbox(index.redis, index.namespace)
    queue = DeliveryQueue(index.redis, index.namespace)
    matches = delivered = 0
    deadline = time.monotonic() + 60  # claims of a killed process expire meanwhile
    while time.monotonic() < deadline:
        report = services.dispatch_alerts()
        matches, delivered = matches + report.matches, delivered + report.delivered
        if outbox.size() == 0 and queue.pending("webhook") == 0:
            break
        time.sleep(0.2)
    print(f"finished {matches} {delivered}", flush=True)
    services.close()


if __name__ == "__main__":
    main()
