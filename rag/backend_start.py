"""The first step of opening an index: take the data folder and start the embedded Redis.

The embedded Redis needs seconds to load its data at 100k posts (it reads the whole docstore),
in its own process.  Started first, it loads on the other core while this process does the rest
of the opening (:meth:`rag.index.Index.open` opens the vector engine meanwhile) — and, for
``tgrag serve``, while it imports the API (LlamaIndex, FastAPI: seconds of its start).  So this
module imports no LlamaIndex: a surface can call :func:`start_backends` before importing the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.datadir import DataDirLock
from rag.embedded_redis import EmbeddedRedis, spawn_embedded
from rag.settings import Settings


@dataclass
class StartedBackends:
    """The data folder taken (embedded mode) and the embedded Redis spawned, maybe still
    loading; ``Index.open(settings, started=...)`` finishes the opening and owns them."""

    settings: Settings
    lock: DataDirLock | None = None
    redis_server: EmbeddedRedis | None = None  # None with TGRAG_REDIS_URL (connected later)

    def abandon(self) -> None:
        """Stop what was started and release the folder (an open that failed); idempotent."""
        server, self.redis_server = self.redis_server, None
        try:
            if server is not None:
                server.stop()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


def start_backends(settings: Settings, purpose: str) -> StartedBackends:
    """Take the data folder for ``purpose`` (named to whoever finds it taken) and spawn the
    embedded Redis, without waiting for it."""
    started = StartedBackends(settings)
    if settings.embedded_qdrant or settings.embedded_redis:
        started.lock = DataDirLock(settings.data_dir)
        started.lock.acquire(purpose)
    if settings.embedded_redis:
        try:
            started.redis_server = spawn_embedded(settings.redis_dir)
        except BaseException:
            started.abandon()
            raise
    return started
