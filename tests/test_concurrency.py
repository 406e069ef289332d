"""16 concurrent searches while an upload and a sync write into the same embedded index: no error.

The API process as it runs: request threads (TestClient runs the sync routes in a thread pool, as
uvicorn does), the upload thread (``POST /ingest/export``) and the sync job on the event loop
(``POST /sync``, Telegram faked by ``tests/fake_telegram.py``), all on one qdrant-edge shard.  With
local mode, searches racing a writer failed (``IndexError`` in qdrant-client's payload filters,
HTTP 500).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ingest.pipeline import PostPipeline
from ingest.telegram.scheduler import SyncScheduler
from ingest.telegram.sync import ChannelSync
from rag.index import Index
from rag.settings import Settings
from rag.store.edge import EdgeStore
from tests.fake_telegram import FakeChannel, FakeTelegram, new_client
from tests.search_corpus import corpus
from tests.test_api_full import jsonl, wait_job

pytestmark = pytest.mark.slow

CLIENTS = 16
WORDS = ["ставка", "футбол", "погода", "выставка", "спутник", "рубль", "дороги", "театр"]
UPLOAD = [
    {"id": n, "channel_id": 2001, "channel": "@space_news", "channel_title": "Космос сегодня",
     "date": f"2024-06-{1 + n % 28:02d}T09:00:00+00:00",
     "text": f"Новость {n}: {WORDS[n % len(WORDS)]} и космос, запуск номер {n} прошёл успешно."}
    for n in range(1, 81)
]


async def _scheduler(index: Index, fake: FakeTelegram, pipeline: PostPipeline) -> Any:
    return SyncScheduler(ChannelSync(index, new_client(fake), pipeline=pipeline))


def test_searches_during_an_upload_and_a_sync(settings: Settings) -> None:
    fake = FakeTelegram()
    channel = fake.add(FakeChannel(1500000001, "technews", "Тех новости"))
    for i in range(60):
        channel.post(f"Тех новость {i}: {WORDS[i % len(WORDS)]}, подробности в канале.",
                     age=timedelta(hours=60 - i))
    with Index.open(settings, purpose="pytest concurrency") as index:
        assert isinstance(index.store, EdgeStore)
        PostPipeline(index).ingest(corpus())
        app = create_app(settings, index=index)
        outcomes: Counter[str] = Counter()
        during: list[int] = []
        writing = threading.Event()
        stop = threading.Event()

        with TestClient(app) as http:
            assert http.post("/channels", json={"channel": "@technews"}).status_code == 201
            app.state.services.set_scheduler(http.portal.call(
                _scheduler, index, fake, PostPipeline(index, batch_size=8)))

            def client(n: int) -> None:
                i = 0
                while not stop.is_set():
                    params: dict[str, Any] = {"q": WORDS[(n + i) % len(WORDS)], "k": 5}
                    if i % 3 == 1:
                        params["channel"] = "econ_daily"  # known from the start
                    if i % 4 == 2:
                        params["mode"] = "sparse"
                    try:
                        response = http.get("/search", params=params)
                        key = str(response.status_code)
                        if response.status_code == 200 and "results" not in response.json():
                            key = "bad body"
                    except Exception as exc:  # a reset connection, a server-side crash
                        key = type(exc).__name__
                    outcomes[key] += 1
                    if writing.is_set():
                        during.append(1)
                    i += 1

            threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                writing.set()
                upload = http.post("/ingest/export", files={"file": (
                    "space.jsonl", jsonl(UPLOAD), "application/json")})
                assert upload.status_code == 202, upload.text
                sync = http.post("/sync", json={})
                assert sync.status_code == 202, sync.text
                job = wait_job(http, upload.json()["job_id"], timeout=300)
                deadline = time.monotonic() + 300
                while (sjob := http.get(f"/sync/{sync.json()['job_id']}").json())["status"] in (
                        "queued", "running"):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                writing.clear()
                time.sleep(0.3)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            stats = http.get("/stats").json()

    assert job["status"] == "done" and job["new"] == len(UPLOAD), job
    assert sjob["status"] == "done" and sjob["posts"] == 60, sjob
    assert stats["posts"] == len(corpus()) + len(UPLOAD) + 60
    assert outcomes.keys() == {"200"}, outcomes
    assert len(during) >= CLIENTS * 2, (len(during), outcomes)  # they did overlap the writes
