"""API keys, tenants and rate limits: auth on every route but /health (and the page), 401 for a
wrong key, 429 with Retry-After, and tenant isolation through every read route."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import check_bind, parse_api_keys
from ingest.pipeline import PostPipeline
from rag.errors import InputError
from rag.index import Index
from rag.settings import Settings
from tests.conftest import LOCAL, module_settings
from tests.search_corpus import corpus
from tests.test_api import assert_problem

POSTS = [p for p in corpus() if p.message_id <= 2]  # default tenant: 6 posts, 3 channels
KEYS = "op-key,acme-key:acme,globex-key:globex"
OP, ACME, GLOBEX = ({"Authorization": "Bearer op-key"}, {"X-API-Key": "acme-key"},
                    {"Authorization": "Bearer globex-key"})
# acme and globex both upload a post of the same channel id and message id (a shared channel).
SHARED_CHANNEL = (3001, "shared_chan", "Общий канал")


def upload_records(text: str, tag: str) -> bytes:
    records = [{"id": 1, "channel_id": SHARED_CHANNEL[0], "channel": "@" + SHARED_CHANNEL[1],
                "channel_title": SHARED_CHANNEL[2], "date": "2024-06-01T09:00:00+00:00",
                "text": f"{text} #{tag}"},
               {"id": 2, "channel_id": SHARED_CHANNEL[0], "channel": "@" + SHARED_CHANNEL[1],
                "channel_title": SHARED_CHANNEL[2], "date": "2024-06-02T09:00:00+00:00",
                "text": f"Ещё одна новость канала: {text.lower()} #{tag}"}]
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Dense: /ask's no-answer threshold is on the cosine scale (see test_api_full).
    # No throttles here: these tests send wrong keys on purpose, many times (test_abuse.py
    # checks the throttle on wrong keys against a real server).
    settings = module_settings(tmp_path_factory, "auth", api_keys=KEYS, rate_limit=0,
                               auth_failure_limit=0, search_mode="dense")
    with Index.open(settings, purpose="pytest auth") as index:
        PostPipeline(index).ingest(POSTS)
    return settings


def wait_done(client: TestClient, job_id: str, headers: dict) -> dict:
    for _ in range(600):
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError("job did not finish")


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOCAL) as client:
        for headers, text, tag in [
            (ACME, "Акме открыла завод по выпуску роботов-пылесосов", "акме"),
            (GLOBEX, "Глобекс запустила спутниковый интернет для деревень", "глобекс"),
        ]:
            response = client.post("/ingest/export", headers=headers,
                                   files={"file": ("dump.jsonl", upload_records(text, tag))})
            assert response.status_code == 202, response.text
            job = wait_done(client, response.json()["job_id"], headers)
            assert (job["status"], job["new"]) == ("done", 2), job
        yield client


# -- keys -----------------------------------------------------------------------------------------


def test_parse_keys() -> None:
    assert parse_api_keys(["a", "b:acme", " c:globex "]) == {
        "a": "default", "b": "acme", "c": "globex"}
    with pytest.raises(InputError, match="entry 1 is ambiguous"):
        parse_api_keys(["k:bad tenant!"])


@pytest.mark.parametrize(("entries", "message"), [
    # `Zx8:Q` was read as key `Zx8` of tenant `q`: is the ':' part of the key?
    (["ok", "Zx8:Q"], "entry 2 is ambiguous"),
    (["a:b:c"], "more than one ':'"),
    ([":acme"], "empty key"),
    (["k1", "k1:acme"], "repeats an earlier key"),
    (["ключ"], "non-ASCII"),
])
def test_ambiguous_keys_are_refused_naming_the_entry(entries: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        parse_api_keys(entries)
    assert "key:tenant" in (err.value.hint or "")
    assert "Zx8" not in str(err.value)  # a key is never echoed


def test_serve_with_an_ambiguous_key_stops_at_start(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TGRAG_API_KEYS", "Zx8:Q")
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)  # never serve here
    result = CliRunner().invoke(app, ["serve", "--port", "8999"])
    assert result.exit_code == 2, result.output
    assert "TGRAG_API_KEYS entry 1 is ambiguous" in result.output
    assert "hint:" in result.output and "key:tenant" in result.output
    assert not (tmp_path / "data").exists()  # refused before the data folder was opened


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "[::1]", "127.0.0.2",
                                  "127.1.2.3", "::ffff:127.0.0.1"])
def test_no_keys_allows_loopback(host: str) -> None:
    check_bind(Settings(_env_file=None), host)  # type: ignore[call-arg]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "128.0.0.1",
                                  "::ffff:10.0.0.1"])
def test_no_keys_refuses_other_binds(host: str) -> None:
    with pytest.raises(InputError, match="no API keys are configured"):
        check_bind(Settings(_env_file=None), host)  # type: ignore[call-arg]
    check_bind(Settings(api_keys="k", _env_file=None), host)  # type: ignore[call-arg]


def _calls(client: TestClient) -> list[tuple[str, str]]:
    """Every API route (from the OpenAPI schema, which is public) with its parameters filled."""
    fills = {"{channel}": "econ_daily", "{message_id}": "1", "{job_id}": "abc"}
    out = [("GET", "/")]
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for k, v in fills.items():
            path = path.replace(k, v)
        out += [(method.upper(), path) for method in item]
    return out


def test_every_route_but_health_needs_a_key(client: TestClient) -> None:
    calls = _calls(client)
    assert len(calls) >= 19
    for method, path in calls:
        public = path in ("/health", "/")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                        {"Authorization": "Basic b3Ata2V5Og=="}):
            response = client.request(method, path, headers=headers)
            if public:
                assert response.status_code == 200, (method, path)
            else:
                body = assert_problem(response, 401)
                assert response.headers["www-authenticate"].startswith("Bearer"), path
                assert body["hint"]


def test_right_key_in_either_header(client: TestClient) -> None:
    for headers in (OP, {"X-API-Key": "op-key"}, ACME, {"Authorization": "bearer acme-key"}):
        assert client.get("/stats", headers=headers).status_code == 200


def test_operator_routes_refuse_other_tenants(client: TestClient) -> None:
    assert client.get("/metrics", headers=OP).status_code == 200
    assert client.get("/channels", headers=OP).status_code == 200
    for path in ("/metrics", "/channels"):
        assert_problem(client.get(path, headers=ACME), 403)


def test_rate_limit_429_with_retry_after(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_keys="k1,k2", rate_limit=3,
                        _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), client=LOCAL) as client:
        one = {"X-API-Key": "k1"}
        for _ in range(3):
            assert client.get("/stats", headers=one).status_code == 200
        response = client.get("/stats", headers=one)
        body = assert_problem(response, 429, "rate limit of 3 requests per minute")
        assert 1 <= int(response.headers["retry-after"]) <= 20 and body["hint"]
        # Per key: the other key still has its tokens; a wrong key is 401, not 429.
        assert client.get("/stats", headers={"X-API-Key": "k2"}).status_code == 200
        assert client.get("/stats", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/health").status_code == 200  # health is never limited


# -- tenant isolation -----------------------------------------------------------------------------


def ids(response) -> set[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()["results"]}


def test_search_sees_only_own_tenant(client: TestClient) -> None:
    q = {"q": "завод роботов спутниковый интернет новости", "k": 50}
    acme, globex, op = (ids(client.get("/search", params=q, headers=h))
                        for h in (ACME, GLOBEX, OP))
    assert acme == {"acme/tg:3001:1", "acme/tg:3001:2"}
    assert globex == {"globex/tg:3001:1", "globex/tg:3001:2"}
    assert op and all(i.startswith("tg:") for i in op) and not op & {"tg:3001:1"}
    assert ids(client.post("/search", json=q, headers=ACME)) == acme
    # Naming the other tenant's channel does not help.
    assert ids(client.get("/search", params={**q, "channel": "3001"}, headers=OP)) == set()
    assert_problem(client.get("/search", params={**q, "channel": "econ_daily"}, headers=ACME),
                   400, "unknown channel")


def test_posts_and_similar_see_only_own_tenant(client: TestClient) -> None:
    acme = client.get("/posts/shared_chan/1", headers=ACME).json()
    globex = client.get("/posts/shared_chan/1", headers=GLOBEX).json()
    assert acme["id"] == "acme/tg:3001:1" and "Акме" in acme["text"]
    assert globex["id"] == "globex/tg:3001:1" and "Глобекс" in globex["text"]
    assert_problem(client.get("/posts/3001/1", headers=OP), 404)
    assert_problem(client.get("/posts/econ_daily/1", headers=ACME), 404)
    assert_problem(client.get("/posts/1001/1", headers=ACME), 404)
    similar = ids(client.get("/posts/shared_chan/1/similar", params={"k": 50}, headers=ACME))
    assert similar == {"acme/tg:3001:2"}
    assert_problem(client.get("/posts/1001/1/similar", headers=GLOBEX), 404)
    op_similar = ids(client.get("/posts/econ_daily/1/similar", params={"k": 50}, headers=OP))
    assert op_similar and all(i.startswith("tg:") and i != "tg:3001:2" for i in op_similar)


def test_tags_stats_ask_see_only_own_tenant(client: TestClient) -> None:
    acme_tags = {t["tag"] for t in client.get("/tags", headers=ACME).json()["tags"]}
    assert "акме" in acme_tags and "глобекс" not in acme_tags
    op_tags = {t["tag"] for t in client.get("/tags", headers=OP).json()["tags"]}
    assert not op_tags & {"акме", "глобекс"}

    acme_stats = client.get("/stats", headers=ACME).json()
    assert (acme_stats["posts"], acme_stats["points"]) == (2, 2)
    assert [c["channel_id"] for c in acme_stats["channels"]] == [SHARED_CHANNEL[0]]
    op_stats = client.get("/stats", headers=OP).json()
    assert op_stats["posts"] == len(POSTS)
    assert SHARED_CHANNEL[0] not in [c["channel_id"] for c in op_stats["channels"]]

    question = {"question": "Кто запустил спутниковый интернет для деревень?"}
    globex = client.post("/ask", json=question, headers=GLOBEX).json()
    assert globex["sources"] and all(s["id"].startswith("globex/") for s in globex["sources"])
    acme = client.post("/ask", json=question, headers=ACME).json()
    assert all(s["id"].startswith("acme/") for s in acme["sources"])
    assert "Глобекс" not in acme["answer"]
    with client.stream("POST", "/ask/stream", json=question, headers=ACME) as resp:
        assert "Глобекс" not in "".join(resp.iter_text())


def test_jobs_are_per_tenant(client: TestClient) -> None:
    response = client.post("/ingest/export", headers=ACME,
                           files={"file": ("x.json", b"[]")})
    job_id = response.json()["job_id"]
    assert wait_done(client, job_id, ACME)["status"] == "done"
    assert_problem(client.get(f"/jobs/{job_id}", headers=GLOBEX), 404)
    assert_problem(client.get(f"/jobs/{job_id}", headers=OP), 404)


def test_serve_refuses_open_bind_without_keys(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8999"])
    assert result.exit_code == 2
    assert "refusing to bind 0.0.0.0" in result.output and "TGRAG_API_KEYS" in result.output
    assert not (tmp_path / "data").exists()  # refused before the data folder was opened
