"""Every search carries its tenant's condition, always: a tenant never sees another's posts — in a
single-tenant index, right after a second tenant's first post, after a restart, and while that
first post is being written (the race a "this index holds one tenant, drop the condition"
shortcut lost: decided before the query ran, it let a concurrent first write through)."""

from __future__ import annotations

import threading
from dataclasses import asdict

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.search import PostSearcher, SearchFilters
from rag.settings import Settings
from rag.store import Chunk, SparseVector
from rag.store.edge import edge_filter
from rag.store.qdrant import QdrantStore
from tests.search_corpus import corpus

POSTS = [p for p in corpus() if p.message_id <= 2]  # 6 posts of the default tenant
SECRET = "Секретный отчёт компании Acme о слиянии с конкурентом будет опубликован в понедельник."


def acme_posts(n: int = 1) -> list[Post]:
    base = asdict(POSTS[0])
    return [Post(**{**base, "text": SECRET, "message_id": 900 + i, "tenant": "acme"})
            for i in range(n)]


def doc_ids(index: Index, query: str, mode: str) -> list[str]:
    return [hit.id for hit in PostSearcher(index).search(query, k=10, mode=mode)]


def test_the_condition_is_in_every_filter_even_with_one_tenant(index: Index) -> None:
    PostPipeline(index).ingest(POSTS)
    flt = edge_filter(SearchFilters(tenant="default").to_store())
    assert flt is not None and [c.key for c in flt.must] == ["tenant"]
    flt = edge_filter(SearchFilters(tenant="default", channel_ids=[1]).to_store())
    assert flt is not None and [c.key for c in flt.must] == ["tenant", "channel_id"]
    server = QdrantStore.__new__(QdrantStore)  # the server's translation, no client needed
    got = server._filter(SearchFilters(tenant="default").to_store())
    assert got is not None and got.must and [c.key for c in got.must] == ["tenant"]
    # A tenant that owns nothing finds nothing, in every mode.
    for mode in ("dense", "sparse", "hybrid"):
        assert doc_ids(index.for_tenant("acme"), "новости", mode) == []


def test_a_second_tenant_stays_apart(settings: Settings) -> None:
    with Index.open(settings, purpose="pytest tenants") as index:
        PostPipeline(index).ingest(POSTS)
        PostPipeline(index.for_tenant("acme")).ingest(acme_posts())
        for mode in ("dense", "sparse", "hybrid"):
            # Without the condition the acme post would be the top hit in every mode.
            ids = doc_ids(index, "отчёт Acme о слиянии", mode)
            assert not any(i.startswith("acme/") for i in ids), (mode, ids)
            assert ids or mode == "sparse"  # no default post has these words
            assert doc_ids(index.for_tenant("acme"), "отчёт Acme о слиянии", mode) == [
                "acme/tg:1001:900"], mode
        assert index.stats()["points"] == len(POSTS)
        assert index.for_tenant("acme").stats()["points"] == 1
    with Index.open(settings, purpose="pytest tenants reopen") as index:
        ids = doc_ids(index, "отчёт Acme о слиянии", "hybrid")
        assert ids and not any(i.startswith("acme/") for i in ids)


def test_no_search_sees_a_first_post_of_another_tenant_while_it_is_written(index: Index) -> None:
    """Searches of the default tenant run while acme's first posts are written, one by one."""
    PostPipeline(index).ingest(POSTS)
    store = index.store
    query = index.embedding.embed_query("отчёт Acme о слиянии")
    sparse = SparseVector([1, 2, 3], [1.0, 1.0, 1.0])
    flt = SearchFilters(tenant="default").to_store()
    leaked: list[str] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            for hit in store.search_dense(query, flt, 50) + store.search_sparse(sparse, flt, 50):
                if hit.payload.get("tenant") != "default":
                    leaked.append(hit.doc_id)

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            doc = f"acme/tg:1001:{900 + i}"
            store.write([Chunk(f"{doc}#0", doc, SECRET, dense=query,
                               sparse=SparseVector([1, 2, 3], [2.0, 2.0, 2.0]),
                               metadata={"tenant": "acme", "channel_id": 1001})])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert leaked == []
    assert store.count(SearchFilters(tenant="acme").to_store()) == 40
    # The acme chunks are the nearest of all (their vector is the query): only the condition
    # keeps them out.
    assert store.search_dense(query, None, 1)[0].payload["tenant"] == "acme"
