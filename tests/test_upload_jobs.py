"""Upload jobs in one process (TestClient): the cap on posts per upload, cancelling a job
(``DELETE /jobs/{id}``), uploads kept in the data folder.  The real-server cases — fairness
between tenants, cancelling a running job, a restart — are in test_abuse.py and test_faults.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.settings import Settings
from tests.conftest import LOCAL, module_settings
from tests.test_api import assert_problem

KEYS = "acme-key:acme,globex-key:globex"
ACME, GLOBEX = {"X-API-Key": "acme-key"}, {"X-API-Key": "globex-key"}
WORDS = ["погода", "выборы", "футбол", "биржа", "театр", "наука", "дороги", "школа"]


def records(n: int, channel_id: int = 5001, start: int = 1) -> bytes:
    lines = [{"id": i, "channel_id": channel_id, "channel": "@bulk", "channel_title": "Поток",
              "date": 1_717_000_000 + 60 * i,
              "text": f"Сообщение {i}: {WORDS[i % len(WORDS)]} и подробности дня {i}."}
             for i in range(start, start + n)]
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in lines).encode()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return module_settings(tmp_path_factory, "uploads", api_keys=KEYS, rate_limit=0,
                           max_upload_posts=50, ingest_batch_size=1)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOCAL) as client:
        yield client


def post(client: TestClient, body: bytes, headers: dict, name: str = "posts.jsonl") -> str:
    response = client.post("/ingest/export", headers=headers, files={"file": (name, body)})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def job(client: TestClient, job_id: str, headers: dict) -> dict:
    response = client.get(f"/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_status(client: TestClient, job_id: str, headers: dict, statuses: set[str],
                timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job(client, job_id, headers)
        if state["status"] in statuses:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {state}")


def test_an_upload_over_the_post_cap_fails_and_writes_nothing(client: TestClient,
                                                              settings: Settings) -> None:
    job_id = post(client, records(51), GLOBEX, "too-many.jsonl")
    state = wait_status(client, job_id, GLOBEX, {"done", "failed"})
    assert state["status"] == "failed", state
    assert "more than 50 posts" in state["error"] and "TGRAG_MAX_UPLOAD_POSTS" in state["error"]
    assert client.get("/stats", headers=GLOBEX).json()["posts"] == 0
    assert list((settings.data_dir / "uploads").iterdir()) == []  # its file is gone too


def test_cancel_a_queued_job_then_the_running_one(client: TestClient,
                                                  settings: Settings) -> None:
    first = post(client, records(40), ACME, "first.jsonl")
    second = post(client, records(3, channel_id=5002), ACME, "second.jsonl")
    wait_status(client, first, ACME, {"running"})
    assert job(client, second, ACME)["status"] == "queued"  # one tenant's jobs run in order
    uploads = settings.data_dir / "uploads"
    assert len(list(uploads.iterdir())) == 2  # kept in the data folder while the jobs live

    # Another tenant's job does not exist for you, not even to cancel it.
    assert_problem(client.delete(f"/jobs/{second}", headers=GLOBEX), 404)
    cancelled = client.delete(f"/jobs/{second}", headers=ACME)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    running = client.delete(f"/jobs/{first}", headers=ACME)
    assert running.status_code == 202, running.text
    assert running.json()["cancel_requested"] is True
    state = wait_status(client, first, ACME, {"cancelled", "done", "failed"})
    assert state["status"] == "cancelled" and state["finished"], state
    assert 0 < state["new"] < 40, state  # stopped between batches; what was written stays
    assert client.get("/stats", headers=ACME).json()["posts"] == state["new"]
    assert job(client, second, ACME)["status"] == "cancelled"  # never started
    assert list(uploads.iterdir()) == []
    # Cancelling an ended job changes nothing.
    again = client.delete(f"/jobs/{first}", headers=ACME)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
