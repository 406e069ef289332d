"""Every API route through TestClient (lifespan included): search GET/POST, posts, similar,
upload → job → searchable, stats, tags, ask, health/ready, metrics, request ids, the web page."""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from tests.conftest import LOCAL, module_settings
from tests.search_corpus import ECON, corpus
from tests.test_api import SEARCH_KEYS, assert_problem

POSTS = [p for p in corpus() if p.message_id <= 4]  # 12 short posts, 4 per channel
SPACE = (2001, "space_news", "Космос сегодня")
UPLOAD = [
    {"id": n, "channel_id": SPACE[0], "channel": "@" + SPACE[1], "channel_title": SPACE[2],
     "date": f"2024-06-0{n}T09:00:00+00:00", "text": text}
    for n, text in enumerate([
        "Ракета-носитель вывела на орбиту спутник дистанционного зондирования Земли.",
        "Космонавты вышли в открытый космос для обслуживания станции.",
        "Телескоп сфотографировал далёкую галактику в инфракрасном диапазоне.",
    ], 1)
] + [{"id": 9, "channel_id": SPACE[0], "date": "2024-06-09T09:00:00+00:00", "text": ""}]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Dense: /ask's no-answer threshold (qa_min_score) is on the cosine scale; with the
    # hybrid default every ask is "not_found" (RRF scores are ~0.03).
    settings = module_settings(tmp_path_factory, "api_full", search_mode="dense")
    with Index.open(settings, purpose="pytest api_full") as index:
        assert PostPipeline(index).ingest(POSTS).new == len(POSTS)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOCAL) as client:
        yield client


def wait_job(client: TestClient, job_id: str, headers: dict | None = None,
             timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/jobs/{job_id}", headers=headers or {})
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def jsonl(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


# -- search ---------------------------------------------------------------------------------------


def test_post_search_equals_get(client: TestClient) -> None:
    params = {"q": "новости", "k": 20, "channel": ["econ_daily"], "since": "2024-05-02"}
    got = client.get("/search", params=params).json()
    posted = client.post("/search", json=params)
    assert posted.status_code == 200, posted.text
    assert posted.json() == got and got["results"]
    assert all(set(r) == SEARCH_KEYS for r in got["results"])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"q": ""}, 400, "empty query"),
    ({"q": "x" * 2001}, 400, "the limit is 2000"),
    ({"q": "ставка", "k": 1000}, 400, "k must be between"),
    ({"q": "ставка", "since": "2024-13-01"}, 400, "invalid date"),
    ({"q": "ставка", "k": "many"}, 422, "k: "),
    ({"q": "ставка", "mode": "fuzzy"}, 422, "mode"),
    ({"q": "ставка", "offset": -1}, 400, "offset must be between 0 and 400"),
    ({"q": "ставка", "offset": 401}, 400, "offset must be between"),
    ({"q": "ставка", "offset": "next"}, 422, "offset: "),
])
def test_post_search_validation(client: TestClient, body: dict, status: int,
                                needle: str) -> None:
    assert_problem(client.post("/search", json=body), status, needle)


def test_search_pages_by_offset(client: TestClient) -> None:
    params = {"q": "новости экономики и транспорта", "k": 8}
    whole = client.get("/search", params=params).json()
    assert whole["next_offset"] == 8
    page = client.get("/search", params={**params, "k": 4, "offset": 4}).json()
    assert [r["id"] for r in page["results"]] == [r["id"] for r in whole["results"][4:8]]
    assert page["next_offset"] == 8
    body = client.post("/search", json={**params, "k": 4, "offset": 4}).json()
    assert body == page
    last = client.get("/search", params={**params, "offset": len(POSTS) - 1}).json()
    assert len(last["results"]) == 1 and last["next_offset"] is None


def test_search_hits_mark_the_query_words(client: TestClient) -> None:
    top = client.get("/search", params={"q": "ключевые ставки", "k": 1}).json()["results"][0]
    assert top["id"] == "tg:1001:1" and top["copies"] == []
    assert [top["snippet"][s:e] for s, e in top["highlights"]] == ["ключевую", "ставку"]


def test_openapi_documents_offset_and_the_new_fields(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    params = {p["name"]: p for p in schema["paths"]["/search"]["get"]["parameters"]}
    offset = params["offset"]
    assert offset["schema"]["minimum"] == 0 and offset["schema"]["maximum"] == 400
    assert offset["schema"]["examples"] == [10]
    components = schema["components"]["schemas"]
    assert {"offset"} <= set(components["SearchRequest"]["properties"])
    assert {"highlights", "copies"} <= set(components["SearchHit"]["properties"])
    assert "next_offset" in components["SearchResponse"]["properties"]
    assert "copies" in components["SimilarResponse"]["required"]


# -- posts and similar ----------------------------------------------------------------------------


def test_get_post_by_username_and_id(client: TestClient) -> None:
    response = client.get("/posts/econ_daily/1")
    assert response.status_code == 200, response.text
    post = response.json()
    assert post["id"] == "tg:1001:1" and post["text"] == POSTS[0].text
    assert post["link"] == "https://t.me/econ_daily/1" and post["channel_title"] == ECON[2]
    assert post["date"] == "2024-05-01T10:00:00+00:00" and post["chunks"] == 1
    assert "ключевая_ставка" in post["tags"]
    assert "text" not in post["metadata"] and "tenant" not in post["metadata"]
    assert client.get(f"/posts/{ECON[0]}/1").json() == post


@pytest.mark.parametrize("path", ["/posts/econ_daily/99", "/posts/nosuch/1",
                                  "/posts/999/1", "/posts/econ_daily/99/similar"])
def test_missing_post_is_404(client: TestClient, path: str) -> None:
    assert_problem(client.get(path), 404)


def test_similar_posts(client: TestClient) -> None:
    response = client.get("/posts/econ_daily/1/similar", params={"k": 5})
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["results", "copies"]
    assert response.json()["copies"] == []  # no copies of this post in the corpus
    results = response.json()["results"]
    ids = [r["id"] for r in results]
    assert len(results) == 5 and "tg:1001:1" not in ids and len(set(ids)) == 5
    assert all(set(r) == SEARCH_KEYS for r in results)
    # A post about the key rate is nearest to other economy posts, not to games.
    assert results[0]["channel_id"] == ECON[0]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert_problem(client.get("/posts/econ_daily/1/similar", params={"k": 0}), 400, "k must")


# -- upload → job → searchable --------------------------------------------------------------------


def test_upload_job_then_searchable(client: TestClient) -> None:
    response = client.post("/ingest/export",
                           files={"file": ("space.jsonl", jsonl(UPLOAD), "application/json")})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["status_url"] == (
        f"/jobs/{accepted['job_id']}")
    job = wait_job(client, accepted["job_id"])
    assert job["status"] == "done", job
    assert (job["new"], job["updated"], job["unchanged"], job["skipped"]) == (3, 0, 0, 1)
    assert job["posts_read"] == 3 and job["filename"] == "space.jsonl"
    assert "no text" in job["skipped_records"][0]

    hits = client.get("/search", params={"q": "выход в открытый космос", "k": 1}).json()
    assert hits["results"][0]["id"] == f"tg:{SPACE[0]}:2"
    assert hits["results"][0]["link"] == "https://t.me/space_news/2"
    assert client.get("/posts/space_news/3").json()["channel_title"] == SPACE[2]
    stats = client.get("/stats").json()
    assert stats["posts"] == stats["points"] == len(POSTS) + 3
    assert SPACE[0] in [c["channel_id"] for c in stats["channels"]]

    # The same file again: nothing is embedded twice.
    again = client.post("/ingest/export", files={"file": ("space.jsonl", jsonl(UPLOAD))})
    job = wait_job(client, again.json()["job_id"])
    assert (job["status"], job["new"], job["unchanged"]) == ("done", 0, 3)


def test_upload_of_garbage_and_empty(client: TestClient) -> None:
    response = client.post("/ingest/export", files={"file": ("x.json", b"{not json")})
    assert response.status_code == 202
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "failed" and job["skipped"] == 1 and job["new"] == 0
    assert "malformed JSON" in job["skipped_records"][0]
    assert_problem(client.post("/ingest/export", files={"file": ("x.json", b"")}), 400, "empty")
    assert_problem(client.post("/ingest/export"), 422, "file")


def cut_export() -> bytes:
    return json.dumps({"name": "Космос", "type": "public_channel", "id": SPACE[0],
                       "messages": [{"id": 1, "type": "message", "date_unixtime": "1717228800",
                                     "text": "Обрезанный экспорт"}]}).encode()[:70]


@pytest.mark.parametrize(("name", "body", "why"), [
    ("notes.txt", "Просто заметки, не экспорт.".encode(), "malformed JSON"),
    ("blob.bin", bytes(range(256)) * 8, "malformed JSON"),
    ("result.json", cut_export(), "malformed JSON: Unterminated string starting at line 1"),
    ("other.json", b'{"hello": "world"}', "not a Telegram export or JSON dump"),
    ("export.zip", b"PK\x03\x04" + b"\0" * 100, "not a readable zip"),
], ids=["text", "random-bytes", "truncated-json", "other-json", "broken-zip"])
def test_upload_that_is_no_export_fails_naming_the_upload(
    client: TestClient, name: str, body: bytes, why: str
) -> None:
    # It used to end "done", with the server's temp path in skipped_records.
    response = client.post("/ingest/export", files={"file": (name, body)})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "failed" and job["new"] == 0, job
    assert job["error"].startswith(f"nothing could be read: {name}: {why}"), job["error"]
    text = json.dumps(job, ensure_ascii=False)
    assert "tgrag-upload-" not in text and tempfile.gettempdir() not in text
    assert job["skipped_records"] and job["skipped_records"][0].startswith(f"{name}: file: ")


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return buffer.getvalue()


def test_upload_of_a_zipped_export_folder(client: TestClient) -> None:
    chat = {"name": "Космос", "type": "public_channel", "id": SPACE[0], "messages": [
        {"id": 21, "type": "message", "date_unixtime": "1717228800",
         "text": "Марсоход нашёл следы древнего озера."},
        {"id": 22, "type": "message", "date_unixtime": "1717315200",
         "text": "Солнечная вспышка нарушила радиосвязь.", "edited_unixtime": "Infinity"},
        {"id": 23, "type": "message", "date_unixtime": "253402300800", "text": "Из будущего"},
    ]}
    body = zipped({
        "ChatExport_2024-06-02/result.json": json.dumps(chat, ensure_ascii=False).encode(),
        "ChatExport_2024-06-02/channels.json": json.dumps(
            {str(SPACE[0]): {"username": SPACE[1], "title": SPACE[2]}}).encode(),
        "ChatExport_2024-06-02/photos/p.jpg": b"\xff\xd8" * 1000,
    })
    response = client.post("/ingest/export", files={"file": ("export.zip", body)})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "done", job
    assert (job["new"], job["skipped"]) == (2, 1)
    assert job["skipped_records"] == [
        "export.zip/ChatExport_2024-06-02/result.json: message 23: bad date '253402300800': "
        "after 9999-12-31, not a real time"]
    assert client.get("/posts/space_news/21").json()["link"] == "https://t.me/space_news/21"


def test_upload_of_a_zip_bomb_fails_by_the_upload_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_upload_mb=0.05,
                        _env_file=None)  # type: ignore[call-arg]
    bomb = zipped({"result.json": b" " * (4 * 2**20)})  # 4 MB of spaces in a ~4 KB zip
    assert len(bomb) < 16 * 1024
    with TestClient(create_app(settings)) as small:
        response = small.post("/ingest/export", files={"file": ("bomb.zip", bomb)})
        assert response.status_code == 202, response.text
        job = wait_job(small, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"].startswith(
        "nothing could be read: bomb.zip/result.json: unpacks to more than 0.05 MB")


def test_unknown_job_is_404(client: TestClient) -> None:
    assert_problem(client.get("/jobs/0123456789abcdef"), 404, "no ingest job")


def test_upload_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_upload_mb=0.01,
                        _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), client=LOCAL) as small:
        big = jsonl(UPLOAD * 200)
        body = assert_problem(small.post("/ingest/export", files={"file": ("a.jsonl", big)}),
                              413)
        assert body["hint"]
        ok = small.post("/ingest/export", files={"file": ("a.jsonl", jsonl(UPLOAD[:1]))})
        assert ok.status_code == 202


# -- tags, ask, stats -----------------------------------------------------------------------------


def test_tags_and_ask(client: TestClient) -> None:
    tags = client.get("/tags", params={"limit": 5})
    assert tags.status_code == 200 and tags.json()["tags"]
    answer = client.post("/ask", json={"question": "Что решил Банк России по ключевой ставке?"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["mode"] == "extractive" and data["sources"][0]["id"] == "tg:1001:1"
    with client.stream("POST", "/ask/stream",
                       json={"question": "Что решил Банк России по ключевой ставке?"}) as resp:
        text = "".join(resp.iter_text())
    assert "event: token" in text and "event: sources" in text and "event: done" in text


# -- ops ------------------------------------------------------------------------------------------


def test_health_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ok", "redis": "ok", "qdrant": "ok"}


def test_request_id_in_and_out(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(generated.headers["x-request-id"]) == 32
    assert client.get("/nope").headers["x-request-id"]


def test_metrics(client: TestClient) -> None:
    client.get("/search", params={"q": "метро"})
    client.get("/posts/econ_daily/1")
    client.get("/posts/econ_daily/99")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tgrag_http_requests_total{method="GET",route="/search",status="200"}' in text
    assert ('tgrag_http_requests_total{method="GET",route="/posts/{channel}/{message_id}",'
            'status="404"}') in text
    assert 'tgrag_http_request_duration_seconds_bucket{le="0.5",method="GET",route="/search"}' \
        in text
    assert "tgrag_index_posts " in text and "tgrag_index_points " in text
    assert 'tgrag_ingest_posts_total{outcome="new"}' in text
    assert "# TYPE tgrag_llm_calls_total counter" in text


def test_llm_calls_are_counted(client: TestClient) -> None:
    from llama_index.core.llms import MockLLM

    services = client.app.state.services  # type: ignore[attr-defined]
    services.llm = MockLLM(max_tokens=8)
    try:
        answer = client.post("/ask", json={"question": "Что решил Банк России по ставке?"})
        assert answer.json()["mode"] == "generative"
    finally:
        services.llm = None
    assert 'tgrag_llm_calls_total{kind="chat",outcome="ok"}' in client.get("/metrics").text


def test_web_page_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # No framing, no script or style but the page's own, no requests but to this server.
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"] and "'unsafe-inline'" not in csp["script-src"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "/ask/stream" in page.text and "localStorage" in page.text
    schema = client.get("/openapi.json").json()
    post = "/posts/{channel}/{message_id}"
    for path in ["/search", post, post + "/similar", "/ingest/export", "/jobs/{job_id}",
                 "/stats", "/health", "/ready", "/metrics",
                 "/ask", "/ask/stream", "/tags", "/channels", "/sync"]:
        assert path in schema["paths"], path
    components = schema["components"]["schemas"]
    for name in ["SearchResponse", "PostOut", "StatsResponse", "JobOut", "Problem"]:
        assert components[name].get("examples"), name
    get_search = schema["paths"]["/search"]["get"]
    assert "application/problem+json" in get_search["responses"]["400"]["content"]


def test_request_id_in_logs(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    access = logging.getLogger("tgrag.api.access")
    access.setLevel(logging.INFO)
    try:
        client.get("/posts/econ_daily/1", headers={"X-Request-ID": "trace-42"})
    finally:
        access.setLevel(logging.NOTSET)
    lines = [line for line in capsys.readouterr().err.splitlines() if "request_id=trace-42" in line]
    assert lines and "route=/posts/{channel}/{message_id}" in lines[0] and "status=200" in lines[0]
