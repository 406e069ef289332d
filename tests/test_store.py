"""One store suite, run against both engines behind :class:`rag.store.ChunkStore`:

* ``edge``: the embedded engine (qdrant-edge, :class:`rag.store.edge.EdgeStore`), the default;
* ``server``: :class:`rag.store.qdrant.QdrantStore`, the server path through qdrant-client.  No
  Qdrant server ships as a Python or Debian package, so qdrant-client's local mode stands in for
  it here: it speaks the server's client API (the same calls, models and filters).

Same payload, filters, tenant condition, dense and BM25 (IDF) rankings, crash-safe write order
and persistence, on small synthetic vectors (no embedding model needed).
"""

from __future__ import annotations

import math
import os
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.errors import InputError, ModelMismatch
from rag.ids import point_id
from rag.store import Chunk, ChunkStore, SparseVector, StoreFilter
from rag.store.edge import EdgeStore
from rag.store.qdrant import QdrantStore

DIM = 8
ENGINES = ("edge", "server")
Opener = Callable[..., ChunkStore]


def opener(engine: str, tmp_path: Path) -> Opener:
    def open_(model: str = "test/model", dim: int = DIM) -> ChunkStore:
        if engine == "edge":
            return EdgeStore.open(tmp_path / "edge", "posts", model, dim)
        return QdrantStore.local(tmp_path / "qdrant", "posts", model, dim)
    return open_


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reopen(engine: str, tmp_path: Path) -> Opener:
    return opener(engine, tmp_path)


@pytest.fixture
def store(reopen: Opener) -> Iterator[ChunkStore]:
    s = reopen()
    try:
        yield s
    finally:
        s.close()


def vec(seed: int) -> list[float]:
    rnd = random.Random(seed)
    return [rnd.uniform(-1, 1) for _ in range(DIM)]


def chunk(doc: str, n: int = 0, *, tenant: str = "default", channel: int = 1, date: int = 1000,
          tags: tuple[str, ...] = (), terms: dict[int, float] | None = None,
          seed: int | None = None, text: str | None = None) -> Chunk:
    sparse = SparseVector(sorted(terms), [terms[t] for t in sorted(terms)]) if terms else None
    node = f"{doc}#{n}"
    seed = seed if seed is not None else zlib.crc32(node.encode()) % 10_000
    return Chunk(node_id=node, doc_id=doc, text=text or f"text of {node}", dense=vec(seed),
                 sparse=sparse,
                 metadata={"channel_id": channel, "date": date, "tags": list(tags),
                           "tenant": tenant, "message_id": n, "_sparse": "not in the payload"})


def ids(chunks: list) -> list[str]:  # type: ignore[type-arg]
    return [c.doc_id for c in chunks]


def test_write_and_read_back_the_payload(store: ChunkStore) -> None:
    store.write([chunk("tg:1:1", 0, tags=("a",)), chunk("tg:1:1", 1), chunk("tg:1:2", 0)])
    got = store.chunks_of("tg:1:1", with_vectors=True)
    assert [c.node_id for c in got] == ["tg:1:1#0", "tg:1:1#1"]
    assert got[0].id == point_id("tg:1:1#0")
    assert got[0].payload == {"channel_id": 1, "date": 1000, "tags": ["a"], "tenant": "default",
                              "message_id": 0, "text": "text of tg:1:1#0",
                              "node_id": "tg:1:1#0", "doc_id": "tg:1:1"}
    dense = got[0].dense
    assert dense is not None and len(dense) == DIM
    want = vec(zlib.crc32(b"tg:1:1#0") % 10_000)
    norm = math.sqrt(sum(x * x for x in want))  # cosine: both engines store unit vectors
    assert dense == pytest.approx([x / norm for x in want], abs=1e-5)
    assert store.count() == 3
    assert store.chunks_of("tg:1:9") == []


def test_a_write_replaces_the_chunks_a_post_no_longer_has(store: ChunkStore) -> None:
    store.write([chunk("tg:1:1", n) for n in range(3)] + [chunk("tg:1:2", 0)])
    store.write([chunk("tg:1:1", 0, text="shorter now")])
    assert [c.text for c in store.chunks_of("tg:1:1")] == ["shorter now"]
    assert [c.node_id for c in store.chunks_of("tg:1:2")] == ["tg:1:2#0"]  # untouched
    assert store.count() == 2


def test_crash_between_upsert_and_delete_leaves_new_and_stale_never_none(
        store: ChunkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write([chunk("tg:1:1", n) for n in range(3)])

    class Crash(Exception):
        pass

    def die(keep: object) -> None:
        raise Crash

    monkeypatch.setattr(store, "_delete_stale", die)
    with pytest.raises(Crash):
        store.write([chunk("tg:1:1", 0, text="new")])
    got = store.chunks_of("tg:1:1")
    assert [c.text for c in got][0] == "new" and len(got) == 3  # new first chunk, stale others


def test_deletes(store: ChunkStore) -> None:
    store.write([chunk("tg:1:1"), chunk("tg:1:2"), chunk("tg:2:1", channel=2),
                 chunk("acme/tg:2:1", channel=2, tenant="acme")])
    store.delete_docs(["tg:1:1", "tg:1:404"])
    assert store.count() == 3
    store.delete_matching(StoreFilter(tenant="default", channel_ids=(2,)))
    assert sorted(c.doc_id for c in store.scroll()) == ["acme/tg:2:1", "tg:1:2"]
    with pytest.raises(InputError):
        store.delete_matching(StoreFilter())
    store.delete_docs([])
    assert store.count() == 2


def test_filters(store: ChunkStore) -> None:
    store.write([
        chunk("tg:1:1", channel=1, date=100, tags=("a", "b")),
        chunk("tg:1:2", channel=1, date=200, tags=("b",)),
        chunk("tg:2:1", channel=2, date=300),
        chunk("acme/tg:2:2", channel=2, date=400, tags=("a",), tenant="acme"),
    ])
    cases = {
        StoreFilter(): 4,
        StoreFilter(tenant="default"): 3,
        StoreFilter(tenant="acme"): 1,
        StoreFilter(tenant="nobody"): 0,
        StoreFilter(channel_ids=(2,)): 2,
        StoreFilter(channel_ids=(1, 2), tenant="default"): 3,
        StoreFilter(tags=("a",)): 2,
        StoreFilter(tags=("a",), tenant="default"): 1,
        StoreFilter(since=200): 3,
        StoreFilter(until=200): 2,
        StoreFilter(since=200, until=300): 2,
        StoreFilter(doc_ids=("tg:1:1", "tg:2:1")): 2,
        StoreFilter(exclude_doc_ids=("tg:1:1",)): 3,
        StoreFilter(tenant="default", exclude_doc_ids=("tg:1:1",), since=150): 2,
    }
    for flt, want in cases.items():
        assert store.count(flt) == want, flt
        assert len(list(store.scroll(flt, page=1))) == want, flt
        assert len(store.search_dense(vec(1), flt, 10)) == want, flt
    assert store.count(None) == 4


def test_the_tenant_condition_holds_in_a_single_tenant_index(store: ChunkStore) -> None:
    """No shortcut: with every point the default tenant's, another tenant still sees nothing."""
    store.write([chunk(f"tg:1:{i}", terms={7: 1.0}) for i in range(5)])
    for flt in (StoreFilter(tenant="acme"), StoreFilter(tenant="acme", channel_ids=(1,))):
        assert store.search_dense(vec(3), flt, 10) == []
        assert store.search_sparse(SparseVector([7], [1.0]), flt, 10) == []
        assert store.count(flt) == 0
        assert list(store.scroll(flt)) == []
    assert store.chunks_of("tg:1:1", tenant="acme") == []
    assert len(store.chunks_of("tg:1:1", tenant="default")) == 1


def test_dense_search_ranks_by_cosine(store: ChunkStore) -> None:
    chunks = [chunk(f"tg:1:{i}", seed=i) for i in range(30)]
    store.write(chunks)
    query = vec(999)

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    want = sorted(chunks, key=lambda c: cos(c.dense, query), reverse=True)[:5]
    got = store.search_dense(query, None, 5)
    assert ids(got) == [c.doc_id for c in want]
    assert [g.score for g in got] == pytest.approx([cos(c.dense, query) for c in want], abs=1e-5)
    assert got[0].text == want[0].text


def bm25_corpus() -> list[Chunk]:
    rnd = random.Random(5)
    out = []
    for i in range(60):
        picked = rnd.sample(range(25), rnd.randint(1, 6))
        terms = {t: round(rnd.uniform(0.3, 2.0), 3) for t in picked}
        out.append(chunk(f"tg:1:{i}", terms=terms))
    out.append(chunk("tg:1:99"))  # a chunk without a sparse vector (not in N, never matched)
    return out


def test_sparse_search_is_bm25_with_the_engines_idf(store: ChunkStore) -> None:
    corpus = bm25_corpus()
    store.write(corpus)
    query = SparseVector([3, 8, 21], [1.0, 1.0, 1.0])
    with_sparse = [c for c in corpus if c.sparse]
    n = len(with_sparse)

    def idf(term: int) -> float:
        df = sum(1 for c in with_sparse if c.sparse and term in c.sparse.indices)
        return math.log((n - df + 0.5) / (df + 0.5) + 1)

    def bm25(c: Chunk) -> float:
        assert c.sparse
        return sum(idf(t) * v for t, v in zip(c.sparse.indices, c.sparse.values, strict=True)
                   if t in query.indices)

    scored = sorted((c for c in with_sparse if bm25(c) > 0), key=bm25, reverse=True)
    got = store.search_sparse(query, None, 100)
    assert [g.score for g in got] == pytest.approx([bm25(c) for c in scored], rel=1e-4)
    assert set(ids(got)) == {c.doc_id for c in scored}
    # A filter narrows the hits, not the IDF (collection-wide in both engines).
    flt = StoreFilter(doc_ids=tuple(c.doc_id for c in scored[:3]))
    assert [g.score for g in store.search_sparse(query, flt, 10)] == pytest.approx(
        [bm25(c) for c in scored[:3]], rel=1e-4)
    assert store.search_sparse(SparseVector([], []), None, 10) == []


def test_both_engines_rank_alike(tmp_path: Path) -> None:
    corpus = bm25_corpus()
    results = {}
    for engine in ENGINES:
        s = opener(engine, tmp_path)()
        try:
            s.write(corpus)
            flt = StoreFilter(tenant="default", exclude_doc_ids=("tg:1:0",))
            results[engine] = (
                [(c.id, round(c.score, 4)) for c in s.search_dense(vec(42), flt, 10)],
                [(c.id, round(c.score, 3)) for c in s.search_sparse(
                    SparseVector([1, 2, 3], [1.0, 1.0, 1.0]), flt, 10)],
            )
        finally:
            s.close()
    assert results["edge"] == results["server"]


def test_scroll_returns_only_the_fields_asked_for(store: ChunkStore) -> None:
    store.write([chunk(f"tg:1:{i}", tags=("x",)) for i in range(7)])
    got = list(store.scroll(StoreFilter(tenant="default"), fields=["doc_id", "tags"], page=3))
    assert len(got) == 7 and len({c.id for c in got}) == 7
    assert all(set(c.payload) == {"doc_id", "tags"} for c in got)


def test_searches_return_only_the_fields_asked_for_and_chunks_by_id_the_rest(
        store: ChunkStore) -> None:
    corpus = bm25_corpus()
    store.write(corpus)
    dense = store.search_dense(vec(7), None, 8, fields=["doc_id"])
    sparse = store.search_sparse(SparseVector([3, 8], [1.0, 1.0]), None, 8, fields=["doc_id"])
    assert dense and sparse
    assert all(c.payload == {"doc_id": c.doc_id} and c.score != 0 for c in dense + sparse)
    # Same ranking and scores as with whole payloads.
    assert [(c.id, c.score) for c in dense] == [
        (c.id, c.score) for c in store.search_dense(vec(7), None, 8)]
    wanted = [dense[3].id, "00000000-0000-0000-0000-000000000000", dense[0].id]
    got = store.chunks_by_id(wanted)
    assert [c.id for c in got] == [dense[3].id, dense[0].id]  # order kept, the unknown id left out
    written = {c.point_id: c for c in corpus}
    assert [c.payload for c in got] == [written[c.id].payload() for c in got]
    assert all(c.vector is None for c in got)
    assert store.chunks_by_id([]) == []


def test_scroll_with_the_dense_vectors_only(store: ChunkStore) -> None:
    written = [chunk(f"tg:1:{i}", terms={1: 1.0}) for i in range(5)]
    store.write(written)
    got = {c.node_id: c for c in store.scroll(StoreFilter(tenant="default"), page=2,
                                              with_vectors=True)}
    assert len(got) == 5
    for c in written:  # the stored vector (cosine: unit length), as written; digests read them
        dense = got[c.node_id].dense
        assert dense is not None and len(dense) == len(c.dense)
        dot = sum(a * b for a, b in zip(dense, c.dense, strict=True))
        norm = sum(b * b for b in c.dense) ** 0.5 * sum(a * a for a in dense) ** 0.5
        assert abs(dot / norm - 1) < 1e-5
        assert set(got[c.node_id].vector or {}) == {"dense"}  # not the sparse one
    assert all(c.vector is None for c in store.scroll(StoreFilter(tenant="default")))


def test_flushed_writes_survive_a_reopen(store: ChunkStore, reopen: Opener) -> None:
    store.write([chunk("tg:1:1", terms={1: 1.0}), chunk("tg:1:2")])
    store.delete_docs(["tg:1:2"])
    store.flush()
    store.close()
    again = reopen()
    try:
        assert [c.doc_id for c in again.scroll()] == ["tg:1:1"]
        assert ids(again.search_sparse(SparseVector([1], [1.0]), None, 5)) == ["tg:1:1"]
        again.check()
        assert again.describe()
    finally:
        again.close()


def test_another_model_is_refused(store: ChunkStore, reopen: Opener) -> None:
    store.write([chunk("tg:1:1")])
    store.close()
    for model, dim in (("other/model", DIM), ("test/model", DIM * 2)):
        with pytest.raises(ModelMismatch) as err:
            reopen(model, dim)
        assert "test/model" in err.value.message and err.value.hint
    again = reopen()  # the refused opens released the engine
    try:
        assert again.count() == 1
        with pytest.raises(ModelMismatch):
            again.write([Chunk("tg:1:2#0", "tg:1:2", "x", dense=[0.1] * (DIM + 1))])
    finally:
        again.close()


def test_a_new_server_collection_takes_its_sharding_from_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_client import QdrantClient

    from rag.settings import Settings
    from rag.store.qdrant import Sharding

    settings = Settings(_env_file=None, qdrant_shard_number=6,  # type: ignore[call-arg]
                        qdrant_replication_factor=2, qdrant_write_consistency=2)
    seen: list[dict[str, object]] = []
    real = QdrantClient.create_collection

    def spy(self: QdrantClient, name: str, **kwargs: object) -> bool:
        seen.append(kwargs)
        return real(self, name, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(QdrantClient, "create_collection", spy)
    client = QdrantClient(path=str(tmp_path / "q"))  # standing in for a cluster (see above)
    try:
        QdrantStore(client, "posts", "m", DIM, sharding=Sharding.from_settings(settings))
        QdrantStore(client, "posts", "m", DIM)  # exists: opened, not created again
    finally:
        client.close()
    assert len(seen) == 1
    assert {k: seen[0][k] for k in ("shard_number", "replication_factor",
                                    "write_consistency_factor")} == {
        "shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2}


# -- the embedded engine's durability (rag/store/edge.py) -----------------------------------------

KILLED_WRITER = """
import os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.test_store import chunk
from rag.store.edge import EdgeStore
store = EdgeStore.open(Path({root!r}), "posts", "test/model", 8)
store.write([chunk(f"tg:1:{{i}}", terms={{1: 1.0}}) for i in range(50)])
store.flush()
store.write([chunk("tg:1:0", text="edited")])
store.delete_docs(["tg:1:1"])
store.flush()
os._exit(9)  # no close, no engine flush: what survives is the write-ahead log
"""


def test_a_killed_writer_loses_nothing_it_flushed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    code = KILLED_WRITER.format(repo=str(REPO), root=str(tmp_path / "edge"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 9, done.stderr
    store = EdgeStore.open(tmp_path / "edge", "posts", "test/model", DIM)
    try:
        assert store.count() == 49
        assert [c.text for c in store.chunks_of("tg:1:0")] == ["edited"]
        assert store.chunks_of("tg:1:1") == []
        assert ids(store.search_sparse(SparseVector([1], [1.0]), None, 100)).count("tg:1:2") == 1
    finally:
        store.close()


class CountingShard:
    """The engine's shard with its ``flush`` calls counted."""

    def __init__(self, shard: object) -> None:
        self.shard, self.flushes = shard, 0

    def flush(self) -> None:
        self.flushes += 1
        self.shard.flush()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.shard, name)


def test_flush_syncs_the_log_and_flushes_the_engine_rarely(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.store import edge

    store = EdgeStore.open(tmp_path, "posts", "test/model", DIM)
    counting = CountingShard(store._shard)
    store._shard = counting  # type: ignore[assignment]
    synced: list[str] = []
    real_fsync = edge.os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(edge.os, "fsync", fsync)
    try:
        for i in range(3):
            store.write([chunk(f"tg:1:{i}")])
            store.flush()
        assert counting.flushes == 0  # the log only: no engine flush (it stalls every thread)
        wal = tmp_path / "posts" / "shard" / "wal"
        assert any(Path(p).parent == wal for p in synced) and str(wal) in synced
        monkeypatch.setattr(edge, "ENGINE_FLUSH_SECONDS", 0.0)
        store.flush()
        assert counting.flushes == 1
    finally:
        store._shard = counting.shard  # type: ignore[assignment]
        store.close()


def test_the_engine_indexes_the_filtered_fields(tmp_path: Path) -> None:
    """The payload indexes exist in the engine and hold the points (what filters look up)."""
    import qdrant_edge as qe

    store = EdgeStore.open(tmp_path, "posts", "test/model", DIM)
    try:
        store.write([chunk("tg:1:1", tags=("a",)), chunk("tg:1:2"),
                     chunk("acme/tg:1:3", tenant="acme", tags=("b", "c"))])
        schema = store.shard.info().payload_schema
        assert {k: v.data_type for k, v in schema.items()} == {
            "channel_id": qe.PayloadSchemaType.Integer, "date": qe.PayloadSchemaType.Integer,
            "tags": qe.PayloadSchemaType.Keyword, "doc_id": qe.PayloadSchemaType.Keyword,
            "tenant": qe.PayloadSchemaType.Keyword}
        assert {k: v.points for k, v in schema.items()} == {
            "channel_id": 3, "date": 3, "tags": 2, "doc_id": 3, "tenant": 3}
        tenant = schema["tenant"].params
        assert isinstance(tenant, qe.KeywordIndexParams) and tenant.is_tenant
    finally:
        store.close()


def test_a_folder_without_metadata_is_recreated_only_when_it_holds_nothing(
        tmp_path: Path) -> None:
    from rag.errors import BackendUnavailable
    from rag.store.edge import META_FILE

    store = EdgeStore.open(tmp_path, "posts", "test/model", DIM)
    store.close()
    (tmp_path / "posts" / META_FILE).unlink()  # as if the creation died before writing it
    store = EdgeStore.open(tmp_path, "posts", "test/model", DIM)  # cleared and created again
    store.write([chunk("tg:1:1")])
    store.close()
    (tmp_path / "posts" / META_FILE).unlink()  # now the points must never be removed
    with pytest.raises(BackendUnavailable) as err:
        EdgeStore.open(tmp_path, "posts", "test/model", DIM)
    assert "holds 1 points" in err.value.message and err.value.hint
    assert (tmp_path / "posts" / "shard").exists()
