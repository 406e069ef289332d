"""Abuse, against a real server process on 127.0.0.1 (``tests/live_server.py``): a caller without
a key, or with a wrong one, costs no body read, no temp file, no memory; wrong keys are throttled
per client address; ``/metrics`` stays small whatever methods and paths are thrown at it; without
keys the app answers loopback clients only, whatever server runs it.

Several client addresses on one machine: every 127.x.y.z is loopback on Linux, so a test binds
its client socket to its own 127.0.0.N to be "another client" for the per-address throttle.
"""

from __future__ import annotations

import json
import random
import socket
import string
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer, raw_request, rss_mb

pytestmark = pytest.mark.slow

KEYS = "op-key,acme-key:acme"
OP = {"Authorization": "Bearer op-key"}
FAILURES = 10  # TGRAG_AUTH_FAILURE_LIMIT of the module's server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("abuse")
    with LiveServer(root, {"TGRAG_API_KEYS": KEYS, "TGRAG_RATE_LIMIT": "0",
                           "TGRAG_AUTH_FAILURE_LIMIT": str(FAILURES),
                           "TGRAG_MAX_UPLOAD_MB": "50"}) as live:
        yield live


def client_from(server: LiveServer, address: str) -> httpx.Client:
    """A client whose requests come from ``address`` (a loopback alias)."""
    return httpx.Client(base_url=server.base, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def temp_files(server: LiveServer) -> list[Path]:
    return [p for p in server.tmp.rglob("*") if p.is_file()]


def head(method: str, path: str, length: int, content_type: str, extra: str = "") -> str:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n")


# -- 1. no body is read before the key is checked -------------------------------------------------


def test_anonymous_upload_is_refused_before_its_body_is_read(server: LiveServer) -> None:
    """A 47 MB upload announced, 64 KB of it sent: the 401 comes at once (it waited for the whole
    body and spooled it to a temp file first), and no temp file appears."""
    boundary = "tgrag-boundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"big.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body = part + b"x" * (64 * 1024)
    before, files = rss_mb(server.pid), temp_files(server)
    for _ in range(8):  # 8 such uploads in parallel were accepted
        status, data, seconds = raw_request(
            "127.0.0.1", server.port,
            head("POST", "/ingest/export", 47 * 2**20, f"multipart/form-data; boundary={boundary}"),
            body, timeout=5)
        assert status == 401, (status, data[:300])
        assert seconds < 3 and b"application/problem+json" in data
        assert temp_files(server) == files
    assert rss_mb(server.pid) - before < 30


def test_anonymous_json_body_is_refused_unread(server: LiveServer) -> None:
    """200 MB of JSON announced: 401 before any of it is read (the server grew to 899 MB)."""
    before = rss_mb(server.pid)
    status, data, seconds = raw_request(
        "127.0.0.1", server.port, head("POST", "/search", 200 * 2**20, "application/json"),
        b'{"q": "' + b"a" * 65536, timeout=5)
    assert status == 401 and seconds < 3, (status, data[:300])
    assert rss_mb(server.pid) - before < 30


def test_json_body_over_the_cap_is_413_naming_the_limit(server: LiveServer) -> None:
    # Announced: refused from the header, before reading.
    status, data, seconds = raw_request(
        "127.0.0.1", server.port,
        head("POST", "/search", 2 * 2**20, "application/json", "X-API-Key: op-key\r\n"),
        b'{"q": "', timeout=5)
    assert status == 413 and seconds < 3, (status, data[:300])
    assert b"1024 KB" in data and b"TGRAG_MAX_JSON_KB" in data
    # Chunked (no Content-Length): refused once the limit is passed.
    def chunks() -> Iterator[bytes]:
        yield b'{"q": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    with server.client() as client:
        response = client.post("/search", headers={**OP, "Content-Type": "application/json"},
                               content=chunks())
        assert response.status_code == 413, response.text
        problem = response.json()
        assert "1024 KB" in problem["detail"] and "TGRAG_MAX_JSON_KB" in problem["hint"]
        # Under the cap all is as before.
        ok = client.post("/search", headers=OP, json={"q": "ставка"})
        assert ok.status_code == 200, ok.text


def test_upload_over_the_limit_is_413_naming_the_limit(server: LiveServer) -> None:
    status, data, _ = raw_request(
        "127.0.0.1", server.port,
        head("POST", "/ingest/export", 60 * 2**20, "multipart/form-data; boundary=b",
             "X-API-Key: op-key\r\n"), timeout=5)
    assert status == 413, data[:300]
    assert b"50 MB" in data and b"TGRAG_MAX_UPLOAD_MB" in data


# -- 2. wrong keys are throttled per client address -----------------------------------------------


def test_wrong_keys_are_throttled_per_address(server: LiveServer) -> None:
    with client_from(server, "127.0.0.3") as guesser:
        statuses = [guesser.get("/stats", headers={"X-API-Key": f"guess-{i}"}).status_code
                    for i in range(60)]
        assert statuses[:FAILURES] == [401] * FAILURES, statuses
        assert set(statuses[FAILURES:]) == {429}, statuses
        refused = guesser.get("/stats", headers={"X-API-Key": "guess-x"})
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # While throttled even the right key is refused: answering it would tell a guesser
        # which guess was right.
        assert guesser.get("/stats", headers=OP).status_code == 429
        assert guesser.get("/health").status_code == 200  # public routes stay open
    # Another address is not affected.
    with client_from(server, "127.0.0.4") as other:
        assert other.get("/stats", headers=OP).status_code == 200
        assert other.get("/stats", headers={"X-API-Key": "typo"}).status_code == 401


# -- 3. /metrics stays small ----------------------------------------------------------------------


def test_metrics_stay_bounded_under_random_methods_and_paths(server: LiveServer) -> None:
    rng = random.Random(12)

    def token(n: int) -> str:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))

    with client_from(server, "127.0.0.5") as client:
        size_before = len(client.get("/metrics", headers=OP).text)
        for i in range(400):
            method = token(8) if i % 2 else rng.choice(["GET", "POST", "BREW", "PROPFIND"])
            path = rng.choice(["/search", "/stats", f"/{token(12)}", f"/posts/{token(5)}/1/x"])
            headers = OP if i % 3 == 0 else {}
            client.request(method, path, headers=headers)
        text = client.get("/metrics", headers=OP).text
    methods = {line.split('method="', 1)[1].split('"', 1)[0]
               for line in text.splitlines() if line.startswith("tgrag_http_requests_total{")}
    routes = {line.split('route="', 1)[1].split('"', 1)[0]
              for line in text.splitlines() if line.startswith("tgrag_http_requests_total{")}
    assert methods <= {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "other"}, methods
    assert "other" in methods
    assert all(r.startswith("/") or r == "unmatched" for r in routes), routes
    assert not any(len(r) >= 12 and r.isupper() for r in routes)
    assert "unmatched" in routes and "/search" in routes
    assert len(text) - size_before < 40_000, len(text) - size_before


# -- 4. without keys: loopback clients only, whatever server runs the app -------------------------


def outside_address() -> str | None:
    """This machine's non-loopback IPv4 address (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.123", 9))  # no packet is sent: this only picks the route
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_uvicorn_on_all_interfaces_without_keys_answers_loopback_only(
        tmp_path: Path) -> None:
    address = outside_address()
    if address is None:
        pytest.skip("needs a non-loopback IPv4 address on this machine")
    with LiveServer(tmp_path, command="uvicorn", host="0.0.0.0") as live:
        with client_from(live, address) as remote:
            remote_base = f"http://{address}:{live.port}"
            for path in ("/stats", "/search?q=x", "/"):
                response = remote.get(remote_base + path)
                assert response.status_code == 403, (path, response.text)
                problem = response.json()
                assert "loopback" in problem["detail"] and "TGRAG_API_KEYS" in problem["hint"]
        with live.client() as local:
            assert local.get("/stats").status_code == 200


def test_serve_on_another_loopback_address_without_keys(tmp_path: Path) -> None:
    """127.0.0.2 is loopback: ``tgrag serve --host 127.0.0.2`` starts (it was refused)."""
    with LiveServer(tmp_path, host="127.0.0.2") as live, live.client() as client:
        assert client.get("/stats").status_code == 200
        started = time.monotonic()
        assert client.get("/health").status_code == 200
        assert time.monotonic() - started < 5


# -- 8. one upload does not hold ingestion: fair between tenants, cancellable ---------------------


def bulk(n: int, channel_id: int) -> bytes:
    return "\n".join(json.dumps({
        "id": i, "channel_id": channel_id, "channel": f"@bulk{channel_id}",
        "date": 1_717_000_000 + i,
        "text": f"Сообщение {i} канала {channel_id}: новости города, погода и дороги."},
        ensure_ascii=False) for i in range(1, n + 1)).encode()


def test_a_huge_upload_neither_blocks_another_tenant_nor_outlives_a_cancel(
        tmp_path: Path) -> None:
    env = {"TGRAG_API_KEYS": "acme-key:acme,globex-key:globex", "TGRAG_RATE_LIMIT": "0",
           "TGRAG_INGEST_BATCH_SIZE": "4"}
    acme, globex = {"X-API-Key": "acme-key"}, {"X-API-Key": "globex-key"}
    with LiveServer(tmp_path, env) as live, live.client() as client:
        def upload(body: bytes, headers: dict) -> str:
            response = client.post("/ingest/export", headers=headers,
                                   files={"file": ("posts.jsonl", body)})
            assert response.status_code == 202, response.text
            return str(response.json()["job_id"])

        def state(job_id: str, headers: dict) -> dict:
            return dict(client.get(f"/jobs/{job_id}", headers=headers).json())

        huge = upload(bulk(600, 6001), acme)
        deadline = time.monotonic() + 120
        while state(huge, acme)["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        small = upload(bulk(2, 6002), globex)  # another tenant's 2-post upload
        deadline = time.monotonic() + 120
        while (small_state := state(small, globex))["status"] != "done":
            assert time.monotonic() < deadline, small_state  # it stayed queued
            time.sleep(0.2)
        big = state(huge, acme)
        assert big["status"] == "running" and big["new"] < 600, big  # done long before it
        assert client.get("/stats", headers=globex).json()["posts"] == 2

        cancel = client.delete(f"/jobs/{huge}", headers=acme)
        assert cancel.status_code == 202 and cancel.json()["cancel_requested"], cancel.text
        deadline = time.monotonic() + 60
        while (big := state(huge, acme))["status"] == "running":
            assert time.monotonic() < deadline, big
            time.sleep(0.2)
        assert big["status"] == "cancelled" and big["new"] < 600, big
        assert client.get("/stats", headers=acme).json()["posts"] == big["new"]
