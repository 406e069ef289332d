"""The HTTP API through FastAPI's TestClient (lifespan included): shapes and problem+json errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

import api.app
from api.app import create_app
from ingest.pipeline import PostPipeline
from rag.datadir import DataDirLock
from rag.errors import DataDirLocked
from rag.index import Index
from rag.settings import Settings
from tests.conftest import LOCAL, module_settings
from tests.search_corpus import CITY, ECON, GAMES, corpus

SEARCH_KEYS = {"id", "channel_id", "channel", "channel_title", "message_id", "date", "link",
               "score", "snippet", "tags", "highlights", "copies"}
PROBLEM_KEYS = {"type", "title", "status", "detail", "hint"}
POSTS = [p for p in corpus() if p.message_id <= 4]  # 12 short posts, 4 per channel


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A data folder with 12 posts (closed again: the app's lifespan opens it)."""
    settings = module_settings(tmp_path_factory, "api")
    with Index.open(settings, purpose="pytest api") as index:
        assert PostPipeline(index).ingest(POSTS).new == len(POSTS)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOCAL) as client:
        yield client


def assert_problem(response: Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    for needle in needles:
        assert needle in body["detail"], body
    return body


# -- search ---------------------------------------------------------------------------------------


def test_search_results_shape(client: TestClient) -> None:
    response = client.get("/search", params={"q": "ЦБ поднял процентную ставку", "k": 3})
    assert response.status_code == 200, response.text
    data = response.json()
    assert list(data) == ["results", "next_offset"] and len(data["results"]) == 3
    assert all(set(r) == SEARCH_KEYS for r in data["results"])
    top = data["results"][0]
    assert top["id"] == "tg:1001:1" and top["channel_title"] == ECON[2]
    assert top["date"] == "2024-05-01T10:00:00+00:00"
    assert top["link"] == "https://t.me/econ_daily/1"


def test_search_filters(client: TestClient) -> None:
    response = client.get("/search", params=[("q", "новости"), ("channel", "econ_daily"),
                                             ("channel", CITY[2]), ("since", "2024-05-02"),
                                             ("until", "2024-05-10"), ("k", "20")])
    assert sorted(r["id"] for r in response.json()["results"]) == [
        "tg:1001:2", "tg:1001:3", "tg:1001:4", "tg:1002:1"]
    response = client.get("/search", params=[("q", "новости"), ("tag", "метро"), ("tag", "игры")])
    assert sorted(r["id"] for r in response.json()["results"]) == [
        "tg:1002:1", "tg:1002:3", "tg:1003:1", "tg:1003:4"]
    response = client.get("/search", params={"q": "ставка", "channel": str(GAMES[0])})
    assert {r["channel_id"] for r in response.json()["results"]} == {GAMES[0]}


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"q": ""}, 400, "empty query"),
        ({}, 400, "empty query"),
        ({"q": "ставка", "k": 0}, 400, "k must be between 1 and 100"),
        ({"q": "ставка", "k": 101}, 400, "k must be between 1 and 100"),
        ({"q": "ставка", "k": "many"}, 422, "k: "),
        ({"q": "ставка", "since": "2024-05-10", "until": "2024-05-01"}, 400, "is after"),
        ({"q": "ставка", "since": "вчера"}, 400, "invalid date"),
        ({"q": "ставка", "mode": "bm25"}, 400, "unknown search mode"),
        ({"q": "ставка", "channel": "nosuchchannel"}, 400, "unknown channel"),
    ],
)
def test_bad_search_is_problem_json(client: TestClient, params: dict, status: int,
                                    needle: str) -> None:
    body = assert_problem(client.get("/search", params=params), status, needle)
    if status == 400:
        assert body["title"] == "Bad input" and body["hint"]
        assert body["type"] == "urn:tgrag:error:input-error"


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    assert_problem(client.get("/nope"), 404)


# -- stats and health -----------------------------------------------------------------------------


def test_stats(client: TestClient) -> None:
    response = client.get("/stats")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"posts", "points", "embedding_model", "channels"}
    assert data["posts"] == data["points"] == len(POSTS)
    assert [c["channel_id"] for c in data["channels"]] == [ECON[0], CITY[0], GAMES[0]]
    assert data["channels"][0] == {"channel_id": ECON[0], "channel": ECON[1],
                                   "channel_title": ECON[2], "posts": 4,
                                   "first_date": POSTS[0].date, "last_date": POSTS[3].date}


def test_health_ok(client: TestClient) -> None:
    response = client.get("/health")  # liveness only
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "qdrant": "ok"}


def test_health_reports_what_failed(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    index = client.app.state.services.index  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(index.redis, "ping", broken)
    assert client.get("/health").status_code == 200  # liveness checks no backend
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["qdrant"] == "ok"
    # Which one, not how: the exception's text (a socket path, an address) is for the log.
    assert body["redis"] == "error: unreachable" and "connection refused" not in response.text


# -- lifespan -------------------------------------------------------------------------------------


def test_import_opens_nothing() -> None:
    assert not hasattr(api.app.app.state, "services")


def test_lifespan_owns_the_data_folder(settings: Settings, client: TestClient) -> None:
    with pytest.raises(DataDirLocked, match=f"process {os.getpid()} \\(tgrag serve\\)"):
        DataDirLock(settings.data_dir).acquire("pytest")


def test_lifespan_releases_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), client=LOCAL) as client:
        assert client.get("/stats").json()["posts"] == 0
        assert client.get("/search", params={"q": "ставка"}).json() == {"results": [],
                                                                       "next_offset": None}
    lock = DataDirLock(settings.data_dir)
    lock.acquire("pytest")  # free again
    lock.release()


# -- API details: hints for this surface, one channel as a string, plain-worded errors ------------


def test_post_search_takes_one_channel_as_a_string_like_get(client: TestClient) -> None:
    query = {"q": "новости", "k": 20}
    got = client.get("/search", params={**query, "channel": "econ_daily", "tag": "ставка"})
    posted = client.post("/search", json={**query, "channel": "econ_daily", "tag": "ставка"})
    assert posted.status_code == 200, posted.text
    assert posted.json() == got.json() and got.json()["results"]
    listed = client.post("/search", json={**query, "channel": ["econ_daily"], "tag": ["ставка"]})
    assert listed.json() == got.json()
    asked = client.post("/ask", json={"question": "Что со ставкой?", "channel": "econ_daily"})
    assert asked.status_code == 200, asked.text


def test_hints_are_written_for_http(client: TestClient) -> None:
    for path in ("/search?q=ставка&k=0", "/posts/econ_daily/1/similar?k=0"):
        body = assert_problem(client.get(path), 400, "k must be between 1 and 100")
        assert "-k" not in body["hint"] and "10" in body["hint"], body


def test_invalid_json_is_said_in_plain_words(client: TestClient) -> None:
    response = client.post("/search", content=b'{"q": "x",}',
                           headers={"Content-Type": "application/json"})
    body = assert_problem(response, 422, "not valid JSON")
    assert "JSON decode error" not in body["detail"] and "body.10" not in body["detail"], body
    assert "character 10" in body["detail"] and "Content-Type: application/json" in body["hint"]
    missing = assert_problem(client.post("/search"), 422)
    assert missing["detail"] == "the request has no JSON body", missing
