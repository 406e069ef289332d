"""The composition root: everything the surfaces need, built once from :class:`Settings`.

The FastAPI lifespan, each CLI command and the Telegram bot create one :class:`Services` and only
translate between their surface and its methods.  It owns

* the :class:`~rag.index.Index` (Redis, the vector store, the embedding model, the docstore, the
  channel catalog, the process's write lock),
* the LLM (built once, lazily: one OAuth token and one concurrency limit per process),
* the tagger and **the** pipeline factory (:meth:`Services.pipeline`): uploads, ``tgrag ingest``,
  sync, watch and the worker all tag and split alike,
* the Telegram connector, the channel registry and the job stores,
* the upload queue (``ingest.upload_queue``: fair between tenants, cancellable, resumed after
  a restart; an upload never blocks a request thread),

and exposes the use cases: search, similar, post, stats, tags, ask/stream, ingest, upload jobs,
channels, sync, channel removal.  :meth:`Services.for_tenant` is a tenant's view: the same parts,
with every read and write scoped to the tenant (``rag.ids`` for the id rule).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import LLMError
from rag.index import Index
from rag.posts import Post, Similar, get_post, similar_posts
from rag.qa import Answer, QAEngine, QAEvent
from rag.search import PostSearcher, SearchFilters, SearchPage, parse_filters
from rag.settings import Settings
from rag.tag_stats import top_tags

if TYPE_CHECKING:
    from llama_index.core.extractors import BaseExtractor
    from llama_index.core.llms import LLM
    from telethon import TelegramClient

    from ingest.jobs import IngestJob, IngestJobs
    from ingest.pipeline import IngestReport, PostPipeline, ProgressCallback
    from ingest.readers.base import ReadItem
    from ingest.telegram.connector import TelegramConnector
    from ingest.telegram.scheduler import JobRegistry, SyncJob, SyncScheduler
    from ingest.telegram.state import ChannelRegistry, ChannelState
    from ingest.telegram.sync import ChannelRemoval, ChannelSync, SyncListener
    from ingest.upload_queue import UploadQueue

log = logging.getLogger("tgrag.services")
_UNSET: Any = object()


@dataclass(eq=False)
class _Shared:
    """What every tenant view shares: built once per process, on first use."""

    settings: Settings
    index: Index
    llm: Any = _UNSET  # LLM | None once built
    tagger: Any = None
    uploads: Any = None  # the UploadQueue, once an upload came (or the API started)
    scheduler: Any = None  # SyncScheduler of the API process, once connected
    scheduler_lock: asyncio.Lock | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Services:
    """The composition root (see the module docstring)."""

    def __init__(self, index: Index, *, llm: Any = _UNSET) -> None:
        self._shared = _Shared(index.settings, index, llm=llm)
        self.index = index

    @classmethod
    def open(cls, settings: Settings, *, purpose: str = "tgrag", llm: Any = _UNSET) -> Services:
        """Open the index (taking the data folder in embedded mode) and build the services.

        ``llm`` (an LLM or ``None``) replaces the configured one, e.g. when a command built it
        first to report a credentials problem before touching the data folder."""
        return cls(Index.open(settings, purpose=purpose), llm=llm)

    def for_tenant(self, tenant: str) -> Services:
        """This tenant's view: the same parts; every use case scoped to the tenant."""
        if tenant == self.index.tenant:
            return self
        return self._view(self._shared, self.index.for_tenant(tenant))

    @staticmethod
    def _view(shared: _Shared, index: Index) -> Services:
        view = object.__new__(Services)
        view._shared = shared
        view.index = index
        return view

    @property
    def settings(self) -> Settings:
        return self._shared.settings

    @property
    def tenant(self) -> str:
        return self.index.tenant

    def close(self) -> None:
        """Stop the uploads (running jobs finish their batch and stay queued for the next
        start), then close the index (the original, not a view); a second call does nothing."""
        self.stop_uploads()
        self._shared.index.close()

    def stop_uploads(self) -> None:
        """Stop the upload queue, if one runs (the API's lifespan, which started it)."""
        shared = self._shared
        with shared.lock:
            uploads, shared.uploads = shared.uploads, None
        if uploads is not None:
            uploads.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- parts ----------------------------------------------------------------------------------

    @property
    def llm(self) -> LLM | None:
        """The configured LLM (``None`` when ``TGRAG_LLM=none``), built on first use."""
        with self._shared.lock:
            return self._llm_locked()

    @llm.setter
    def llm(self, value: LLM | None) -> None:
        self._shared.llm = value

    def tagger(self) -> BaseExtractor:
        """The tagger every ingest path uses: the LLM's when one is configured, else keywords,
        both with corpus-wide statistics in Redis (``ingest.llm_tagging.build_tagger``)."""
        shared = self._shared
        with shared.lock:
            if shared.tagger is None:
                from ingest.llm_tagging import build_tagger, keyword_tagger

                redis = shared.index.redis
                llm = None
                if self.settings.llm_tagging:
                    try:
                        llm = self._llm_locked()
                    except LLMError as exc:  # ask reports it; tagging goes on with keywords
                        log.warning("no LLM for tagging (%s); tagging with keywords", exc)
                shared.tagger = (build_tagger(self.settings, redis, llm) if llm is not None
                                 else keyword_tagger(self.settings, redis))
            return shared.tagger  # type: ignore[no-any-return]

    def _llm_locked(self) -> LLM | None:
        shared = self._shared  # the caller holds shared.lock
        if shared.llm is _UNSET:
            from rag.llm import build_llm

            shared.llm = build_llm(self.settings)
        return shared.llm  # type: ignore[no-any-return]

    def pipeline(self, batch_size: int | None = None) -> PostPipeline:
        """THE pipeline factory: the same tagger and stages for every ingest path, writing into
        this view's tenant."""
        from ingest.pipeline import PostPipeline

        return PostPipeline(self.index, tagger=self.tagger(), batch_size=batch_size)

    def searcher(self) -> PostSearcher:
        return PostSearcher(self.index)

    def qa(self) -> QAEngine:
        return QAEngine(self.index, self.llm)

    @property
    def registry(self) -> ChannelRegistry:
        from ingest.telegram.state import ChannelRegistry

        return ChannelRegistry(self.index.redis, self.index.namespace)

    @property
    def ingest_jobs(self) -> IngestJobs:
        from ingest.jobs import IngestJobs

        return IngestJobs(self.index.redis, self.index.namespace)

    @property
    def sync_jobs(self) -> JobRegistry:
        from ingest.telegram.scheduler import JobRegistry

        return JobRegistry(self.index.redis, self.index.namespace)

    @property
    def telegram(self) -> TelegramConnector:
        from ingest.telegram.connector import TelegramConnector

        return TelegramConnector(self.settings)

    # -- search ---------------------------------------------------------------------------------

    def filters(self, channels: Iterable[str] = (), tags: Iterable[str] = (),
                since: str | int | None = None, until: str | int | None = None) -> SearchFilters:
        """Filters from what a person typed: channel ids/usernames/titles (resolved in this
        tenant's catalog), tags, and dates."""
        filters = parse_filters(tags=tags, since=since, until=until)
        filters.channel_ids = [self.index.catalog.resolve(c) for c in channels]
        filters.tenant = self.tenant
        return filters

    def search(self, query: str, filters: SearchFilters | None = None, k: int = 10,
               mode: str | None = None, offset: int = 0) -> SearchPage:
        return self.searcher().search(query, filters, k=k, mode=mode, offset=offset)

    def similar(self, channel: str, message_id: int, k: int = 10) -> Similar:
        return similar_posts(self.index, channel, message_id, k=k)

    def post(self, channel: str, message_id: int) -> Post:
        return get_post(self.index, channel, message_id)

    def stats(self, *, all_tenants: bool = False) -> dict[str, Any]:
        return self.index.stats(all_tenants=all_tenants)

    def tags(self, filters: SearchFilters | None = None, limit: int = 50) -> dict[str, Any]:
        return top_tags(self.index, filters, limit=limit)

    # -- questions ------------------------------------------------------------------------------

    def ask(self, question: str, filters: SearchFilters | None = None,
            k: int | None = None) -> Answer:
        return self.qa().ask(question, filters, k=k)

    def stream(self, question: str, filters: SearchFilters | None = None,
               k: int | None = None) -> Iterator[QAEvent]:
        return self.qa().stream(question, filters, k=k)

    # -- ingestion ------------------------------------------------------------------------------

    def ingest(self, items: Iterable[ReadItem],
               on_progress: ProgressCallback | None = None) -> IngestReport:
        """Ingest posts (already read) into this tenant's view."""
        from ingest.jobs import stamp_tenant

        return self.pipeline().ingest(stamp_tenant(items, self.tenant), on_progress=on_progress)

    def uploads(self) -> UploadQueue:
        """The process's upload queue (``ingest.upload_queue``), started on first use: it takes
        up the jobs a previous run left unfinished (the API's lifespan asks for it at start)."""
        from ingest.upload_queue import UploadQueue, UploadWorkers

        shared = self._shared
        with shared.lock:
            if shared.uploads is None:
                root = self._view(shared, shared.index)
                shared.uploads = UploadQueue(
                    root.ingest_jobs, UploadWorkers(shared.index.redis, shared.index.namespace),
                    self.settings.data_dir / "uploads",
                    lambda tenant: root.for_tenant(tenant).pipeline(),
                    max_posts=self.settings.max_upload_posts)
                shared.uploads.start()
            return shared.uploads  # type: ignore[no-any-return]

    def upload_file(self, suffix: str) -> Path:
        """Where to write an upload (the data folder's ``uploads``: it must outlive a crash
        for its job to be resumed)."""
        return self.uploads().new_file(suffix)

    def submit_upload(self, path: Path, filename: str) -> tuple[IngestJob, dict[str, Any]]:
        """Queue an uploaded file (``path`` from :meth:`upload_file`, removed when the job
        ends) for ingestion; returns the job and its state as accepted."""
        return self.uploads().submit(self.tenant, filename, path)

    def upload_job(self, job_id: str) -> IngestJob:
        return self.ingest_jobs.get(job_id, self.tenant)

    def cancel_upload(self, job_id: str) -> IngestJob:
        """Cancel this tenant's job: at once when it waits, after its batch when it runs."""
        return self.uploads().cancel(self.upload_job(job_id))

    # -- Telegram channels ----------------------------------------------------------------------

    def channels(self) -> list[ChannelState]:
        return self.registry.list()

    def follow(self, ref: str) -> ChannelState:
        return self.registry.add(ref)

    def remove_channel(self, ref: str, *, delete_posts: bool = False,
                       wait: float | None = None) -> ChannelRemoval:
        """Unfollow (and with ``delete_posts`` delete the posts of) a channel; blocking."""
        from ingest.telegram.sync import remove_channel

        return remove_channel(self.index, ref, delete_posts=delete_posts, wait=wait,
                              registry=self.registry)

    def channel_sync(self, client: TelegramClient,
                     listener: SyncListener | None = None) -> ChannelSync:
        """A sync of the followed channels through a connected client, with THE pipeline."""
        from ingest.telegram.sync import ChannelSync

        return ChannelSync(self.index, client, pipeline=self.pipeline(), registry=self.registry,
                           listener=listener)

    async def scheduler(self) -> SyncScheduler:
        """The process's sync scheduler over a connected, logged-in client (made on first use;
        the API's ``POST /sync`` and periodic sync share it)."""
        from ingest.telegram.scheduler import SyncScheduler

        shared = self._shared
        if shared.scheduler is None:
            if shared.scheduler_lock is None:
                shared.scheduler_lock = asyncio.Lock()
            async with shared.scheduler_lock:
                if shared.scheduler is None:
                    client = await self.telegram.connected()
                    root = self._view(shared, shared.index)  # sync is deployment-wide
                    shared.scheduler = SyncScheduler(root.channel_sync(client))
        return shared.scheduler  # type: ignore[no-any-return]

    def set_scheduler(self, scheduler: SyncScheduler) -> None:
        """Use this scheduler (tests: one over a fake Telegram)."""
        self._shared.scheduler = scheduler

    async def stop_scheduler(self) -> None:
        """Stop the periodic sync, wait for running jobs, disconnect the client."""
        current = self._shared.scheduler
        if current is None:
            return
        self._shared.scheduler = None
        await current.stop()
        await current.wait_jobs()
        disconnected = current.sync.client.disconnect()
        if disconnected is not None:
            await disconnected

    def sync_job(self, job_id: str) -> SyncJob:
        return self.sync_jobs.get(job_id)

    def __repr__(self) -> str:
        return f"Services(tenant={self.tenant!r}, store={self.index.store.describe()!r})"


__all__ = ["Services"]
