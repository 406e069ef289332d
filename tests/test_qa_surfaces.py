"""/ask, /ask/stream, /tags and `tgrag ask` / `tgrag tags` over a tiny real index (offline mode)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from rag.tag_stats import top_tags
from tests.conftest import LOCAL
from tests.search_corpus import ECON_TEXTS, LONG_POST, _post

ECON = (1001, "econ_daily", "Экономика за день")
CITY = (1002, "moscow_city", "Город и транспорт")


@pytest.fixture
def filled(index: Index) -> Index:
    posts = [_post(ECON, i, i, t) for i, t in enumerate(ECON_TEXTS[:3], 1)]
    posts += [_post(CITY, 100, 30, LONG_POST + " #метро"), _post(CITY, 1, 10, "Новости #метро")]
    PostPipeline(index).ingest(posts)
    return index


@pytest.fixture
def client(filled: Index) -> Iterator[TestClient]:
    from api.app import create_app

    app: FastAPI = create_app(filled.settings, index=filled)
    with TestClient(app, client=LOCAL) as c:
        yield c


def test_tags_count_posts_not_chunks(filled: Index) -> None:
    assert len(filled.store.chunks_of("tg:1002:100")) >= 2
    data = top_tags(filled)
    assert data["posts"] == 5
    assert {"tag": "метро", "posts": 2} in data["tags"]
    from rag.search import SearchFilters

    econ = top_tags(filled, SearchFilters(channel_ids=[1001]))
    assert econ["posts"] == 3 and all(t["tag"] != "метро" for t in econ["tags"])


def test_http_ask_and_stream_and_tags(client: TestClient) -> None:
    r = client.post("/ask", json={"question": "Какая ключевая ставка?", "channel": ["econ_daily"]})
    assert r.status_code == 200
    data = r.json()
    assert data["mode"] == "extractive" and "[1]" in data["answer"]
    assert data["sources"][0]["id"] == "tg:1001:1"
    assert {s["channel"] for s in data["sources"]} == {"econ_daily"}

    with client.stream("POST", "/ask/stream", json={"question": "ключевая ставка"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("event: ") for line in r.iter_lines()
                  if line.startswith("event: ")]
    assert events[0] == "token" and events[-2:] == ["sources", "done"]

    assert client.post("/ask", json={"question": "  "}).status_code == 400
    tags = client.get("/tags", params={"channel": "moscow_city"}).json()
    assert tags["posts"] == 2 and tags["tags"][0] == {"tag": "метро", "posts": 2}


def test_cli_ask_and_tags(filled: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    from api import cli
    from api.cli.qa_commands import register

    if not any(c.name in ("ask",) or getattr(c.callback, "__name__", "") == "ask"
               for c in cli.app.registered_commands):
        register(cli.app)
    settings: Settings = filled.settings
    filled.close()  # the CLI opens the data folder itself
    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    out = runner.invoke(cli.app, ["ask", "ключевая ставка", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["sources"][0]["n"] == 1
    out = runner.invoke(cli.app, ["ask", "ключевая ставка"])
    assert out.exit_code == 0 and "[1]" in out.output and "extractive" in out.output
    out = runner.invoke(cli.app, ["tags", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["posts"] == 5


def test_unrelated_question_is_not_found_with_default_threshold(client: TestClient) -> None:
    data = client.post("/ask", json={"question": "рецепт борща"}).json()
    assert data["mode"] == "not_found" and data["sources"] == []
