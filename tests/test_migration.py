"""A data folder built with qdrant-client's local mode (the embedded engine before qdrant-edge) is
moved into the embedded engine at its first open: every point with its vectors and payload, the
collection's model and dimension, nothing re-embedded, the Redis side untouched, and searches rank
as before."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.pipeline import PostPipeline
from rag import index as index_module
from rag.datadir import DataDirLock
from rag.errors import ModelMismatch
from rag.index import Index
from rag.search import PostSearcher
from rag.settings import Settings
from rag.store import ChunkStore
from rag.store.edge import EdgeStore, read_meta
from rag.store.migration import local_mode_collections, migrate_local_mode
from rag.store.qdrant import QdrantStore
from tests.search_corpus import corpus

QUERIES = ["ключевая ставка", "футбол", "погода в Москве"]


@contextmanager
def local_mode_index(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    """An index as the previous version opened it: the store in local mode under data/qdrant."""
    def old_open_store(s: Settings, model_name: str, dim: int) -> ChunkStore:
        return QdrantStore.local(s.qdrant_path, s.collection, model_name, dim)

    with monkeypatch.context() as mp:
        mp.setattr(index_module, "open_store", old_open_store)
        index = Index.open(settings, purpose="pytest old version")
    try:
        yield index
    finally:
        index.close()


def snapshot(index: Index) -> dict[str, object]:
    searcher = PostSearcher(index)
    return {
        "points": sorted((c.id, c.doc_id, c.text, tuple(sorted(c.payload.items(), key=str)))
                         for c in index.store.scroll()),
        "hits": {(q, mode): [(h.id, round(h.score, 4)) for h in searcher.search(q, k=5, mode=mode)]
                 for q in QUERIES for mode in ("dense", "sparse", "hybrid")},
        "posts": sorted(index.docstore.get_all_document_hashes().items()),
        "stats": index.stats(),
    }


def test_a_local_mode_folder_is_moved_into_the_engine_at_first_open(
        settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    posts = corpus()
    with local_mode_index(settings, monkeypatch) as old:
        PostPipeline(old).ingest(posts)
        before = snapshot(old)
        vectors = {c.id: c.dense for c in old.store.chunks_of(posts[0].doc_id, with_vectors=True)}
    assert local_mode_collections(settings.qdrant_path) == ["tgrag_posts"]
    assert read_meta(settings.edge_path / "tgrag_posts") is None

    embedded = []
    with caplog.at_level(logging.WARNING, logger="tgrag.store"), \
            Index.open(settings, purpose="pytest") as index:
        assert isinstance(index.store, EdgeStore)
        embedded.append(index.embedding.name)
        assert snapshot(index) == before
        migrated = {c.id: c.dense for c in index.store.chunks_of(posts[0].doc_id,
                                                                 with_vectors=True)}
        assert migrated.keys() == vectors.keys()
        for pid, dense in vectors.items():
            assert migrated[pid] == pytest.approx(dense, abs=1e-6)  # copied, not re-embedded
    messages = [r.getMessage() for r in caplog.records]
    assert any("moving the local-mode index" in m for m in messages), messages
    meta = read_meta(settings.edge_path / "tgrag_posts")
    assert meta is not None
    assert (meta["embedding_model"], meta["dim"]) == (embedded[0], 384)
    assert meta["migrated_points"] == len(before["points"])  # type: ignore[arg-type]
    assert meta["migrated_from"] == str(settings.qdrant_path.resolve())

    # Once only: the next open neither migrates again nor reads local mode.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tgrag.store"), \
            Index.open(settings, purpose="pytest again") as index:
        assert snapshot(index) == before
    assert not caplog.records


def test_an_interrupted_migration_starts_again(settings: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    posts = corpus()[:6]
    with local_mode_index(settings, monkeypatch) as old:
        PostPipeline(old).ingest(posts)
        n = old.store.count()

    class Killed(Exception):
        pass

    def dies(self: EdgeStore, points: list) -> None:  # type: ignore[type-arg]
        raise Killed

    with monkeypatch.context() as mp:
        mp.setattr(EdgeStore, "upsert_points", dies)
        with pytest.raises(Killed):
            Index.open(settings, purpose="pytest")
    root = settings.edge_path
    assert read_meta(root / "tgrag_posts") is None  # nothing half-done in place
    assert [p.name for p in root.iterdir()] == [".tgrag_posts.migrating"]
    with Index.open(settings, purpose="pytest") as index:
        assert index.store.count() == n
        assert sorted(p.name for p in root.iterdir()) == ["tgrag_posts"]


def test_the_model_travels_with_the_collection(tmp_path: Path) -> None:
    local = QdrantStore.local(tmp_path / "qdrant", "posts", "old/model", 4)
    local.close()
    copied = migrate_local_mode(tmp_path / "qdrant", tmp_path / "edge", "posts", optimize=False)
    assert copied == 0
    with pytest.raises(ModelMismatch) as err:
        EdgeStore.open(tmp_path / "edge", "posts", "new/model", 4)
    assert "old/model" in err.value.message
    EdgeStore.open(tmp_path / "edge", "posts", "old/model", 4).close()


def test_a_damaged_local_mode_folder_is_a_clear_error(settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.errors import BackendUnavailable

    with local_mode_index(settings, monkeypatch) as old:
        PostPipeline(old).ingest(corpus()[:3])
    db = settings.qdrant_path / "collection" / "tgrag_posts" / "storage.sqlite"
    data = bytearray(db.read_bytes())
    data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)  # a torn copy
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(BackendUnavailable) as err:
        Index.open(settings, purpose="pytest")
    assert "local-mode index" in err.value.message and err.value.hint
    assert read_meta(settings.edge_path / "tgrag_posts") is None
    assert db.read_bytes() == before  # the old folder is not touched
    lock = DataDirLock(settings.data_dir)  # and the data folder was released
    lock.acquire("pytest")
    lock.release()
