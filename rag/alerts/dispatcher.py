"""The alert dispatcher: outbox → matches → deliveries, in passes, on a thread or on demand.

A pass

1. takes due outbox entries (claimed: one process per entry), keeps those whose post is committed
   with the recorded hash (``rag.alerts.outbox``), and checks each post against the alerts of its
   tenant saved before the post was recorded (``AlertMatcher``);
2. records the new matches of each alert exactly once (``AlertStore.record``): a post that already
   notified the alert is skipped (an edit notifies only if the post newly matches), a copy of a
   post that notified it in the last ``COPY_WINDOW`` is attached to that notification instead
   ("также в: …"), and copies among the new matches notify once, as their oldest copy, listing
   the others; the deliveries are queued in the same transaction;
3. drops the handled entries, then sends the due deliveries of every channel it has a notifier
   for (``rag.alerts.delivery``).

A kill -9 anywhere leaves the outbox entry (1-2) or the queued delivery (3), whose claims expire,
so the next pass of any process redoes the step; what was recorded is never recorded twice.

``tgrag serve``, ``worker`` and ``watch`` run :meth:`AlertDispatcher.start` (a daemon thread: the
matching is blocking work, like the pipeline); ``tgrag ingest`` and ``sync`` run one
:meth:`AlertDispatcher.run_pass` when they are done, so a user of the CLI alone gets matches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rag.alerts.delivery import DeliveryQueue, Notification, Notifier
from rag.alerts.matcher import AlertMatcher, PostTexts, Scored
from rag.alerts.model import Alert
from rag.alerts.outbox import COMMIT_GRACE, Outbox, OutboxEntry
from rag.alerts.store import AlertStore, Attached, NewMatch
from rag.dedup import Shingles, jaccard, shingles
from rag.index import Index
from rag.metrics import ALERT_EVENTS
from rag.search import collapse_copies

log = logging.getLogger("tgrag.alerts")

COPY_WINDOW = 7 * 24 * 3600.0  # a copy of a post notified this recently is attached to it
COPY_LOOKBACK = 200  # notified posts compared with a new match, at most
MAX_ROUNDS = 50  # outbox or delivery rounds per pass, so a pass ends even under a steady stream
FAILURE_DELAY = 5.0  # seconds before entries of a pass that failed (a backend down) are retried


@dataclass(slots=True)
class PassReport:
    """What one or more passes did."""

    checked: int = 0  # committed posts checked against their tenant's alerts
    waiting: int = 0  # outbox entries whose post is not committed yet
    dropped: int = 0  # outbox entries whose post was never committed (or was superseded)
    matches: int = 0  # new notifications recorded
    copies: int = 0  # posts attached to a notification as its copies
    delivered: int = 0
    retrying: int = 0
    dead: int = 0

    def add(self, other: PassReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class AlertDispatcher:
    """Runs passes over the index's outbox and delivery queues (see the module docstring)."""

    def __init__(self, index: Index, store: AlertStore, outbox: Outbox, queue: DeliveryQueue,
                 notifiers: Sequence[Notifier] = ()) -> None:
        self.index = index
        self.settings = index.settings
        self.store = store
        self.outbox = outbox
        self.queue = queue
        self.notifiers = list(notifiers)
        self.matcher = AlertMatcher(index)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass -------------------------------------------------------------------------------

    def run_pass(self, deliver: bool = True, rounds: int | None = MAX_ROUNDS) -> PassReport:
        """Check the due outbox entries, then (``deliver``) send the due deliveries: at most
        ``rounds`` rounds of each (the background thread stays responsive), or until nothing is
        due (``None``: the CLI after an ingest)."""
        report = PassReport()
        done = 0
        while rounds is None or done < rounds:
            entries = self.outbox.take()
            if not entries:
                break
            self._check(entries, report)
            done += 1
        done = 0
        while deliver and (rounds is None or done < rounds):
            if not self._deliver(report):
                break
            done += 1
        return report

    def _check(self, entries: list[OutboxEntry], report: PassReport) -> None:
        ready, waiting, dropped = [], [], []
        now = time.time()
        for entry in entries:
            if self.index.docstore.get_document_hash(entry.doc_id) == entry.hash:
                ready.append(entry)
            elif now - entry.recorded > COMMIT_GRACE:
                dropped.append(entry)
            else:
                waiting.append(entry)
        self.outbox.later(waiting)
        try:
            by_tenant: dict[str, list[OutboxEntry]] = defaultdict(list)
            for entry in ready:
                by_tenant[entry.tenant].append(entry)
            for tenant, group in by_tenant.items():
                texts = PostTexts(self.index)
                for alert in self.store.list(tenant):
                    # Alerts see the posts indexed after they were saved.
                    ids = [e.doc_id for e in group if e.recorded >= alert.created]
                    matched = self.matcher.match(alert, ids, texts)
                    if matched:
                        self._record(alert, matched, texts, report)
        except Exception:
            log.exception("alert check failed; retrying", extra={"entries": len(ready)})
            self.outbox.later(ready + dropped, delay=FAILURE_DELAY)
            raise
        self.outbox.done(ready + dropped)
        report.checked += len(ready)
        report.waiting += len(waiting)
        report.dropped += len(dropped)

    def _record(self, alert: Alert, matched: list[Scored], texts: PostTexts,
                report: PassReport) -> None:
        threshold = self.settings.duplicate_threshold
        known: dict[str, Shingles] = {}
        attached_count = [0]  # of the plan that was written (a conflict runs it again)

        def plan(already: set[str]) -> tuple[list[NewMatch], list[Attached]]:
            attached_count[0] = 0
            fresh = [s for s in matched if s.doc_id not in already]
            if not fresh:
                return [], []
            ids = {s.doc_id for s in fresh}
            earlier = [d for d in self.store.recent(alert.id, time.time() - COPY_WINDOW,
                                                    COPY_LOOKBACK) if d not in ids]
            for doc_id in earlier:
                if doc_id not in known:
                    known[doc_id] = shingles(texts.text(doc_id) or "")
            attached: list[Attached] = []
            rest: list[Scored] = []
            for s in fresh:
                own = shingles(s.text)
                original = next((d for d in earlier if jaccard(own, known[d]) >= threshold),
                                None)
                if original is None:
                    rest.append(s)
                else:
                    attached.append(Attached(s.doc_id, original, s.hit.copy_dict()))
            # Copies among the new matches: one notification, shown as the oldest copy.
            hits = collapse_copies([s.hit for s in rest], threshold)
            attached_count[0] = len(attached)
            return [NewMatch(h.id, h.to_dict(), [c.id for c in h.copies]) for h in hits], attached

        new = self.store.record(alert, plan, [s.doc_id for s in matched], self.queue.enqueue)
        report.matches += len(new)
        report.copies += sum(len(m.copies) for m in new) + attached_count[0]
        ALERT_EVENTS.inc("matched", amount=len(new))
        if new:
            log.info("alert matched", extra={"alert": alert.id, "tenant": alert.tenant,
                                             "posts": [m.doc_id for m in new]})

    def _deliver(self, report: PassReport) -> bool:
        """One round over every notifier's queue; whether anything was taken."""
        took = False
        for notifier in list(self.notifiers):
            if not notifier.available():
                continue
            for item in self.queue.take(notifier.channel):
                took = True
                alert = self.store.load(item.alert_id)
                hit = self.store.hit(item.alert_id, item.doc_id) if alert is not None else None
                if alert is None or hit is None or notifier.channel not in alert.channels:
                    self.queue.done(item)  # the alert (or its webhook) was removed meanwhile
                    continue
                try:
                    notifier.send(Notification(item.id, alert, hit, attempt=item.attempts + 1))
                except Exception as exc:  # any failure of a notifier is retried, then dead
                    outcome = self.queue.failed(item, str(exc), self.settings.alert_max_attempts,
                                                self.settings.alert_retry_backoff)
                    ALERT_EVENTS.inc(outcome)
                    if outcome == "dead":
                        report.dead += 1
                        log.warning("alert delivery dead-lettered",
                                    extra={"delivery": item.id, "error": str(exc)})
                    else:
                        report.retrying += 1
                    continue
                self.queue.done(item)
                report.delivered += 1
                ALERT_EVENTS.inc("delivered")
        return took

    # -- in the background ----------------------------------------------------------------------

    def wake(self) -> None:
        """Run the next pass now (the pipeline recorded posts)."""
        self._wake.set()

    def start(self) -> AlertDispatcher:
        """Run passes on a daemon thread, every ``TGRAG_ALERT_POLL_INTERVAL`` or when woken."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tgrag-alerts", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current pass."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except Exception:  # a backend down: logged by the pass; try again next time
                log.exception("alert pass failed")
            self._wake.wait(self.settings.alert_poll_interval)
            self._wake.clear()
