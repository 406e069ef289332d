"""``tgrag digest`` and ``GET /digest`` over one data folder: the contract's JSON, human output,
filters, tenants by API key, and one-line / problem+json errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app
from ingest.jobs import stamp_tenant
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from tests.conftest import module_settings
from tests.digest_corpus import RATE_IDS, acme_posts, day_posts
from tests.test_cli import assert_one_line_error

OP, ACME = {"Authorization": "Bearer op-key"}, {"X-API-Key": "acme-key"}
DAY = {"since": "2024-05-02", "until": "2024-05-02"}
POST_KEYS = {"id", "channel", "message_id", "link", "date"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The digest day ingested, closed again (the CLI and the app open it themselves)."""
    settings = module_settings(tmp_path_factory, "digest_surfaces",
                               api_keys=["op-key", "acme-key:acme"], rate_limit=0)
    with Index.open(settings, purpose="pytest digest") as index:
        PostPipeline(index).ingest(day_posts())
        PostPipeline(index.for_tenant("acme")).ingest(list(stamp_tenant(acme_posts(), "acme")))
    return settings


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    return settings.data_dir


def test_cli_digest_json_is_the_contract(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["digest", "--since", "2024-05-02", "--until", "2024-05-02",
                                      "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data)[:3] == ["since", "until", "stories"]
    assert (data["since"], data["until"]) == ("2024-05-02T00:00:00+00:00",
                                              "2024-05-02T23:59:59+00:00")
    top = data["stories"][0]
    assert {"title", "summary", "posts"} <= set(top) and top["mode"] == "extractive"
    assert all(set(p) >= POST_KEYS for s in data["stories"] for p in s["posts"])
    ids = {p["id"] for p in top["posts"]} | {c["id"] for p in top["posts"] for c in p["copies"]}
    assert ids == RATE_IDS
    assert data["posts"] == 12 and data["stories_total"] == 6


def test_cli_digest_human_output_and_filters(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["digest", "--since", "1d", "--until", "2024-05-02",
                                      "--channel", "@wire", "-n", "1"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("Digest 2024-05-01 23:59 – 2024-05-02 23:59 UTC: 2 posts, 2 stories "
                          "(top 1)")
    assert " 1. " in out and "[1] Лента  2024-05-02" in out and "https://t.me/wire/" in out
    assert "(summaries quoted from the posts; set TGRAG_LLM for written ones)" in out
    empty = CliRunner().invoke(app, ["digest", "--since", "2020-01-01", "--until", "2020-01-02"])
    assert empty.exit_code == 0 and "no posts in this period" in empty.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--since", "вчера"], "invalid --since"),
    (["--since", "2024-05-03", "--until", "2024-05-02"], "is after until"),
    (["--stories", "0"], "--stories must be between 1 and 100"),
    (["--channel", "no_such_channel"], "no_such_channel"),
])
def test_cli_digest_errors_are_one_line(data_dir: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(CliRunner().invoke(app, ["digest", *args]), 2, needle)


# -- HTTP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_get_digest(client: TestClient) -> None:
    response = client.get("/digest", params=DAY, headers=OP)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [len(s["posts"]) for s in data["stories"][:3]] == [3, 1, 3]
    assert data["stories"][0]["posts"][0]["link"] == "https://t.me/econ_daily/10"
    assert data["stories"][0]["size"] == 5 and data["stories"][0]["channels"] == 4
    top = client.get("/digest", params={**DAY, "stories": 2, "tag": ["нет_такого"]},
                     headers=OP).json()
    assert top["stories"] == [] and top["posts"] == 0
    wire = client.get("/digest", params={**DAY, "channel": "wire", "stories": 1},
                      headers=OP).json()
    assert len(wire["stories"]) == 1 and wire["stories_total"] == 2


def test_get_digest_is_tenant_scoped(client: TestClient) -> None:
    acme = client.get("/digest", params=DAY, headers=ACME).json()
    assert [p["id"] for s in acme["stories"] for p in s["posts"]] == ["acme/tg:2101:1"]
    assert client.get("/digest", params=DAY).status_code == 401


@pytest.mark.parametrize(("params", "needle"), [
    ({"since": "someday"}, "invalid --since"),
    ({"since": "2024-05-03", "until": "2024-05-02"}, "is after until"),
    ({"stories": 500}, "stories must be between 1 and 100"),
])
def test_bad_digest_requests_are_problems(client: TestClient, params: dict,
                                          needle: str) -> None:
    response = client.get("/digest", params=params, headers=OP)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.json()["detail"]


def test_openapi_documents_the_digest(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=OP).json()
    operation = spec["paths"]["/digest"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"since", "until", "channel", "tag",
                                                            "stories"}
    story = spec["components"]["schemas"]["DigestStory"]
    assert {"title", "summary", "posts"} <= set(story["required"])
