"""Process-wide counters the core bumps and the API exports (``GET /metrics``).

The core must not depend on an exporter, so these are plain thread-safe counters keyed by a few
labels; ``api.metrics`` turns them into Prometheus metrics at scrape time.  Bumping one costs a
lock and a dict update.

* ``INGEST_POSTS``: posts by outcome (``new``, ``updated``, ``unchanged``, ``skipped``).
* ``LLM_CALLS``: LLM requests by kind (``chat``, ``stream``) and outcome (``ok``, ``error``,
  ``refused``).
* ``ALERT_EVENTS``: alert notifications by event (``matched``, ``delivered``, ``retry``, ``dead``).
"""

from __future__ import annotations

import threading
from collections import Counter


class LabeledCounter:
    """A monotonically increasing counter per label tuple."""

    def __init__(self, name: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.labels = labels
        self._values: Counter[tuple[str, ...]] = Counter()
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        if amount <= 0:
            return
        with self._lock:
            self._values[label_values] += amount

    def snapshot(self) -> dict[tuple[str, ...], float]:
        with self._lock:
            return dict(self._values)


INGEST_POSTS = LabeledCounter("ingest_posts", ("outcome",))
LLM_CALLS = LabeledCounter("llm_calls", ("kind", "outcome"))
ALERT_EVENTS = LabeledCounter("alert_events", ("event",))
