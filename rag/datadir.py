"""Embedded mode: one process owns the data folder at a time.

Qdrant local mode allows one client per folder and the embedded Redis belongs to the process that
started it, so ``tgrag serve`` and ``tgrag ingest`` cannot both open ``./data``.  The lock is an
``flock`` on ``data_dir/.lock`` (released by the kernel even when the owner is killed), and the file
names the owner so the error can say who it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from typing import IO

from rag.errors import DataDirLocked


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._fh: IO[str] | None = None

    def acquire(self, purpose: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                owner = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                owner = {}
            fh.close()
            raise DataDirLocked(
                f"the data folder {self.path.parent} is in use by process {owner.get('pid', '?')} "
                f"({owner.get('purpose', 'another tgrag command')})",
                hint="stop that process, or use its HTTP API, or run Qdrant and Redis as servers "
                "(TGRAG_QDRANT_URL, TGRAG_REDIS_URL)",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "purpose": purpose,
                             "argv": " ".join(sys.argv[:3])}))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
