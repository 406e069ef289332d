"""Retention: ``TGRAG_RETENTION_DAYS``, per-channel ``--keep-days``, ``tgrag prune`` (counts first,
dry run, deletion in the crash-safe order, under the channel's sync lock), syncs that do not bring
expired posts back, and the prune after each scheduled sync.  The kill -9 test is in
``tests/test_prune_crash.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.services import Services
from ingest.documents import Post
from ingest.pipeline import PostPipeline
from ingest.retention import DAY, RetentionOverrides, RetentionPolicy, check_days
from ingest.telegram.scheduler import SyncScheduler
from ingest.telegram.state import ChannelRegistry
from ingest.telegram.sync import ChannelSync
from rag.errors import InputError, NotFoundError
from rag.index import Index
from rag.settings import Settings
from tests.fake_telegram import FakeChannel, FakeTelegram, new_client, run

NEWS, SPORT = 1001, 1002
NOW = time.time()


def post(channel_id: int, message_id: int, days_old: float, tenant: str = "default") -> Post:
    name = {NEWS: "news", SPORT: "sport"}[channel_id]
    return Post(channel_id=channel_id, message_id=message_id,
                date=int(NOW - days_old * DAY), text=f"Сообщение {message_id} канала {name}: "
                f"новости дня номер {message_id}", channel=name, channel_title=name.title(),
                tenant=tenant)


CORPUS = [post(NEWS, 1, 100), post(NEWS, 2, 90), post(NEWS, 3, 40), post(NEWS, 4, 5),
          post(NEWS, 5, 1), post(SPORT, 1, 200), post(SPORT, 2, 2)]
ACME = [post(NEWS, 1, 100, "acme"), post(NEWS, 2, 1, "acme")]


def fill(index: Index) -> None:
    PostPipeline(index).ingest(CORPUS)
    PostPipeline(index.for_tenant("acme")).ingest(ACME)  # a tenant's view writes its catalog


@pytest.fixture
def retention_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", retention_days=30,  # type: ignore[call-arg]
                    _env_file=None)


@pytest.fixture
def services(retention_settings: Settings) -> Iterator[Services]:
    with Services.open(retention_settings, purpose="pytest") as svc:
        fill(svc.index)
        yield svc


def present(index: Index, tenant: str = "default") -> dict[int, list[int]]:
    """channel id → message ids, checked consistent across store, docstore and catalog."""
    view = index.for_tenant(tenant)
    out: dict[int, list[int]] = {}
    docstore = {d for d in view.post_ids()}
    for info in view.catalog.channels():
        ids = view.catalog.post_ids(info.channel_id)
        for m in ids:
            doc_id = Post(channel_id=info.channel_id, message_id=m, date=0, text="",
                          tenant=tenant).doc_id
            assert doc_id in docstore and view.store.chunks_of(doc_id, tenant=tenant), doc_id
        out[info.channel_id] = sorted(ids)
    assert len(docstore) == sum(len(v) for v in out.values())
    return out


def test_policy_overrides_and_checks(index: Index) -> None:
    overrides = RetentionOverrides(index.redis, index.namespace)
    overrides.set(NEWS, 7)
    overrides.set(SPORT, 0)
    policy = RetentionPolicy(30, overrides.all())
    assert (policy.keep_days(NEWS), policy.keep_days(SPORT), policy.keep_days(9)) == (7, 0, 30)
    assert policy.cutoff(SPORT) is None and policy.cutoff(NEWS, now=10 * DAY) == 3 * DAY
    assert policy.active and not RetentionPolicy(0, {SPORT: 0}).active
    overrides.set(NEWS, None)
    assert overrides.all() == {SPORT: 0}
    for bad in (-1, float("nan"), 10**9):
        with pytest.raises(InputError):
            check_days(bad, "--keep-days")


def test_plan_then_prune_every_tenant(services: Services) -> None:
    services.set_keep_days("@sport", 0)  # sport: forever
    plans = services.prune_plan()
    assert [(p.tenant, p.channel_id, p.expired, p.posts) for p in plans] == [
        ("default", NEWS, [1, 2, 3], 5), ("acme", NEWS, [1], 2)]
    assert present(services.index) == {NEWS: [1, 2, 3, 4, 5], SPORT: [1, 2]}

    batches: list[int] = []
    report = services.prune(plans, on_batch=lambda _p, n: batches.append(n))
    assert (report.deleted, [p.status for p in report.channels]) == (4, ["done", "done"])
    assert sum(batches) == 4
    assert present(services.index) == {NEWS: [4, 5], SPORT: [1, 2]}
    assert present(services.index, "acme") == {NEWS: [2]}
    assert all(not p.expired for p in services.prune_plan())  # nothing left: a rerun is a no-op

    forced = services.prune_plan(older_than=100)
    assert [(p.tenant, p.channel_id, p.expired) for p in forced] == [
        ("default", NEWS, []), ("default", SPORT, [1]), ("acme", NEWS, [])]


def test_prune_finds_posts_the_catalog_lost(services: Services) -> None:
    """An ingest killed between its docstore commit and its catalog write leaves a post that
    only the store and the docstore know: the prune deletes it too."""
    services.index.catalog.forget_posts(NEWS, [2])
    plan = next(p for p in services.prune_plan() if p.tenant == "default")
    assert plan.expired == [1, 2, 3]
    services.prune([plan])
    assert services.index.store.chunks_of("tg:1001:2") == []
    assert services.index.post_text("tg:1001:2") is None


def test_prune_waits_for_a_running_sync(services: Services) -> None:
    registry = ChannelRegistry(services.index.redis, services.index.namespace)
    state = registry.add("news")
    state.channel_id = NEWS
    registry.save(state)
    lock = registry.lock("news", 60)
    assert lock.acquire()
    try:
        report = services.prune(services.prune_plan(), lock_wait=0.2)
    finally:
        lock.release()
    statuses = {(p.tenant, p.channel_id): p.status for p in report.channels}
    assert statuses == {("default", NEWS): "busy", ("default", SPORT): "done",
                        ("acme", NEWS): "done"}
    assert present(services.index)[NEWS] == [1, 2, 3, 4, 5]  # untouched while the sync held it


def test_keep_days_names_and_errors(services: Services) -> None:
    assert services.set_keep_days("News", 7)["keep_days"] == 7  # by exact title
    assert services.set_keep_days(str(SPORT), None)["keep_days"] == 30  # back to the setting
    with pytest.raises(NotFoundError):
        services.set_keep_days("@nosuch", 3)


# -- syncs and the schedule ------------------------------------------------------------------------


def test_sync_skips_expired_posts_and_the_schedule_prunes(services: Services) -> None:
    fake = FakeTelegram()
    news = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    news.post("Очень старая новость", age=timedelta(days=60))
    news.post("Вчерашняя новость", age=timedelta(days=1))
    index = services.index

    async def main() -> Any:
        sync = ChannelSync(index, new_client(fake), pipeline=services.pipeline())
        first = await sync.sync_channel("@technews")
        backfill = await sync.sync_channel("technews", backfill=10)
        scheduler = SyncScheduler(sync, interval=0, after_run=services.scheduled_prune)
        await scheduler.run_forever()  # one run (interval 0), then the prune
        return first, backfill

    first, backfill = run(main())
    assert (first.new, first.expired) == (1, 0)  # the first sync starts at the cutoff
    assert (backfill.new, backfill.expired) == (0, 1)  # a backfill does not bring it back
    assert present(index) == {NEWS: [4, 5], SPORT: [2], 1500000001: [2]}


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli_dir(retention_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    with Index.open(retention_settings, purpose="pytest") as index:
        fill(index)
    monkeypatch.setenv("TGRAG_DATA_DIR", str(retention_settings.data_dir))
    monkeypatch.setenv("TGRAG_RETENTION_DAYS", "30")
    return retention_settings.data_dir


def test_cli_prune_counts_first_then_deletes(cli_dir: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["channels", "set", "@sport", "--keep-days", "0"])
    assert done.exit_code == 0 and "sport: posts kept forever" in done.stdout, done.stderr

    dry = runner.invoke(app, ["prune", "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.splitlines()[0].startswith("@news") and "3 of 5 posts" in dry.stdout
    assert "acme/@news" in dry.stdout and "dry run: 4 posts would be deleted" in dry.stdout

    real = runner.invoke(app, ["prune"])
    assert real.exit_code == 0, real.stderr
    lines = real.stdout.splitlines()
    assert "3 of 5 posts" in lines[0] and lines[-1].startswith("deleted 4 posts")

    again = runner.invoke(app, ["prune", "--older-than", "3", "--json"])
    data = json.loads(again.stdout)
    assert (data["dry_run"], data["deleted"]) == (False, 2)  # news 4 (5 days), sport 1
    assert {(c["channel"], c["deleted"]) for c in data["channels"] if c["tenant"] == "default"} \
        == {("news", 1), ("sport", 1)}


def test_cli_keep_days_errors(cli_dir: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["channels", "set", "@news", "--keep-days", "soon"])
    assert bad.exit_code == 2 and "error: --keep-days takes a number" in bad.stderr
    zero = runner.invoke(app, ["prune", "--older-than", "0"])
    assert zero.exit_code == 2 and "would delete every post" in zero.stderr


def test_cli_group_opt_in_and_list(cli_dir: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(app, ["channels", "add", "--group", "@devchat"])
    assert added.exit_code == 0 and "following devchat (group chat)" in added.stdout
    listed = runner.invoke(app, ["channels", "list"])
    assert "devchat" in listed.stdout and " group " in listed.stdout
    assert "kept 30d" in listed.stdout
    data = json.loads(runner.invoke(app, ["channels", "list", "--json"]).stdout)
    assert data["channels"][0]["group"] is True and data["channels"][0]["keep_days"] == 30


def test_worker_prunes_after_each_scheduled_sync(settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``tgrag worker`` with TGRAG_RETENTION_DAYS: the first sync starts at the cutoff, and the
    prune after the run deletes what an export brought in that is too old."""
    import signal

    from ingest.telegram import connector
    from ingest.telegram.reader import make_client
    from tests.fake_telegram import FakeSender, printed, send_signal, until

    fake = FakeTelegram(require_auth=True)
    news = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    news.post("Запущен новый спутник связи", age=timedelta(days=10))
    news.post("Открылась выставка роботов", age=timedelta(days=1))
    with Index.open(settings) as index:
        PostPipeline(index).ingest(CORPUS)  # an export: news 1-4 and sport 1 are older than 5d
    for key, value in {"TGRAG_DATA_DIR": str(settings.data_dir), "TGRAG_TG_API_ID": "1",
                       "TGRAG_TG_API_HASH": "x", "TGRAG_RETENTION_DAYS": "5",
                       "TGRAG_TG_SESSION": fake.login_session()}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(connector, "new_client",
                        lambda s, **options: fake.attach(make_client(s, **options)))

    async def telegram(conn: FakeSender) -> None:
        await until(lambda: "pruned 5 posts past their retention" in printed(), "the prune")
        send_signal(signal.SIGTERM)

    fake.script = telegram
    assert CliRunner().invoke(app, ["channels", "add", "technews"]).exit_code == 0
    result = CliRunner().invoke(app, ["worker", "--interval", "30"])
    assert fake.script_error is None, fake.script_error
    assert result.exit_code == 0, result.output
    assert "technews: 1 new" in result.stdout
    with Index.open(settings) as index:
        assert present(index) == {NEWS: [5], SPORT: [2], 1500000001: [2]}
