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
* the alert dispatcher (``rag.alerts``; the pipeline's commit hook records every committed post
  into its outbox) and its notifiers (webhooks; the bot adds its own),

and exposes the use cases: search, similar, post, stats, tags, ask/stream, digest (and its
scheduled delivery), ingest, upload jobs, channels (and group chats, with the mention rule), sync,
channel removal, retention and prune, alerts.  :meth:`Services.for_tenant` is a tenant's view:
the same parts, with every read and write scoped to the tenant (``rag.ids`` for the id rule).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import InputError, LLMError
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
    from ingest.retention import ChannelPrune, PruneReport, RetentionPolicy
    from ingest.telegram.connector import TelegramConnector
    from ingest.telegram.scheduler import JobRegistry, SyncJob, SyncScheduler
    from ingest.telegram.state import Account, ChannelRegistry, ChannelState
    from ingest.telegram.sync import ChannelRemoval, ChannelSync, SyncListener
    from ingest.upload_queue import UploadQueue
    from rag.alerts.delivery import DeliveryItem, Notifier
    from rag.alerts.dispatcher import AlertDispatcher, PassReport
    from rag.alerts.matcher import Trial
    from rag.alerts.model import Alert
    from rag.alerts.outbox import OutboxRecorder
    from rag.alerts.store import AlertStore
    from rag.backend_start import StartedBackends
    from rag.digest import Digest
    from rag.digest_delivery import DigestScheduler, DigestSink
    from rag.mentions import MentionMatcher, MentionRule

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
    dispatcher: Any = None  # AlertDispatcher, built on first use
    notifiers: list[Any] = field(default_factory=list)  # besides webhooks (the bot's)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Services:
    """The composition root (see the module docstring)."""

    def __init__(self, index: Index, *, llm: Any = _UNSET) -> None:
        self._shared = _Shared(index.settings, index, llm=llm)
        self.index = index

    @classmethod
    def open(cls, settings: Settings, *, purpose: str = "tgrag", llm: Any = _UNSET,
             started: StartedBackends | None = None) -> Services:
        """Open the index (taking the data folder in embedded mode) and build the services.

        ``llm`` (an LLM or ``None``) replaces the configured one, e.g. when a command built it
        first to report a credentials problem before touching the data folder; ``started``:
        the backends the caller started first (``rag.backend_start``)."""
        return cls(Index.open(settings, purpose=purpose, started=started), llm=llm)

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
        start) and the alert dispatcher, then close the index (the original, not a view); a
        second call does nothing."""
        self.stop_uploads()
        self._close_alerts()
        self._shared.index.close()

    def stop_uploads(self) -> None:
        """Stop the upload queue, if one runs (the API's lifespan, which started it)."""
        shared = self._shared
        with shared.lock:
            uploads, shared.uploads = shared.uploads, None
        if uploads is not None:
            uploads.close()

    def _close_alerts(self) -> None:
        shared = self._shared
        with shared.lock:
            dispatcher, shared.dispatcher = shared.dispatcher, None
        if dispatcher is not None:
            dispatcher.stop()
            for notifier in dispatcher.notifiers:
                close = getattr(notifier, "close", None)
                if close is not None:
                    close()

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

        return PostPipeline(self.index, tagger=self.tagger(), batch_size=batch_size,
                            on_commit=[self.alert_recorder()])

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

    def optimize(self) -> dict[str, Any]:
        """Index maintenance: bring the vector engine's search index up to date (blocking).

        Only for processes that serve nothing (``tgrag ingest``, ``tgrag sync``,
        ``tgrag optimize``): the embedded engine holds the GIL while it builds, which would
        freeze every request of a server in the same process (README "Index maintenance")."""
        import time

        started = time.monotonic()
        worked = self.index.store.optimize()
        return {"optimized": worked, "seconds": round(time.monotonic() - started, 2),
                "points": self.index.store.count()}

    def tags(self, filters: SearchFilters | None = None, limit: int = 50) -> dict[str, Any]:
        return top_tags(self.index, filters, limit=limit)

    # -- questions ------------------------------------------------------------------------------

    def ask(self, question: str, filters: SearchFilters | None = None,
            k: int | None = None) -> Answer:
        return self.qa().ask(question, filters, k=k)

    def stream(self, question: str, filters: SearchFilters | None = None,
               k: int | None = None) -> Iterator[QAEvent]:
        return self.qa().stream(question, filters, k=k)

    # -- digests --------------------------------------------------------------------------------

    def digest(self, since: str | int | None = None, until: str | int | None = None,
               channels: Iterable[str] = (), tags: Iterable[str] = (),
               stories: int | None = None, on_story: Any = None) -> Digest:
        """The period's posts as ranked, summarised stories (``rag.digest``); ``since`` is a
        duration back from ``until`` (``1d``, the default) or a date."""
        from rag.digest import DEFAULT_SINCE, DigestBuilder, parse_period

        start, end = parse_period(since or DEFAULT_SINCE, until)
        filters = self.filters(channels, tags)
        return DigestBuilder(self.index, self.llm).build(filters, since=start, until=end,
                                                         stories=stories, on_story=on_story)

    def digest_scheduler(self, sinks: Iterable[DigestSink]) -> DigestScheduler | None:
        """The daily delivery over ``sinks`` at ``TGRAG_DIGEST_SCHEDULE`` (None when unset):
        each recipient gets its tenant's digest of the day before, once."""
        from rag.digest_delivery import DigestLog, DigestScheduler

        schedule = self.settings.schedule
        if schedule is None:
            return None
        root = self._view(self._shared, self._shared.index)

        def build(tenant: str, since: int, until: int) -> Digest:
            return root.for_tenant(tenant).digest(since, until)

        return DigestScheduler(schedule, build, DigestLog(self.index.redis, self.index.namespace),
                               list(sinks))

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

    def follow(self, ref: str, *, group: bool = False) -> ChannelState:
        """Follow a channel; ``group`` opts a group chat in (its members' messages are read)."""
        return self.registry.add(ref, group=group)

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
                    shared.scheduler = SyncScheduler(root.channel_sync(client),
                                                     after_run=root.scheduled_prune)
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

    # -- alerts ---------------------------------------------------------------------------------

    @property
    def alert_store(self) -> AlertStore:
        from rag.alerts.store import AlertStore

        return AlertStore(self.index.redis, self.index.namespace)

    def alert_recorder(self) -> OutboxRecorder:
        """The pipeline's commit hook: committed posts of tenants with alerts into the outbox,
        and the in-process dispatcher woken."""
        from rag.alerts.outbox import Outbox, OutboxRecorder

        shared = self._shared

        def wake() -> None:
            if shared.dispatcher is not None:
                shared.dispatcher.wake()

        outbox = Outbox(self.index.redis, self.index.namespace, self.settings.alert_claim_ttl)
        return OutboxRecorder(outbox, self.alert_store.has_alerts, wake)

    def alerts(self) -> list[Alert]:
        return self.alert_store.list(self.tenant)

    def alert(self, alert_id: str) -> Alert:
        return self.alert_store.get(alert_id, self.tenant)

    def _build_alert(self, query: str, *, rule: str = "semantic", threshold: float | None = None,
                     channels: Iterable[str] = (), tags: Iterable[str] = (),
                     since: str | int | None = None, until: str | int | None = None,
                     mode: str | None = None, webhook: str | None = None,
                     chat_id: int | None = None, lang: str | None = None) -> Alert:
        from rag.alerts.model import build_alert

        return build_alert(self.settings, self.tenant, query, rule=rule, threshold=threshold,
                           channel_ids=[self.index.catalog.resolve(c) for c in channels],
                           tags=list(tags), since=since, until=until, mode=mode,
                           webhook=webhook, chat_id=chat_id, lang=lang)

    def add_alert(self, query: str, **options: Any) -> Alert:
        """Save an alert of this tenant (options: ``rule`` (semantic, words, mention),
        ``threshold``, ``channels`` (ids, usernames or titles), ``tags``, ``since``, ``until``,
        ``mode``, ``webhook``, and ``chat_id`` and ``lang`` for the bot).  Posts indexed from now
        on are checked against it."""
        alert = self._build_alert(query, **options)
        return self.alert_store.add(alert, self.settings.alert_max_per_tenant)

    def remove_alert(self, alert_id: str) -> Alert:
        from rag.alerts.delivery import DeliveryQueue

        alert = self.alert_store.remove(alert_id, self.tenant)
        DeliveryQueue(self.index.redis, self.index.namespace).forget(alert.id)
        return alert

    def alert_matches(self, alert_id: str, k: int = 20, offset: int = 0) -> dict[str, Any]:
        """The alert's notifications, newest first: ``{"results": [hits], "next_offset"}``."""
        from rag.search import MAX_K

        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint="e.g. k=20")
        if offset < 0:
            raise InputError(f"offset must be 0 or more, got {offset}",
                             hint="the next page starts at the previous response's next_offset")
        alert = self.alert(alert_id)
        results, next_offset = self.alert_store.matches(alert.id, k, offset)
        return {"results": results, "next_offset": next_offset}

    def test_alert(self, query: str, *, days: float = 7, k: int = 20,
                   **options: Any) -> Trial:
        """Which posts of the last ``days`` (counted back from this tenant's newest post) the
        alert would have matched, and (semantic) the near misses: tune a rule before saving."""
        from rag.alerts.matcher import AlertMatcher, trial
        from rag.search import MAX_K

        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}", hint="e.g. -k 20")
        if days <= 0:
            raise InputError(f"days must be positive, got {days:g}", hint="e.g. --days 7")
        alert = self._build_alert(query, **options)
        newest = max((c.last_date or 0 for c in self.index.catalog.channels()), default=0)
        since = int(newest - days * 86400) if newest else None
        mentions = self.mention_matcher() if alert.rule == "mention" else None
        return trial(AlertMatcher(self.index), alert, since, k=k, mentions=mentions)

    def alert_status(self, alert_id: str) -> dict[str, int]:
        """``{"matches", "dead_letters"}`` counts of the alert."""
        from rag.alerts.delivery import DeliveryQueue

        alert = self.alert(alert_id)
        queue = DeliveryQueue(self.index.redis, self.index.namespace)
        return {"matches": self.alert_store.match_count(alert.id),
                "dead_letters": len(queue.dead_letters(alert.id))}

    def alert_dead_letters(self, alert_id: str) -> list[DeliveryItem]:
        from rag.alerts.delivery import DeliveryQueue

        alert = self.alert(alert_id)
        return DeliveryQueue(self.index.redis, self.index.namespace).dead_letters(alert.id)

    def retry_alert_deliveries(self, alert_id: str) -> int:
        """Queue the alert's dead letters again; returns how many."""
        from rag.alerts.delivery import DeliveryQueue

        alert = self.alert(alert_id)
        queue = DeliveryQueue(self.index.redis, self.index.namespace)
        queued = queue.requeue_dead(alert.id, alert.channels)
        if queued and self._shared.dispatcher is not None:
            self._shared.dispatcher.wake()
        return queued

    def add_notifier(self, notifier: Notifier) -> None:
        """Deliver the alerts of ``notifier.channel`` from this process (the bot adds its own
        before starting the dispatcher)."""
        shared = self._shared
        with shared.lock:
            shared.notifiers.append(notifier)
            if shared.dispatcher is not None:
                shared.dispatcher.notifiers.append(notifier)

    def remove_notifier(self, notifier: Notifier) -> None:
        """Stop delivering through ``notifier`` (the bot stopped); its queue waits for another."""
        shared = self._shared
        with shared.lock:
            for notifiers in (shared.notifiers, getattr(shared.dispatcher, "notifiers", [])):
                if notifier in notifiers:
                    notifiers.remove(notifier)

    def alert_dispatcher(self) -> AlertDispatcher:
        """The process's dispatcher (deployment-wide: every tenant's outbox entries), with the
        webhook notifier and the added ones, and the mention matcher (built once per pass: the
        account's identity may change with the next group sync)."""
        from rag.alerts.delivery import DeliveryQueue
        from rag.alerts.dispatcher import AlertDispatcher
        from rag.alerts.outbox import Outbox
        from rag.alerts.store import AlertStore
        from rag.alerts.webhook import WebhookNotifier

        shared = self._shared
        with shared.lock:
            if shared.dispatcher is None:
                index, ttl = shared.index, self.settings.alert_claim_ttl
                shared.dispatcher = AlertDispatcher(
                    index, AlertStore(index.redis, index.namespace),
                    Outbox(index.redis, index.namespace, ttl),
                    DeliveryQueue(index.redis, index.namespace, ttl),
                    [WebhookNotifier(self.settings), *shared.notifiers],
                    mentions=self._view(shared, index).mention_matcher)
            return shared.dispatcher  # type: ignore[no-any-return]

    def dispatch_alerts(self) -> PassReport:
        """One dispatcher pass now, until nothing is due (the CLI after an ingest or a sync)."""
        return self.alert_dispatcher().run_pass(rounds=None)

    def start_alerts(self) -> AlertDispatcher:
        """Run the dispatcher in the background (``tgrag serve``, ``worker``, ``watch``)."""
        return self.alert_dispatcher().start()

    def stop_alerts(self) -> None:
        if self._shared.dispatcher is not None:
            self._shared.dispatcher.stop()

    # -- group chats: mentions ------------------------------------------------------------------

    def account(self) -> Account | None:
        """The Telegram account the syncs read with, as the last group sync recorded it."""
        from ingest.telegram.state import AccountIdentity

        return AccountIdentity(self.index.redis, self.index.namespace).load()

    def mention_rule(self, keywords: Iterable[str] = ()) -> MentionRule:
        """What counts as a mention in group chats: the account's own @username and id and
        ``TGRAG_MENTION_KEYWORDS``, plus ``keywords`` (e.g. an alert's words)."""
        from rag.mentions import MentionRule

        me = self.account()
        return MentionRule.build(usernames=me.usernames if me else (),
                                 user_ids=[me.user_id] if me else (),
                                 keywords=[*self.settings.mention_keywords, *keywords])

    def mention_matcher(self, keywords: Iterable[str] = ()) -> MentionMatcher:
        """The hook the alert checker calls per committed document (``rag.mentions``)."""
        from rag.mentions import MentionMatcher

        return MentionMatcher(self.mention_rule(keywords))

    # -- retention ------------------------------------------------------------------------------

    def retention(self) -> RetentionPolicy:
        """``TGRAG_RETENTION_DAYS`` with the per-channel overrides."""
        from ingest.retention import RetentionOverrides, RetentionPolicy

        return RetentionPolicy.load(self.settings,
                                    RetentionOverrides(self.index.redis, self.index.namespace))

    def set_keep_days(self, ref: str, days: float | None) -> dict[str, Any]:
        """Keep a channel's posts ``days`` days (0 = forever; None = ``TGRAG_RETENTION_DAYS``
        again).  The channel is named by id, username or title, indexed or followed."""
        from ingest.retention import RetentionOverrides

        channel_id, name = self._channel_named(ref)
        RetentionOverrides(self.index.redis, self.index.namespace).set(channel_id, days)
        return {"channel_id": channel_id, "channel": name, "override": days,
                "keep_days": self.retention().keep_days(channel_id)}

    def _channel_named(self, ref: str) -> tuple[int, str]:
        from rag.errors import InputError, NotFoundError
        from rag.ids import is_channel_id, normalize_channel_id

        known = {c.channel_id: c for c in self.index.catalog.channels()}
        try:
            indexed: int | None = self.index.catalog.resolve(ref)
        except InputError:
            indexed = None
        if indexed in known:
            info = known[indexed]
            return info.channel_id, info.channel or info.channel_title
        state = self.registry.get(ref)
        if state is not None and state.channel_id is not None:
            return state.channel_id, state.channel or state.ref
        if is_channel_id(str(ref)):
            return normalize_channel_id(ref), str(normalize_channel_id(ref))
        raise NotFoundError(
            f"channel {ref!r} is neither indexed nor synced yet",
            hint="run `tgrag sync` first (a followed channel gets its id there), or give its id")

    def prune_plan(self, older_than: float | None = None) -> list[ChannelPrune]:
        """Every channel (of every tenant: retention is deployment-wide) whose posts expire,
        with the expired posts (``ingest.retention``)."""
        from ingest.retention import plan_prune

        return plan_prune(self._shared.index, self.retention(), older_than=older_than)

    def prune(self, plans: list[ChannelPrune], *, lock_wait: float | None = None,
              on_batch: Any = None) -> PruneReport:
        """Delete the planned posts: store, docstore, catalog, under the write lock and each
        followed channel's sync lock; blocking (run it in a thread from async code)."""
        from ingest.retention import prune

        return prune(self._shared.index, plans, registry=self.registry, lock_wait=lock_wait,
                     on_batch=on_batch)

    async def scheduled_prune(self) -> PruneReport | None:
        """The prune after each scheduled sync (``tgrag worker``, ``tgrag serve``'s schedule),
        when any retention is set; a channel a sync holds waits for the next run."""
        if not self.retention().active:
            return None

        def run() -> PruneReport:
            return self.prune(self.prune_plan(), lock_wait=5.0)

        report = await asyncio.to_thread(run)
        if report.deleted:
            log.info("pruned %d posts past their retention", report.deleted)
        return report

    def __repr__(self) -> str:
        return f"Services(tenant={self.tenant!r}, store={self.index.store.describe()!r})"


__all__ = ["Services"]
