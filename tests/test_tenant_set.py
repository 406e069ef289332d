"""Local mode's tenant set: searches of a single-tenant index skip the tenant condition (Python
checks payload filters point by point there), and the moment a second tenant writes, every search
filters again, in this process and after a restart."""

from __future__ import annotations

from dataclasses import asdict

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.search import PostSearcher, SearchFilters
from rag.settings import Settings
from rag.store.qdrant import QdrantStore
from tests.search_corpus import corpus

POSTS = [p for p in corpus() if p.message_id <= 2]  # 6 posts of the default tenant
SECRET = "Секретный отчёт компании Acme о слиянии с конкурентом будет опубликован в понедельник."


def acme_posts() -> list[Post]:
    base = asdict(POSTS[0])
    return [Post(**{**base, "text": SECRET, "message_id": 900, "tenant": "acme"})]


def doc_ids(index: Index, query: str, mode: str) -> list[str]:
    return [hit.id for hit in PostSearcher(index).search(query, k=10, mode=mode)]


def test_single_tenant_index_drops_the_tenant_condition(index: Index) -> None:
    assert index.store.holds_only("default")  # an empty collection holds no other tenant
    PostPipeline(index).ingest(POSTS)
    assert index.store.holds_only("default")
    assert index.store._filter(SearchFilters(tenant="default").to_store()) is None
    # Other conditions stay; a tenant that owns nothing here keeps its condition.
    flt = index.store._filter(SearchFilters(tenant="default", channel_ids=[1]).to_store())
    assert flt is not None and [c.key for c in flt.must] == ["channel_id"]
    assert index.store._filter(SearchFilters(tenant="acme").to_store()) is not None
    assert not index.store.holds_only("acme")


def test_a_second_tenant_brings_the_condition_back(settings: Settings) -> None:
    with Index.open(settings, purpose="pytest tenants") as index:
        PostPipeline(index).ingest(POSTS)
        PostPipeline(index.for_tenant("acme")).ingest(acme_posts())
        assert not index.store.holds_only("default")
        assert not index.store.holds_only("acme")
        for mode in ("dense", "sparse", "hybrid"):
            # Without the condition the acme post would be the top hit in every mode.
            ids = doc_ids(index, "отчёт Acme о слиянии", mode)
            assert not any(i.startswith("acme/") for i in ids), (mode, ids)
            assert doc_ids(index.for_tenant("acme"), "отчёт Acme о слиянии", mode) == [
                "acme/tg:1001:900"], mode
    # The set lives in the collection's metadata: a restart still filters.
    with Index.open(settings, purpose="pytest tenants reopen") as index:
        assert not index.store.holds_only("default")
        ids = doc_ids(index, "отчёт Acme о слиянии", "hybrid")
        assert ids and not any(i.startswith("acme/") for i in ids)


def test_collection_without_the_set_is_scanned_once(settings: Settings) -> None:
    with Index.open(settings, purpose="pytest tenants") as index:
        PostPipeline(index).ingest(POSTS)
        PostPipeline(index.for_tenant("acme")).ingest(acme_posts())
        # As written by a version that did not keep the set.
        index.store.client.update_collection(index.store.collection, metadata={"tenants": None})
    with Index.open(settings, purpose="pytest tenants legacy") as index:
        assert not index.store.holds_only("default")
        meta = index.store.client.get_collection(index.store.collection).config.metadata
        assert meta["tenants"] == ["acme", "default"]


def test_server_mode_never_drops_the_condition(index: Index) -> None:
    PostPipeline(index).ingest(POSTS)
    # track_tenants=False is how Index opens a Qdrant server, where other processes write too.
    store = QdrantStore(index.store.client, index.store.collection, index.store.model_name,
                        index.store.dim)
    assert not store.holds_only("default")
    assert store._filter(SearchFilters(tenant="default").to_store()) is not None
