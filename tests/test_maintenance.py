"""Index maintenance (README "Index maintenance"): the embedded engine builds its HNSW graph only in
``optimize()``, which holds the GIL, so only commands that serve nothing call it — the end of
``tgrag ingest``, ``tgrag optimize`` — never the API process; and the engine's threshold decides
when there is work (below it the call returns at once)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import context as cli
from api.cli.index_commands import register
from rag.settings import Settings
from rag.store import Chunk
from rag.store.edge import EdgeStore, read_meta
from tests.test_api_full import UPLOAD, jsonl, wait_job

SEGMENTS = "shard/segments"


def hnsw_segments(folder: Path) -> list[str]:
    """The segments whose dense vectors have an HNSW index (what ``optimize`` builds)."""
    found = []
    for seg in (folder / SEGMENTS).iterdir():
        config = json.loads((seg / "segment.json").read_text())["config"]
        if config["vector_data"]["dense"]["index"]["type"] == "hnsw":
            found.append(seg.name)
    return found


def cli_app() -> typer.Typer:
    app = typer.Typer(cls=cli.TgragGroup)
    app.callback()(cli.root)
    register(app)
    return app


@pytest.fixture
def optimize_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = EdgeStore.optimize

    def counted(self: EdgeStore) -> bool:
        calls.append(self.count())
        return real(self)

    monkeypatch.setattr(EdgeStore, "optimize", counted)
    return calls


@pytest.mark.slow
def test_optimize_builds_the_graph_once_past_the_engines_threshold(tmp_path: Path) -> None:
    rnd = random.Random(3)

    def chunks(start: int, n: int) -> list[Chunk]:
        return [Chunk(f"tg:1:{i}#0", f"tg:1:{i}", "x", [rnd.gauss(0, 1) for _ in range(384)],
                      metadata={"tenant": "default"}) for i in range(start, start + n)]

    store = EdgeStore.open(tmp_path, "posts", "m", 384)
    try:
        store.write(chunks(0, 3000))
        assert store.optimize() is False  # below the threshold: nothing due, returns at once
        assert hnsw_segments(tmp_path / "posts") == []
        store.write(chunks(3000, 4500))  # 7,500 × 1.5 KB of vectors > 10 MB
        assert store.optimize() is True
        assert len(hnsw_segments(tmp_path / "posts")) == 1
        assert store.optimize() is False
        stored = store.chunks_of("tg:1:42", with_vectors=True)[0]  # in the indexed segment
        assert stored.dense is not None
        assert store.search_dense(stored.dense, None, 1)[0].doc_id == "tg:1:42"
        assert store.count() == 7500
    finally:
        store.close()


@pytest.mark.slow
def test_ingest_and_optimize_commands_maintain_the_index(
        settings: Settings, sample_export: Path, monkeypatch: pytest.MonkeyPatch,
        optimize_calls: list[int]) -> None:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    app = cli_app()
    first = runner.invoke(app, ["ingest", str(sample_export)])
    assert first.exit_code == 0, first.output
    assert len(optimize_calls) == 1 and optimize_calls[0] > 0  # after the writes
    again = runner.invoke(app, ["ingest", str(sample_export)])
    assert again.exit_code == 0 and len(optimize_calls) == 1  # nothing written: nothing to do
    done = runner.invoke(app, ["optimize", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["optimized"] is False and result["points"] == optimize_calls[0]
    assert len(optimize_calls) == 2
    assert read_meta(settings.edge_path / settings.collection) is not None


def test_the_api_process_never_optimizes(settings: Settings, optimize_calls: list[int]) -> None:
    with TestClient(create_app(settings)) as http:
        upload = http.post("/ingest/export", files={"file": ("space.jsonl", jsonl(UPLOAD))})
        assert wait_job(http, upload.json()["job_id"])["status"] == "done"
        assert http.get("/search", params={"q": "космос"}).status_code == 200
    assert optimize_calls == []
