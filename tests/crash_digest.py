"""Helper for tests/test_digest_delivery.py: a scheduled delivery to kill.

Not a test module (no ``test_`` prefix).  Run as a script it delivers the digest due at
``--due`` (ISO) to the recipients ``r1 r2 r3`` through a sink that appends each recipient's name to
``--sent FILE`` (fsynced: what "the message left" means here), over the embedded Redis of
``data_dir`` (the same record a real delivery keeps).  It can kill itself with SIGKILL:

- ``--die before-send:N``  the N-th send has its claim but nothing has left yet;
- ``--die after-send:N``   the N-th message has left, its record is not marked sent yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECIPIENTS = ("r1", "r2", "r3")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--due", required=True)
    ap.add_argument("--sent", required=True)
    ap.add_argument("--die", default="")
    args = ap.parse_args()

    from rag.digest import Digest, DigestPost, Story
    from rag.digest_delivery import DigestLog, DigestScheduler, Recipient
    from rag.digest_schedule import DigestSchedule
    from rag.ids import namespace
    from rag.redis_backend import close_redis, open_redis
    from rag.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir), _env_file=None)  # type: ignore[call-arg]
    redis = open_redis(settings)
    kind, _, nth = args.die.partition(":")
    calls = {"n": 0}

    class FileSink:
        channel = "test"

        def available(self) -> bool:
            return True

        async def recipients(self) -> list[Recipient]:
            return [Recipient(name, "default") for name in RECIPIENTS]

        async def send(self, recipient: Recipient, digest: Digest) -> None:
            calls["n"] += 1
            if kind == "before-send" and calls["n"] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
            with open(args.sent, "a", encoding="utf-8") as out:
                out.write(recipient.key + "\n")
                out.flush()
                os.fsync(out.fileno())
            print(f"sent {recipient.key}", flush=True)
            if kind == "after-send" and calls["n"] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    def build(tenant: str, since: int, until: int) -> Digest:
        import numpy as np

        post = DigestPost("tg:1:1", 1, "c", "C", 1, since, "https://t.me/c/1", "Пост.",
                          vector=np.ones(2))
        return Digest(since, until, [Story([post], title="Сюжет", summary="Пост. [1]")], posts=1)

    schedule = DigestSchedule.parse("09:00 UTC")
    scheduler = DigestScheduler(schedule, build, DigestLog(redis, namespace(settings.collection)),
                                [FileSink()])
    report = asyncio.run(scheduler.deliver(datetime.fromisoformat(args.due)))
    print(f"finished sent={','.join(report.sent)} skipped={','.join(report.skipped)}", flush=True)
    close_redis(redis, settings)


if __name__ == "__main__":
    main()
