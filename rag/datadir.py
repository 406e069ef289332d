"""Embedded mode: one process owns the data folder at a time.

Qdrant local mode allows one client per folder and the embedded Redis belongs to the process that
started it, so ``tgrag serve`` and ``tgrag ingest`` cannot both open ``./data``.  The lock is an
``flock`` on ``data_dir/.lock`` (released by the kernel even when the owner is killed), and the file
names the owner so the error can say who it is.

While it holds the folder the process creates files private to its user (umask 077; restored
at release) and the folder itself is 0700: the embedded Redis' append-only file and dumps and
Qdrant's files hold every post, and other local users must not read them.
"""

from __future__ import annotations

import contextlib
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
        self._umask = 0o022

    def acquire(self, purpose: str) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # An older, world-readable folder is closed too (if it is not ours to change, at least
        # what we create is private).
        with contextlib.suppress(PermissionError):
            os.chmod(folder, 0o700)
        umask = os.umask(0o077)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)
        except BaseException:
            os.umask(umask)
            raise
        fh = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                owner = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                owner = {}
            fh.close()
            os.umask(umask)
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
        self._umask = umask

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            os.umask(self._umask)
