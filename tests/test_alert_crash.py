"""Killing an ingest or the dispatcher (SIGKILL, in a subprocess) and running it again delivers
every match exactly once: the outbox is recorded with the commit, matches are recorded once, and
a delivery stays queued until it is sent.

The subprocess is ``tests/crash_alerts.py``; the webhook receiver runs here, in the test process,
so it sees both lives of the subprocess.  Claims of the killed process expire after
``TGRAG_ALERT_CLAIM_TTL`` (2 s here), then the second life takes its entries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash_alerts import matching
from tests.webhook_receiver import WebhookReceiver

HELPER = Path(__file__).resolve().parent / "crash_alerts.py"
REPO = HELPER.parent.parent
N = 24  # posts, 8 of them match; batches of 4

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def run(data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGRAG_")}
    env["TGRAG_ALERT_CLAIM_TTL"] = "2"
    return subprocess.run([sys.executable, str(HELPER), str(data_dir), "--url", url,
                           "--n", str(N), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def secret_of(lines: list[str]) -> str:
    return next(line.split()[2] for line in lines if line.startswith("alert "))


@pytest.mark.parametrize("die", ["after-record:2", "after-commit:2", "after-match:1"])
def test_killed_between_commit_and_delivery_delivers_exactly_once(
        tmp_path: Path, receiver: WebhookReceiver, die: str) -> None:
    first = run(tmp_path / "data", receiver.url, "--die", die)
    assert first.returncode == -9, first.stderr[-2000:]
    lines = first.stdout.splitlines()
    receiver.secret = secret_of(lines)
    assert not any(line.startswith("finished") for line in lines)
    before = len(receiver.requests)

    second = run(tmp_path / "data", receiver.url)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.splitlines()[-1].startswith("finished")
    expected = sorted(matching(N))
    got = sorted(r["body"]["match"]["id"] for r in receiver.requests)
    assert got == expected, (before, got)
    assert all(r["verified"] for r in receiver.requests)
    assert len({r["delivery"] for r in receiver.requests}) == len(expected)


def test_killed_after_a_webhook_answered_resends_it_with_the_same_delivery_id(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    """The one window where a notification goes out twice: the receiver answered, the process
    died before the queue heard it.  The second try carries the same X-Tgrag-Delivery, which is
    what receivers deduplicate on (docs: README "Alerts")."""
    first = run(tmp_path / "data", receiver.url, "--die", "after-send:3")
    assert first.returncode == -9, first.stderr[-2000:]
    receiver.secret = secret_of(first.stdout.splitlines())
    assert len(receiver.requests) == 3
    second = run(tmp_path / "data", receiver.url)
    assert second.returncode == 0, second.stderr[-2000:]
    per_delivery = Counter(r["delivery"] for r in receiver.requests)
    assert sorted(per_delivery.values()) == [1] * (len(matching(N)) - 1) + [2]
    assert sorted({r["body"]["match"]["id"] for r in receiver.requests}) == sorted(matching(N))
